//! The agent's half of a KMS-encrypted session, written from the protocol description alone
//! (it shares no crypto with the client): the KMSEncryption action it requests, reading the
//! client's answer, the Decrypt context, the key split, the encryption challenge, and the
//! ciphers of both directions.
//!
//! Key split of the 64-byte data key: bytes 0-31 encrypt what the agent sends, bytes 32-63
//! decrypt what the client sends. Every encrypted payload is `nonce(12) ‖ ciphertext ‖ tag(16)`
//! (AES-256-GCM, no additional data). The agent's nonces count up from a random start, one per
//! message. Sans-IO apart from random numbers: no socket, no clock.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ecs_exec_wire::payload::{HandshakeResponse, RequestedClientAction, action};
use serde_json::json;

use super::wire::PayloadType;
use crate::kms::{EncryptionContext, KmsError};

/// What HandshakeComplete tells the user of an encrypted session.
pub const CUSTOMER_MESSAGE: &str = "This session is encrypted using AWS KMS.";
/// Length of the data key the client must ask KMS for.
pub const DATA_KEY_BYTES: usize = 64;
/// Random bytes behind the handshake's `Challenge` string.
const CHALLENGE_STRING_BYTES: usize = 16;
/// Random bytes of the type 8 encryption challenge.
const CHALLENGE_BYTES: usize = 64;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Nonces are 96-bit counters.
const NONCE_MASK: u128 = (1 << 96) - 1;

/// Encryption-context names of an SSM session's data key.
pub const CONTEXT_SESSION_ID: &str = "aws:ssm:SessionId";
/// See [`CONTEXT_SESSION_ID`].
pub const CONTEXT_TARGET_ID: &str = "aws:ssm:TargetId";
/// See [`CONTEXT_SESSION_ID`]; only when the client acknowledged the challenge.
pub const CONTEXT_RANDOM_CHALLENGE: &str = "aws:ssm:RandomChallenge";

/// Why the agent ends a session during the KMS handshake. The text goes to the client as the
/// `channel_closed` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The client answered an action with a status other than Success.
    #[error("Handshake failed: the client could not process action {action}: {error}")]
    ActionRefused {
        /// The action type.
        action: String,
        /// The client's error text.
        error: String,
    },
    /// The HandshakeResponse does not parse.
    #[error("Handshake failed: the HandshakeResponse is malformed")]
    MalformedResponse,
    /// No KMSEncryption result, or no usable `KMSCipherTextKey` in it.
    #[error("Handshake failed: the client sent no KMSCipherTextKey")]
    NoCiphertextKey,
    /// The agent requires challenge acknowledgement and the client did not give it.
    #[error(
        "Handshake failed: client does not support required encryption context random challenge"
    )]
    ChallengeNotAcknowledged,
    /// The agent's KMS Decrypt failed (task role permissions, key policy, context).
    #[error(
        "Fetching data key failed: Unable to retrieve data key, Error when decrypting data key {code}: {message}"
    )]
    Decrypt {
        /// The KMS error code.
        code: &'static str,
        /// The KMS error message.
        message: String,
    },
    /// The decrypted data key is not 64 bytes.
    #[error("Handshake failed: the data key is {0} bytes long, expected 64")]
    DataKeyLength(usize),
    /// No HandshakeResponse, or no correct challenge answer, in time.
    #[error(
        "Handshake timed out. Please ensure that you have the latest version of the session manager plugin."
    )]
    TimedOut,
}

impl From<KmsError> for HandshakeFailure {
    fn from(error: KmsError) -> Self {
        HandshakeFailure::Decrypt {
            code: error.aws_code(),
            message: error.to_string(),
        }
    }
}

/// A fresh `Challenge` string for the KMSEncryption action.
pub fn new_challenge_string() -> String {
    let mut bytes = [0u8; CHALLENGE_STRING_BYTES];
    rand::fill(&mut bytes);
    BASE64.encode(bytes)
}

/// The KMSEncryption action of the HandshakeRequest.
pub fn request_action(key_id: &str, challenge: Option<&str>) -> RequestedClientAction {
    let mut parameters = json!({"KMSKeyId": key_id});
    if let Some(challenge) = challenge {
        parameters["Challenge"] = json!(challenge);
    }
    RequestedClientAction {
        action_type: action::KMS_ENCRYPTION.to_string(),
        action_parameters: parameters,
    }
}

/// What the client answered to KMSEncryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsAnswer {
    /// The CiphertextBlob from the client's GenerateDataKey.
    pub ciphertext_key: Vec<u8>,
    /// Whether it put the challenge into the encryption context.
    pub acknowledged: bool,
}

/// Reads the HandshakeResponse of a KMS session: every action must have succeeded, and the
/// KMSEncryption one must carry the ciphertext key.
pub fn read_response(payload: &[u8]) -> Result<KmsAnswer, HandshakeFailure> {
    let response = HandshakeResponse::from_payload(payload)
        .map_err(|_| HandshakeFailure::MalformedResponse)?;
    if let Some(refused) = response
        .processed_client_actions
        .iter()
        .find(|a| a.action_status != 1)
    {
        return Err(HandshakeFailure::ActionRefused {
            action: refused.action_type.clone(),
            error: refused.error.clone(),
        });
    }
    let result = response
        .processed_client_actions
        .iter()
        .find(|a| a.action_type == action::KMS_ENCRYPTION)
        .map(|a| &a.action_result)
        .ok_or(HandshakeFailure::NoCiphertextKey)?;
    let ciphertext_key = result
        .get("KMSCipherTextKey")
        .and_then(|v| v.as_str())
        .and_then(|text| BASE64.decode(text).ok())
        .filter(|key| !key.is_empty())
        .ok_or(HandshakeFailure::NoCiphertextKey)?;
    let acknowledged = result
        .get("ChallengeAcknowledgement")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Ok(KmsAnswer {
        ciphertext_key,
        acknowledged,
    })
}

/// The encryption context the agent decrypts the data key with. The challenge is part of it
/// only when one was sent and the client acknowledged it.
pub fn decrypt_context(
    session_id: &str,
    target: &str,
    challenge: Option<&str>,
    acknowledged: bool,
) -> EncryptionContext {
    let mut context = EncryptionContext::new();
    context.insert(CONTEXT_SESSION_ID.to_string(), session_id.to_string());
    context.insert(CONTEXT_TARGET_ID.to_string(), target.to_string());
    if let (Some(challenge), true) = (challenge, acknowledged) {
        context.insert(CONTEXT_RANDOM_CHALLENGE.to_string(), challenge.to_string());
    }
    context
}

/// Splits a 64-byte data key into the agent's output cipher (bytes 0-31) and input cipher
/// (bytes 32-63).
pub fn split_data_key(plaintext: &[u8]) -> Result<(OutputCipher, InputCipher), HandshakeFailure> {
    let (Some(agent_key), Some(client_key), DATA_KEY_BYTES) =
        (plaintext.get(..32), plaintext.get(32..64), plaintext.len())
    else {
        return Err(HandshakeFailure::DataKeyLength(plaintext.len()));
    };
    let agent = Aes256Gcm::new_from_slice(agent_key)
        .map_err(|_| HandshakeFailure::DataKeyLength(plaintext.len()))?;
    let client = Aes256Gcm::new_from_slice(client_key)
        .map_err(|_| HandshakeFailure::DataKeyLength(plaintext.len()))?;
    let mut start = [0u8; 16];
    rand::fill(&mut start);
    Ok((
        OutputCipher {
            cipher: agent,
            next_nonce: u128::from_be_bytes(start) & NONCE_MASK,
        },
        InputCipher {
            cipher: client,
            challenge: None,
        },
    ))
}

/// Encrypts what the agent sends: a fresh counter nonce per message, never reused.
pub struct OutputCipher {
    cipher: Aes256Gcm,
    next_nonce: u128,
}

impl std::fmt::Debug for OutputCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputCipher(<key>)")
    }
}

impl OutputCipher {
    /// `nonce ‖ ciphertext ‖ tag` of `plaintext`.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let counter = self.next_nonce;
        self.next_nonce = counter.wrapping_add(1) & NONCE_MASK;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&counter.to_be_bytes()[16 - NONCE_LEN..]);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), plaintext)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Whether this payload type is encrypted when the agent sends it (1, 11, 12).
    pub fn covers(payload_type: PayloadType) -> bool {
        matches!(
            payload_type,
            PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode
        )
    }

    /// The type 8 payload: `{"Challenge": base64(seal(64 random bytes))}`. The input side
    /// remembers the bytes to check the answer.
    pub fn challenge_request(&mut self, input: &mut InputCipher) -> Vec<u8> {
        let mut challenge = [0u8; CHALLENGE_BYTES];
        rand::fill(&mut challenge);
        let sealed = self.seal(&challenge);
        input.challenge = Some(challenge);
        serde_json::to_vec(&json!({"Challenge": BASE64.encode(sealed)})).unwrap_or_default()
    }
}

/// Decrypts what the client sends and checks its challenge answer.
pub struct InputCipher {
    cipher: Aes256Gcm,
    challenge: Option<[u8; CHALLENGE_BYTES]>,
}

impl std::fmt::Debug for InputCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputCipher(<key>)")
    }
}

impl InputCipher {
    /// The plaintext of `nonce ‖ ciphertext ‖ tag`, if it authenticates.
    pub fn open(&self, data: &[u8]) -> Option<Vec<u8>> {
        let (nonce, sealed) = data.split_first_chunk::<NONCE_LEN>()?;
        if sealed.len() < TAG_LEN {
            return None;
        }
        self.cipher.decrypt(&Nonce::from(*nonce), sealed).ok()
    }

    /// Whether a type 9 payload answers the challenge: it decrypts to the same 64 bytes.
    pub fn answers_challenge(&self, payload: &[u8]) -> bool {
        let Some(expected) = &self.challenge else {
            return false;
        };
        let answer = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("Challenge")?.as_str().map(str::to_string))
            .and_then(|text| BASE64.decode(text).ok())
            .and_then(|sealed| self.open(&sealed));
        answer.is_some_and(|plain| crate::sigv4::constant_time_eq(&plain, expected))
    }
}

/// Why an input frame was refused (neither acked nor used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Encrypted input that does not decrypt (or arrives before the keys exist).
    Undecryptable,
    /// A challenge answer that is wrong or does not decrypt.
    WrongChallenge,
}

/// What the agent's channel lets through, by session state.
#[derive(Debug, Default)]
pub enum InputGate {
    /// No encryption: everything passes.
    #[default]
    Open,
    /// A KMS session before its keys exist: input passes (to be discarded by the handshake
    /// phase), a challenge answer cannot be read yet.
    AwaitingKeys,
    /// A KMS session with keys: input is decrypted, challenge answers are checked.
    Encrypted(Box<InputCipher>),
}

impl InputGate {
    /// The payload to use for an input frame of `payload_type`, or why it is refused.
    pub fn admit(&self, payload_type: PayloadType, payload: &Bytes) -> Result<Bytes, Refusal> {
        match (self, payload_type) {
            (InputGate::Open, _) => Ok(payload.clone()),
            // Before the HandshakeResponse the agent has no key, so input is read as plain
            // text; the handshake phase then discards it, acked (docs/protocol.md §8.2).
            (InputGate::AwaitingKeys, PayloadType::Output) => Ok(payload.clone()),
            (InputGate::AwaitingKeys, PayloadType::EncChallengeResponse) => {
                Err(Refusal::WrongChallenge)
            }
            (InputGate::Encrypted(cipher), PayloadType::Output) => cipher
                .open(payload)
                .map(Bytes::from)
                .ok_or(Refusal::Undecryptable),
            (InputGate::Encrypted(cipher), PayloadType::EncChallengeResponse) => {
                if cipher.answers_challenge(payload) {
                    Ok(payload.clone())
                } else {
                    Err(Refusal::WrongChallenge)
                }
            }
            // Size, handshake and flag messages are never encrypted.
            (_, _) => Ok(payload.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecs_exec_wire::payload::ProcessedClientAction;

    /// The client side of the split, done by hand: the client decrypts with bytes 0-31 and
    /// encrypts with bytes 32-63.
    fn client_ciphers(data_key: &[u8]) -> (Aes256Gcm, Aes256Gcm) {
        (
            Aes256Gcm::new_from_slice(&data_key[..32]).unwrap(),
            Aes256Gcm::new_from_slice(&data_key[32..]).unwrap(),
        )
    }

    fn client_seal(cipher: &Aes256Gcm, nonce: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
        let mut out = nonce.to_vec();
        out.extend(cipher.encrypt(&Nonce::from(nonce), plaintext).unwrap());
        out
    }

    fn client_open(cipher: &Aes256Gcm, data: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = data[..12].try_into().unwrap();
        cipher.decrypt(&Nonce::from(nonce), &data[12..]).unwrap()
    }

    fn data_key() -> Vec<u8> {
        (0u8..64).collect()
    }

    #[test]
    fn the_key_split_has_the_agent_sending_with_the_first_half() {
        let key = data_key();
        let (mut output, input) = split_data_key(&key).unwrap();
        let (client_decrypt, client_encrypt) = client_ciphers(&key);
        let sealed = output.seal(b"from the agent");
        assert_eq!(client_open(&client_decrypt, &sealed), b"from the agent");
        assert!(
            client_decrypt
                .decrypt(&Nonce::from([0; 12]), &sealed[12..])
                .is_err()
        );
        let from_client = client_seal(&client_encrypt, [7; 12], b"from the client");
        assert_eq!(input.open(&from_client).unwrap(), b"from the client");
        // Sealed with the wrong half, it does not open.
        let wrong = client_seal(&client_decrypt, [7; 12], b"from the client");
        assert!(input.open(&wrong).is_none());
    }

    #[test]
    fn agent_nonces_count_up_and_never_repeat() {
        let (mut output, _) = split_data_key(&data_key()).unwrap();
        let nonces: Vec<u128> = (0..100)
            .map(|_| {
                let sealed = output.seal(b"x");
                let mut bytes = [0u8; 16];
                bytes[4..].copy_from_slice(&sealed[..12]);
                u128::from_be_bytes(bytes)
            })
            .collect();
        for pair in nonces.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) & NONCE_MASK);
        }
        // The counter wraps within 96 bits instead of repeating a value early.
        output.next_nonce = NONCE_MASK;
        let last = output.seal(b"x");
        let first = output.seal(b"x");
        assert_eq!(&last[..12], &[0xff; 12]);
        assert_eq!(&first[..12], &[0; 12]);
    }

    #[test]
    fn the_challenge_must_come_back_re_encrypted_with_the_client_key() {
        let key = data_key();
        let (mut output, mut input) = split_data_key(&key).unwrap();
        let (client_decrypt, client_encrypt) = client_ciphers(&key);
        let request = output.challenge_request(&mut input);
        let request: serde_json::Value = serde_json::from_slice(&request).unwrap();
        let sealed = BASE64
            .decode(request["Challenge"].as_str().unwrap())
            .unwrap();
        let challenge = client_open(&client_decrypt, &sealed);
        assert_eq!(challenge.len(), 64);
        let answer = |cipher: &Aes256Gcm, plain: &[u8]| {
            let sealed = client_seal(cipher, [9; 12], plain);
            serde_json::to_vec(&json!({"Challenge": BASE64.encode(sealed)})).unwrap()
        };
        assert!(input.answers_challenge(&answer(&client_encrypt, &challenge)));
        let mut other = challenge.clone();
        other[0] ^= 1;
        assert!(!input.answers_challenge(&answer(&client_encrypt, &other)));
        assert!(!input.answers_challenge(&answer(&client_decrypt, &challenge)));
        // Sent back unchanged (still under the agent's key): wrong.
        let echoed = serde_json::to_vec(&json!({"Challenge": BASE64.encode(&sealed)})).unwrap();
        assert!(!input.answers_challenge(&echoed));
        assert!(!input.answers_challenge(b"not json"));
    }

    #[test]
    fn the_gate_refuses_what_it_cannot_read() {
        let key = data_key();
        let (_, input) = split_data_key(&key).unwrap();
        let (_, client_encrypt) = client_ciphers(&key);
        let typed = Bytes::from(client_seal(&client_encrypt, [1; 12], b"ls\r"));
        let size = Bytes::from_static(br#"{"cols":80,"rows":24}"#);
        let waiting = InputGate::AwaitingKeys;
        // Before the keys, input is let through as plain text: the handshake discards it.
        assert_eq!(
            waiting.admit(PayloadType::Output, &typed),
            Ok(typed.clone())
        );
        assert_eq!(
            waiting.admit(PayloadType::EncChallengeResponse, &typed),
            Err(Refusal::WrongChallenge)
        );
        assert_eq!(waiting.admit(PayloadType::Size, &size), Ok(size.clone()));
        let gate = InputGate::Encrypted(Box::new(input));
        assert_eq!(
            gate.admit(PayloadType::Output, &typed).unwrap(),
            &b"ls\r"[..]
        );
        assert_eq!(gate.admit(PayloadType::Size, &size), Ok(size.clone()));
        for bad in [
            &b""[..],
            &typed[..27],
            b"plain text input that is long enough",
        ] {
            assert_eq!(
                gate.admit(PayloadType::Output, &Bytes::copy_from_slice(bad)),
                Err(Refusal::Undecryptable)
            );
        }
        assert_eq!(
            gate.admit(PayloadType::EncChallengeResponse, &size),
            Err(Refusal::WrongChallenge)
        );
        assert_eq!(
            InputGate::Open.admit(PayloadType::Output, &typed),
            Ok(typed.clone())
        );
    }

    #[test]
    fn the_response_gives_the_key_and_the_acknowledgement() {
        let response = |status: i64, result: serde_json::Value| {
            HandshakeResponse {
                client_version: "1.2.0.0".into(),
                processed_client_actions: vec![
                    ProcessedClientAction {
                        action_type: "SessionType".into(),
                        action_status: 1,
                        action_result: serde_json::Value::Null,
                        error: String::new(),
                    },
                    ProcessedClientAction {
                        action_type: "KMSEncryption".into(),
                        action_status: status,
                        action_result: result,
                        error: "no".into(),
                    },
                ],
                errors: vec![],
            }
            .to_bytes()
        };
        let ok = read_response(&response(
            1,
            json!({"KMSCipherTextKey": "AQID", "KMSCipherTextHash": null, "ChallengeAcknowledgement": true}),
        ))
        .unwrap();
        assert_eq!(ok.ciphertext_key, vec![1, 2, 3]);
        assert!(ok.acknowledged);
        let plain = read_response(&response(1, json!({"KMSCipherTextKey": "AQID"}))).unwrap();
        assert!(!plain.acknowledged);
        assert!(matches!(
            read_response(&response(2, json!(null))),
            Err(HandshakeFailure::ActionRefused { action, .. }) if action == "KMSEncryption"
        ));
        assert_eq!(
            read_response(&response(1, json!({"KMSCipherTextKey": "%%"}))),
            Err(HandshakeFailure::NoCiphertextKey)
        );
        assert_eq!(
            read_response(b"[1"),
            Err(HandshakeFailure::MalformedResponse)
        );
    }

    #[test]
    fn the_context_has_the_challenge_only_when_acknowledged() {
        let with = decrypt_context("s", "ecs:c_t_r", Some("ch"), true);
        assert_eq!(with.len(), 3);
        assert_eq!(with[CONTEXT_RANDOM_CHALLENGE], "ch");
        assert_eq!(with[CONTEXT_TARGET_ID], "ecs:c_t_r");
        assert_eq!(decrypt_context("s", "t", Some("ch"), false).len(), 2);
        assert_eq!(decrypt_context("s", "t", None, true).len(), 2);
    }

    #[test]
    fn the_action_carries_the_challenge_only_when_there_is_one() {
        let with = request_action("arn:aws:kms:r:1:key/k", Some("Y2g="));
        assert_eq!(with.action_type, "KMSEncryption");
        assert_eq!(
            with.action_parameters,
            json!({"KMSKeyId": "arn:aws:kms:r:1:key/k", "Challenge": "Y2g="})
        );
        let without = request_action("k", None);
        assert_eq!(without.action_parameters, json!({"KMSKeyId": "k"}));
        let challenge = BASE64.decode(new_challenge_string()).unwrap();
        assert_eq!(challenge.len(), CHALLENGE_STRING_BYTES);
        assert_ne!(new_challenge_string(), new_challenge_string());
    }

    #[test]
    fn short_data_keys_are_refused() {
        assert_eq!(
            split_data_key(&[0; 32]).unwrap_err(),
            HandshakeFailure::DataKeyLength(32)
        );
        assert!(split_data_key(&[0; 65]).is_err());
    }
}
