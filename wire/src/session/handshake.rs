//! The optional handshake (`docs/protocol.md` §7) and its KMS encryption (README "KMS
//! encryption"). The agent's HandshakeRequest is answered action by action; a `KMSEncryption`
//! action asks the driver for a data key (`Event::DataKeyRequested`, answered through
//! `Session::supply_data_key`), which turns the cipher on; then the agent's encryption
//! challenge is answered and HandshakeComplete awaited within `kms_handshake_timeout`. Input
//! given while the handshake runs is held and sent once it completes.

use std::fmt;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::timers::Timer;
use super::{DataKeyRequest, Event, Session, State};
use crate::crypto::{DataKey, SessionCipher};
use crate::frame::PayloadType;
use crate::payload::{
    self, EncryptionChallenge, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    ProcessedClientAction, action, action_status,
};
use crate::{HandshakeError, InvalidHandshakeRequest, KmsError, KmsProtocolError};

/// What GenerateDataKey returned: the blob the agent decrypts, and the 64-byte plaintext.
pub struct DataKeyGrant {
    pub ciphertext_blob: Bytes,
    pub data_key: DataKey,
}

impl fmt::Debug for DataKeyGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyGrant")
            .field(
                "ciphertext_blob",
                &format_args!("{} bytes", self.ciphertext_blob.len()),
            )
            .field("data_key", &self.data_key)
            .finish()
    }
}

/// Where the KMS part of the handshake stands.
#[derive(Debug)]
pub(super) enum Kms {
    /// The agent did not ask for encryption (so far).
    Off,
    /// Waiting for the driver's GenerateDataKey result; the HandshakeResponse is held.
    AwaitingDataKey {
        key_id: String,
        challenge: Option<String>,
        response: HandshakeResponse,
        action_index: usize,
    },
    /// Our response is out and encryption is on; HandshakeComplete has not come yet.
    AwaitingComplete { key_id: String },
    /// The handshake completed: the session is encrypted.
    On,
}

impl Session {
    /// Answers the agent's `KMSEncryption` action with the driver's GenerateDataKey result
    /// ([`Event::DataKeyRequested`]). On success encryption goes on and the held
    /// HandshakeResponse is queued, in that order (as the reference plugin does), and the
    /// wait for HandshakeComplete is bounded by `kms_handshake_timeout`. A failure ends the
    /// session with it. A result nobody asked for is ignored.
    pub fn supply_data_key(&mut self, now: Instant, result: Result<DataKeyGrant, KmsError>) {
        if self.state == State::Closed {
            return;
        }
        let Kms::AwaitingDataKey {
            key_id,
            challenge,
            mut response,
            action_index,
        } = std::mem::replace(&mut self.kms, Kms::Off)
        else {
            return;
        };
        let grant = match result {
            Ok(grant) => grant,
            Err(error) => {
                self.fail(error.into());
                return;
            }
        };
        let cipher = match SessionCipher::new(&grant.data_key) {
            Ok(cipher) => cipher,
            Err(error) => {
                self.fail(KmsError::Crypto(error).into());
                return;
            }
        };
        if let Some(answer) = response.processed_client_actions.get_mut(action_index) {
            answer.action_result = payload::kms_encryption_result(
                &BASE64.encode(&grant.ciphertext_blob),
                challenge.is_some(),
            );
        }
        self.cipher = Some(cipher);
        self.kms = Kms::AwaitingComplete { key_id };
        self.queue_stream(PayloadType::HandshakeResponse, response.to_bytes());
        self.timers
            .set(Timer::KmsHandshake, now + self.config.kms_handshake_timeout);
    }

    /// The plaintext of an agent payload of type 1, 11 or 12: opened when the session is
    /// encrypted, as is otherwise. A payload that does not open ends the session.
    pub(super) fn incoming_plaintext(&mut self, payload: Bytes) -> Option<Bytes> {
        let result = match (&self.cipher, &self.kms) {
            (Some(cipher), _) => cipher.open(&payload).map_err(KmsError::Crypto),
            (None, Kms::Off) => Ok(payload),
            (None, _) => Err(KmsError::Protocol(KmsProtocolError::OutputBeforeDataKey)),
        };
        match result {
            Ok(plain) => Some(plain),
            Err(error) => {
                self.fail(error.into());
                None
            }
        }
    }

    /// The agent's type 8 challenge: open it with the agent's key, seal the same bytes with
    /// ours (a fresh nonce) and answer with type 9.
    pub(super) fn answer_challenge(&mut self, payload: &[u8]) {
        let Some(cipher) = self.cipher.as_mut() else {
            self.fail(KmsError::Protocol(KmsProtocolError::ChallengeBeforeDataKey).into());
            return;
        };
        let answer = EncryptionChallenge::from_payload(payload)
            .map_err(|error| {
                KmsError::Protocol(KmsProtocolError::ChallengeJson {
                    detail: error.to_string(),
                })
            })
            .and_then(|challenge| {
                BASE64
                    .decode(challenge.challenge.as_bytes())
                    .map_err(|_| KmsError::Protocol(KmsProtocolError::ChallengeNotBase64))
            })
            .and_then(|sealed| cipher.open(&sealed).map_err(KmsError::Crypto))
            .and_then(|plain| cipher.seal(&plain).map_err(KmsError::Crypto));
        match answer {
            Ok(sealed) => {
                let response = EncryptionChallenge {
                    challenge: BASE64.encode(&sealed),
                };
                self.queue_stream(PayloadType::EncChallengeResponse, response.to_bytes());
            }
            Err(error) => self.fail(error.into()),
        }
    }

    pub(super) fn handle_handshake_complete(&mut self, payload: &[u8]) {
        match std::mem::replace(&mut self.kms, Kms::Off) {
            Kms::AwaitingDataKey { .. } => {
                self.fail(KmsError::Protocol(KmsProtocolError::CompleteBeforeAnswer).into());
                return;
            }
            Kms::AwaitingComplete { .. } | Kms::On => {
                self.kms = Kms::On;
                self.timers.stop(Timer::KmsHandshake);
                if let Some(size) = self.last_size {
                    self.queue_stream(PayloadType::Size, size.to_bytes());
                }
            }
            Kms::Off => {}
        }
        let complete = HandshakeComplete::from_payload(payload).unwrap_or_default();
        self.handshake_in_progress = false;
        self.events.push_back(Event::HandshakeComplete {
            customer_message: complete.customer_message,
        });
        self.held_input_bytes = 0;
        while let Some(data) = self.held_input.pop_front() {
            if self.queue_input(data).is_err() {
                break;
            }
        }
    }

    /// The key of a KMS handshake that has started and not completed.
    pub(super) fn kms_handshake_key(&self) -> Option<&str> {
        match &self.kms {
            Kms::AwaitingDataKey { key_id, .. } | Kms::AwaitingComplete { key_id } => Some(key_id),
            Kms::Off | Kms::On => None,
        }
    }

    pub(super) fn handle_handshake_request(&mut self, payload: &[u8]) {
        let request = match HandshakeRequest::from_payload(payload) {
            Ok(request) => request,
            Err(error) => {
                let invalid = InvalidHandshakeRequest::Json {
                    detail: error.to_string(),
                };
                self.fail(HandshakeError::InvalidRequest(invalid).into());
                return;
            }
        };
        self.handshake_seen = true;
        self.handshake_in_progress = true;
        let mut kms_request = None;
        let mut processed = Vec::with_capacity(request.requested_client_actions.len());
        for (index, requested) in request.requested_client_actions.iter().enumerate() {
            let (status, error) = match requested.action_type.as_str() {
                action::SESSION_TYPE => {
                    if let Some(session_type) = requested.session_type_name() {
                        self.events
                            .push_back(Event::SessionType(session_type.to_owned()));
                    }
                    (action_status::SUCCESS, String::new())
                }
                action::KMS_ENCRYPTION => {
                    let invalid = match requested.kms_parameters() {
                        Some(parameters) if kms_request.is_none() => {
                            kms_request = Some((index, parameters));
                            None
                        }
                        Some(_) => Some(InvalidHandshakeRequest::KmsTwice),
                        None => Some(InvalidHandshakeRequest::NoKmsKeyId),
                    };
                    if let Some(invalid) = invalid {
                        self.fail(HandshakeError::InvalidRequest(invalid).into());
                        return;
                    }
                    (action_status::SUCCESS, String::new())
                }
                other => (
                    action_status::UNSUPPORTED,
                    format!("Unsupported action {other}"),
                ),
            };
            processed.push(ProcessedClientAction {
                action_type: requested.action_type.clone(),
                action_status: status,
                action_result: serde_json::Value::Null,
                error,
            });
        }
        let response = HandshakeResponse {
            client_version: self.config.client_version.clone(),
            processed_client_actions: processed,
            errors: Vec::new(),
        };
        if let Some((action_index, parameters)) = kms_request {
            // The response waits for the data key (supply_data_key).
            self.events
                .push_back(Event::DataKeyRequested(DataKeyRequest {
                    key_id: parameters.key_id.clone(),
                    challenge: parameters.challenge.clone(),
                }));
            self.kms = Kms::AwaitingDataKey {
                key_id: parameters.key_id,
                challenge: parameters.challenge,
                response,
                action_index,
            };
            return;
        }
        self.queue_stream(PayloadType::HandshakeResponse, response.to_bytes());
        // A size sent before the request was discarded by the agent; send it again after.
        if let Some(size) = self.last_size {
            self.queue_stream(PayloadType::Size, size.to_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, MessageType};
    use crate::payload::RequestedClientAction;
    use crate::session::testing::*;
    use crate::session::*;
    use crate::{Closure, TransportError};
    use uuid::Uuid;

    #[test]
    fn handshake_answers_session_type_and_resends_an_early_size() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_resize(100, 30).expect("open");
        drain(&mut session, now);
        session.handle_frame(
            now,
            handshake_request(vec![RequestedClientAction::session_type(
                "NonInteractiveCommands",
            )]),
        );
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![0]);
        let stream: Vec<_> = frames
            .iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .collect();
        assert_eq!(stream.len(), 2);
        assert_eq!(stream[0].payload_type, PayloadType::HandshakeResponse);
        assert_eq!(stream[0].sequence_number, 1);
        let response = HandshakeResponse::from_payload(&stream[0].payload).expect("json");
        assert_eq!(response.processed_client_actions.len(), 1);
        assert_eq!(
            response.processed_client_actions[0].action_status,
            action_status::SUCCESS
        );
        assert_eq!(stream[1].payload_type, PayloadType::Size);
        assert_eq!(stream[1].sequence_number, 2);

        let complete = HandshakeComplete {
            handshake_time_to_complete: 5,
            customer_message: "hello".to_owned(),
        };
        let frame = Frame::stream(
            MessageType::OutputStreamData,
            1,
            PayloadType::HandshakeComplete,
            complete.to_bytes(),
            DATE,
            Uuid::from_u128(2),
        );
        session.handle_frame(now, frame.to_bytes());
        assert_eq!(
            events(&mut session),
            vec![
                Event::SessionType("NonInteractiveCommands".to_owned()),
                Event::HandshakeComplete {
                    customer_message: "hello".to_owned()
                },
            ]
        );
    }

    const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/k";
    const AGENT_KEY: [u8; 32] = [0x11; 32];
    const CLIENT_KEY: [u8; 32] = [0x22; 32];

    /// The agent side of the cipher, written here with aws-lc-rs directly (not through
    /// `SessionCipher`): the nonce is the agent's counter, as the real agent does.
    fn agent_seal(key: &[u8; 32], counter: u64, plain: &[u8]) -> Bytes {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("key"));
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .expect("seal");
        Bytes::from([&nonce[..], &body].concat())
    }

    fn agent_open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("key"));
        let (nonce, body) = sealed.split_at(12);
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key.open_in_place(nonce, Aad::empty(), &mut body).ok()?;
        Some(plain.to_vec())
    }

    fn grant() -> DataKeyGrant {
        DataKeyGrant {
            ciphertext_blob: Bytes::from_static(b"opaque-blob"),
            data_key: DataKey::from_slice(&[AGENT_KEY, CLIENT_KEY].concat()).expect("64"),
        }
    }

    fn agent_stream(seq: i64, payload_type: PayloadType, payload: Bytes) -> Bytes {
        Frame::stream(
            MessageType::OutputStreamData,
            seq,
            payload_type,
            payload,
            DATE,
            Uuid::from_u128(seq as u128 + 100),
        )
        .to_bytes()
    }

    fn kms_request(challenge: Option<&str>) -> Bytes {
        handshake_request(vec![
            RequestedClientAction::session_type("InteractiveCommands"),
            RequestedClientAction::kms_encryption(KEY_ARN, challenge),
        ])
    }

    fn challenge_frame(seq: i64, plain: &[u8]) -> Bytes {
        let challenge = EncryptionChallenge {
            challenge: BASE64.encode(agent_seal(&AGENT_KEY, 7, plain)),
        };
        agent_stream(seq, PayloadType::EncChallengeRequest, challenge.to_bytes())
    }

    fn complete_frame(seq: i64) -> Bytes {
        let complete = HandshakeComplete {
            handshake_time_to_complete: 1,
            customer_message: "This session is encrypted using AWS KMS.".to_owned(),
        };
        agent_stream(seq, PayloadType::HandshakeComplete, complete.to_bytes())
    }

    /// A session through the whole KMS handshake (no challenge string): returns it with the
    /// frames it sent.
    fn encrypted_session(now: Instant) -> (Session, Vec<Frame>) {
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        session.handle_frame(now, challenge_frame(1, b"challenge"));
        session.handle_frame(now, complete_frame(2));
        let sent = drain(&mut session, now);
        events(&mut session);
        (session, sent)
    }

    #[test]
    fn a_kms_action_asks_for_a_data_key_and_holds_the_response() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(Some("Y2hhbGxlbmdl")));
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![0]);
        assert!(
            frames
                .iter()
                .all(|f| f.message_type == MessageType::Acknowledge),
            "no response before the data key"
        );
        assert_eq!(
            events(&mut session),
            vec![
                Event::SessionType("InteractiveCommands".to_owned()),
                Event::DataKeyRequested(DataKeyRequest {
                    key_id: KEY_ARN.to_owned(),
                    challenge: Some("Y2hhbGxlbmdl".to_owned()),
                }),
            ]
        );
        assert!(!session.is_encrypted());
        assert_eq!(session.poll_timeout(), None, "no handshake timer yet");
    }

    #[test]
    fn the_response_carries_the_blob_and_acknowledges_a_challenge() {
        for challenge in [Some("Y2hhbGxlbmdl"), None] {
            let now = Instant::now();
            let mut session = session(now);
            session.handle_frame(now, kms_request(challenge));
            drain(&mut session, now);
            session.supply_data_key(now, Ok(grant()));
            assert!(
                session.is_encrypted(),
                "encryption is on before the response leaves"
            );
            let frames = drain(&mut session, now);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].payload_type, PayloadType::HandshakeResponse);
            assert_eq!(frames[0].sequence_number, 0);
            let response = HandshakeResponse::from_payload(&frames[0].payload).expect("json");
            let statuses: Vec<_> = response
                .processed_client_actions
                .iter()
                .map(|a| (a.action_type.as_str(), a.action_status))
                .collect();
            assert_eq!(statuses, vec![("SessionType", 1), ("KMSEncryption", 1)]);
            let result = &response.processed_client_actions[1].action_result;
            assert_eq!(result["KMSCipherTextKey"], BASE64.encode(b"opaque-blob"));
            assert!(result["KMSCipherTextHash"].is_null());
            let expected_ack = challenge.map(|_| serde_json::Value::Bool(true));
            assert_eq!(
                result.get("ChallengeAcknowledgement").cloned(),
                expected_ack
            );
            assert_eq!(
                session.timers.get(Timer::KmsHandshake),
                Some(now + session.config().kms_handshake_timeout)
            );
        }
    }

    #[test]
    fn the_challenge_is_opened_with_the_agent_key_and_sealed_again_with_ours() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        drain(&mut session, now);
        session.handle_frame(now, challenge_frame(1, b"sixty-four random bytes"));
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![1]);
        let answer = frames
            .iter()
            .find(|f| f.payload_type == PayloadType::EncChallengeResponse)
            .expect("type 9 answer");
        assert_eq!(answer.sequence_number, 1);
        let answer = EncryptionChallenge::from_payload(&answer.payload).expect("json");
        let sealed = BASE64.decode(answer.challenge).expect("base64");
        assert_eq!(
            agent_open(&CLIENT_KEY, &sealed).as_deref(),
            Some(&b"sixty-four random bytes"[..])
        );
        assert_eq!(agent_open(&AGENT_KEY, &sealed), None, "not the agent's key");
        assert_ne!(
            &sealed[..12],
            &agent_seal(&AGENT_KEY, 7, b"")[..12],
            "a fresh nonce"
        );
    }

    #[test]
    fn only_type_1_input_is_sealed_and_types_1_11_12_are_opened() {
        let now = Instant::now();
        let (mut session, sent) = encrypted_session(now);
        // 0 response, 1 challenge answer; HandshakeComplete (re)sends nothing without a size.
        let stream: Vec<_> = sent
            .iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .map(|f| (f.sequence_number, f.payload_type))
            .collect();
        assert_eq!(
            stream,
            vec![
                (0, PayloadType::HandshakeResponse),
                (1, PayloadType::EncChallengeResponse)
            ]
        );
        session.send_resize(100, 30).expect("open");
        session
            .send_input(Bytes::from_static(b"ls\n"))
            .expect("open");
        let frames = drain(&mut session, now);
        assert_eq!(frames[0].payload_type, PayloadType::Size);
        assert_eq!(frames[0].payload.as_ref(), br#"{"cols":100,"rows":30}"#);
        assert_eq!(frames[1].payload_type, PayloadType::Output);
        assert_eq!(frames[1].sequence_number, 3);
        assert_eq!(frames[1].payload.len(), 3 + 28);
        assert_eq!(
            agent_open(&CLIENT_KEY, &frames[1].payload).as_deref(),
            Some(&b"ls\n"[..])
        );

        session.handle_frame(
            now,
            agent_stream(3, PayloadType::Output, agent_seal(&AGENT_KEY, 8, b"out")),
        );
        session.handle_frame(
            now,
            agent_stream(4, PayloadType::StdErr, agent_seal(&AGENT_KEY, 9, b"err")),
        );
        session.handle_frame(
            now,
            agent_stream(
                5,
                PayloadType::ExitCode,
                agent_seal(&AGENT_KEY, 10, b"EXIT_CODE: 3"),
            ),
        );
        assert_eq!(
            events(&mut session),
            vec![
                Event::Output(Bytes::from_static(b"out")),
                Event::Stderr(Bytes::from_static(b"err")),
                Event::ExitCode(3),
            ]
        );
    }

    #[test]
    fn input_chunks_are_sealed_each_with_its_own_nonce() {
        let now = Instant::now();
        let (mut session, _) = encrypted_session(now);
        session
            .send_input(Bytes::from(vec![b'x'; 3000]))
            .expect("open");
        let frames = drain(&mut session, now);
        let nonces: std::collections::HashSet<_> =
            frames.iter().map(|f| f.payload[..12].to_vec()).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(nonces.len(), 3);
        let plain: Vec<u8> = frames
            .iter()
            .flat_map(|f| agent_open(&CLIENT_KEY, &f.payload).expect("opens"))
            .collect();
        assert_eq!(plain, vec![b'x'; 3000]);
    }

    #[test]
    fn a_retransmission_resends_the_same_sealed_bytes() {
        let now = Instant::now();
        let (mut session, _) = encrypted_session(now);
        session
            .send_input(Bytes::from_static(b"secret"))
            .expect("open");
        let first = drain(&mut session, now);
        let deadline = session.poll_timeout().expect("retransmission timer");
        session.handle_timeout(deadline);
        let again = drain(&mut session, deadline);
        let input = |frames: &[Frame]| -> Vec<Frame> {
            frames
                .iter()
                .filter(|f| f.payload_type == PayloadType::Output)
                .cloned()
                .collect()
        };
        assert_eq!(input(&again), input(&first), "same message, same nonce");
        // A reconnect resends it the same way and keeps the keys and the nonce counter.
        session.reconnect(deadline, "tok-2").expect("reconnect");
        let resent = drain(&mut session, deadline);
        assert_eq!(input(&resent), input(&first));
        session
            .send_input(Bytes::from_static(b"next"))
            .expect("open");
        let next = drain(&mut session, deadline);
        let next = input(&next);
        assert_ne!(next[0].payload[..12], first[0].payload[..12]);
        assert_eq!(
            agent_open(&CLIENT_KEY, &next[0].payload).as_deref(),
            Some(&b"next"[..])
        );
        session.handle_frame(
            deadline,
            agent_stream(3, PayloadType::Output, agent_seal(&AGENT_KEY, 8, b"o")),
        );
        assert_eq!(
            events(&mut session),
            vec![Event::Output(Bytes::from_static(b"o"))]
        );
    }

    #[test]
    fn input_during_the_handshake_waits_for_it_and_is_then_sealed() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session
            .send_input(Bytes::from_static(b"early"))
            .expect("open");
        session.send_resize(90, 20).expect("open");
        session.supply_data_key(now, Ok(grant()));
        session.handle_frame(now, challenge_frame(1, b"c"));
        let before: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .map(|f| f.payload_type)
            .collect();
        assert_eq!(
            before,
            vec![
                PayloadType::HandshakeResponse,
                PayloadType::EncChallengeResponse
            ]
        );
        session.handle_frame(now, complete_frame(2));
        let after: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .collect();
        assert_eq!(after.len(), 2);
        assert_eq!(
            (after[0].sequence_number, after[0].payload_type),
            (2, PayloadType::Size)
        );
        assert_eq!(
            (after[1].sequence_number, after[1].payload_type),
            (3, PayloadType::Output)
        );
        assert_eq!(
            agent_open(&CLIENT_KEY, &after[1].payload).as_deref(),
            Some(&b"early"[..])
        );
        assert!(events(&mut session).contains(&Event::HandshakeComplete {
            customer_message: "This session is encrypted using AWS KMS.".to_owned()
        }));
        assert_eq!(
            session.poll_timeout(),
            session.timers.get(Timer::Retransmit)
        );
    }

    #[test]
    fn input_typed_before_the_handshake_request_is_sent_again_after_it() {
        // Keys typed before the agent's first message go out at once (the agent may never
        // handshake); the agent discards them while it handshakes, so they go again, sealed.
        let now = Instant::now();
        let mut session = session(now);
        session
            .send_input(Bytes::from_static(b"typed ahead"))
            .expect("open");
        let early: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.payload_type == PayloadType::Output)
            .collect();
        assert_eq!(early.len(), 1);
        assert_eq!(&early[0].payload[..], b"typed ahead", "no keys yet: plain");
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        session.handle_frame(now, challenge_frame(1, b"c"));
        session.handle_frame(now, complete_frame(2));
        let resent: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| {
                f.message_type == MessageType::InputStreamData
                    && f.payload_type == PayloadType::Output
            })
            .collect();
        assert_eq!(resent.len(), 1, "sent again once, after the handshake");
        assert!(resent[0].sequence_number > early[0].sequence_number);
        assert_eq!(
            agent_open(&CLIENT_KEY, &resent[0].payload).as_deref(),
            Some(&b"typed ahead"[..])
        );
    }

    #[test]
    fn input_typed_ahead_of_a_session_without_handshake_is_sent_once() {
        let now = Instant::now();
        let mut session = session(now);
        session
            .send_input(Bytes::from_static(b"ls\n"))
            .expect("open");
        let first = drain(&mut session, now);
        session.handle_frame(
            now,
            agent_stream(0, PayloadType::Output, Bytes::from_static(b"$ ")),
        );
        let later: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.payload_type == PayloadType::Output)
            .collect();
        assert!(later.is_empty(), "nothing sent twice: {later:?}");
        assert!(
            first
                .iter()
                .any(|f| f.payload_type == PayloadType::Output && &f.payload[..] == b"ls\n")
        );
    }

    #[test]
    fn a_kms_failure_ends_the_session_with_it() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        drain(&mut session, now);
        let denied = KmsError::GenerateDataKeyDenied {
            key_id: KEY_ARN.to_owned(),
            aws: "(AccessDeniedException)".to_owned(),
        };
        session.supply_data_key(now, Err(denied.clone()));
        assert!(events(&mut session).contains(&Event::Lost {
            reason: denied.clone().into()
        }));
        assert_eq!(session.error(), Some(&ChannelError::Kms(denied)));
        // A late second answer changes nothing.
        session.supply_data_key(now, Ok(grant()));
        assert!(!session.is_encrypted());
    }

    #[test]
    fn no_handshake_complete_in_time_fails_with_the_likely_causes() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        drain(&mut session, now);
        let deadline = now + session.config().kms_handshake_timeout;
        // Acks keep the retransmission timer quiet; only the handshake bound is left.
        session.handle_frame(
            now,
            ack_of(&Frame::stream(
                MessageType::InputStreamData,
                0,
                PayloadType::HandshakeResponse,
                Bytes::from_static(b"x"),
                DATE,
                Uuid::from_u128(1),
            )),
        );
        session.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(session.error(), None);
        session.handle_timeout(deadline);
        let error = session.error().cloned().expect("failed");
        assert!(matches!(
            error,
            ChannelError::Kms(KmsError::HandshakeTimeout { .. })
        ));
        let text = error.to_string();
        assert!(
            text.contains("kms:Decrypt") && text.contains("key policy"),
            "{text}"
        );
        assert!(text.contains("challenge"), "{text}");
    }

    #[test]
    fn the_session_ending_during_the_handshake_names_the_task_role() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        let closed = ChannelClosed {
            output: "KMS decryption failed".to_owned(),
            ..ChannelClosed::default()
        };
        session.handle_frame(now, control(MessageType::ChannelClosed, closed.to_bytes()));
        let error = session.error().cloned().expect("failed");
        assert!(matches!(
            error,
            ChannelError::Kms(KmsError::AgentEndedHandshake { .. })
        ));
        let text = error.to_string();
        assert!(
            text.contains("kms:Decrypt") && text.contains(KEY_ARN),
            "{text}"
        );
        assert!(text.contains("KMS decryption failed"), "{text}");

        // A dropped socket at that point too, even when the session could be resumed.
        let mut config = config();
        config.resumable = true;
        let mut session = session_with(config, now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        session.link_lost(ChannelError::Transport(TransportError::ClosedMidway(
            Closure::Dropped,
        )));
        assert!(matches!(
            session.error(),
            Some(ChannelError::Kms(KmsError::AgentEndedHandshake { .. }))
        ));
    }

    #[test]
    fn forged_short_or_unencrypted_payloads_are_protocol_errors() {
        let now = Instant::now();
        for bad in [
            Bytes::from_static(b"short"),
            agent_seal(&CLIENT_KEY, 8, b"wrong key"),
            {
                let mut flipped = agent_seal(&AGENT_KEY, 8, b"flipped").to_vec();
                flipped[14] ^= 1;
                Bytes::from(flipped)
            },
        ] {
            let (mut session, _) = encrypted_session(now);
            session.handle_frame(now, agent_stream(3, PayloadType::Output, bad));
            assert!(
                matches!(
                    session.error(),
                    Some(ChannelError::Kms(KmsError::Crypto(_)))
                ),
                "{:?}",
                session.error()
            );
            assert!(
                !events(&mut session)
                    .iter()
                    .any(|e| matches!(e, Event::Output(_)))
            );
        }
        // A challenge before any key, and unreadable challenges.
        let mut session = session(now);
        session.handle_frame(now, challenge_frame(0, b"c"));
        assert!(matches!(
            session.error(),
            Some(ChannelError::Kms(KmsError::Protocol(
                KmsProtocolError::ChallengeBeforeDataKey
            )))
        ));
        for payload in [
            &br#"{"Challenge":"%%%"}"#[..],
            b"not json",
            br#"{"Challenge":"AAAA"}"#,
        ] {
            let mut session = self::session(now);
            session.handle_frame(now, kms_request(None));
            session.supply_data_key(now, Ok(grant()));
            session.handle_frame(
                now,
                agent_stream(
                    1,
                    PayloadType::EncChallengeRequest,
                    Bytes::copy_from_slice(payload),
                ),
            );
            assert!(session.error().is_some(), "{payload:?}");
        }
    }

    #[test]
    fn a_kms_action_without_a_key_id_is_refused() {
        let now = Instant::now();
        let mut session = session(now);
        let action = RequestedClientAction {
            action_type: action::KMS_ENCRYPTION.to_owned(),
            action_parameters: serde_json::json!({"Challenge": "x"}),
        };
        session.handle_frame(now, handshake_request(vec![action]));
        assert!(matches!(
            session.error(),
            Some(ChannelError::Handshake(HandshakeError::InvalidRequest(
                InvalidHandshakeRequest::NoKmsKeyId
            )))
        ));
    }
}
