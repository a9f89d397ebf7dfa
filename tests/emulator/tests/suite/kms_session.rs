//! The agent's side of KMS-encrypted sessions, checked by a small client written here from
//! the protocol description (AES-256-GCM from the `aes-gcm` crate, data key from the emulator's
//! KMS API over HTTP), not by the host crate's session core: the handshake and its sequence
//! numbers, the key split, encrypted output and input, and each way the agent fails.

use crate::common;

use std::time::Duration;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use common::{ECS, LIMIT, RawClient, Signer, call};
use ecs_exec_emulator::{Config, DEFAULT_KMS_KEY_ARN, Emulator, EmulatorHandle, KmsDecrypt};
use ecs_exec_wire::frame::{Frame, MessageType, PayloadType};
use ecs_exec_wire::payload::{
    HandshakeComplete, HandshakeRequest, HandshakeResponse, ProcessedClientAction,
};
use serde_json::{Value, json};

/// A session on the `secure` cluster, before its websocket is opened.
struct Started {
    session_id: String,
    target: String,
    stream_url: String,
    token: String,
}

async fn execute_on_secure(handle: &EmulatorHandle, command: &str) -> Started {
    let secure = handle.world().cluster(Some("secure")).unwrap();
    let task = &secure.tasks[0];
    let reply = call(
        handle.local_addr(),
        Some(&Signer::for_handle(handle)),
        &format!("{ECS}.ExecuteCommand"),
        &json!({"cluster": "secure", "task": task.arn, "container": "app", "command": command, "interactive": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let session = &reply.json["session"];
    Started {
        session_id: session["sessionId"].as_str().unwrap().to_string(),
        target: format!("ecs:secure_{}_{}", task.id, task.containers[0].runtime_id),
        stream_url: session["streamUrl"].as_str().unwrap().to_string(),
        token: session["tokenValue"].as_str().unwrap().to_string(),
    }
}

/// How the test client behaves in the handshake.
#[derive(Clone, Copy)]
struct Behaviour {
    /// Put the challenge into the context and say ChallengeAcknowledgement.
    acknowledge: bool,
    /// Use this TargetId instead of the right one.
    wrong_target: bool,
}

const GOOD: Behaviour = Behaviour {
    acknowledge: true,
    wrong_target: false,
};

/// The client's keys: it decrypts with bytes 0-31 and encrypts with bytes 32-63.
struct ClientKeys {
    from_agent: Aes256Gcm,
    to_agent: Aes256Gcm,
    nonce: u8,
}

impl ClientKeys {
    fn open(&self, data: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = data[..12].try_into().unwrap();
        self.from_agent
            .decrypt(&Nonce::from(nonce), &data[12..])
            .expect("the agent's payload decrypts with bytes 0-31")
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.nonce += 1;
        let nonce = [self.nonce; 12];
        let mut out = nonce.to_vec();
        out.extend(
            self.to_agent
                .encrypt(&Nonce::from(nonce), plaintext)
                .unwrap(),
        );
        out
    }
}

/// Reads frames until one of `payload_type` is in `received`; None if the session ended first.
async fn wait_for(client: &mut RawClient, payload_type: PayloadType) -> Option<Frame> {
    tokio::time::timeout(LIMIT, async {
        loop {
            if let Some(frame) = client
                .received
                .iter()
                .find(|f| f.payload_type == payload_type)
            {
                return Some(frame.clone());
            }
            if client.closed.is_some() || !client.step().await {
                return None;
            }
        }
    })
    .await
    .expect("the agent neither sent the message nor ended the session in time")
}

async fn generate_data_key(handle: &EmulatorHandle, context: Value) -> (Vec<u8>, String) {
    let mut signer = Signer::for_handle(handle);
    signer.service = "kms".into();
    let reply = call(
        handle.kms_local_addr(),
        Some(&signer),
        "TrentService.GenerateDataKey",
        &json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64, "EncryptionContext": context}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    (
        BASE64
            .decode(reply.json["Plaintext"].as_str().unwrap())
            .unwrap(),
        reply.json["CiphertextBlob"].as_str().unwrap().to_string(),
    )
}

/// Plays the client's half up to the HandshakeResponse; returns the client's keys.
async fn answer_handshake(
    handle: &EmulatorHandle,
    started: &Started,
    client: &mut RawClient,
    behaviour: Behaviour,
) -> ClientKeys {
    let request = wait_for(client, PayloadType::HandshakeRequest)
        .await
        .expect("HandshakeRequest");
    assert_eq!((request.sequence_number, request.flags), (0, 1));
    let request = HandshakeRequest::from_payload(&request.payload).unwrap();
    let actions = &request.requested_client_actions;
    assert_eq!(actions[0].session_type_name(), Some("InteractiveCommands"));
    assert_eq!(actions[1].action_type, "KMSEncryption");
    let parameters = &actions[1].action_parameters;
    assert_eq!(parameters["KMSKeyId"], DEFAULT_KMS_KEY_ARN);
    let challenge = parameters["Challenge"]
        .as_str()
        .expect("a Challenge string");
    assert_eq!(BASE64.decode(challenge).unwrap().len(), 16);

    let target = if behaviour.wrong_target {
        format!("{}x", started.target)
    } else {
        started.target.clone()
    };
    let mut context = json!({"aws:ssm:SessionId": started.session_id, "aws:ssm:TargetId": target});
    if behaviour.acknowledge {
        context["aws:ssm:RandomChallenge"] = json!(challenge);
    }
    let (data_key, blob) = generate_data_key(handle, context).await;
    let mut result = json!({"KMSCipherTextKey": blob, "KMSCipherTextHash": null});
    if behaviour.acknowledge {
        result["ChallengeAcknowledgement"] = json!(true);
    }
    let response = HandshakeResponse {
        client_version: "1.2.0.0".into(),
        processed_client_actions: vec![
            ProcessedClientAction {
                action_type: "SessionType".into(),
                action_status: 1,
                action_result: Value::Null,
                error: String::new(),
            },
            ProcessedClientAction {
                action_type: "KMSEncryption".into(),
                action_status: 1,
                action_result: result,
                error: String::new(),
            },
        ],
        errors: vec![],
    };
    assert_eq!(
        client
            .send(PayloadType::HandshakeResponse, &response.to_bytes())
            .await,
        0
    );
    ClientKeys {
        from_agent: Aes256Gcm::new_from_slice(&data_key[..32]).unwrap(),
        to_agent: Aes256Gcm::new_from_slice(&data_key[32..]).unwrap(),
        nonce: 0,
    }
}

/// Answers the encryption challenge (seq 1); returns its client sequence number.
async fn answer_challenge(client: &mut RawClient, keys: &mut ClientKeys, wrong: bool) -> i64 {
    let request = wait_for(client, PayloadType::EncChallengeRequest)
        .await
        .expect("EncChallengeRequest");
    assert_eq!(request.sequence_number, 1);
    let body: Value = serde_json::from_slice(&request.payload).unwrap();
    let sealed = BASE64.decode(body["Challenge"].as_str().unwrap()).unwrap();
    let mut challenge = keys.open(&sealed);
    assert_eq!(challenge.len(), 64);
    if wrong {
        challenge[10] ^= 0x55;
    }
    let answer = json!({"Challenge": BASE64.encode(keys.seal(&challenge))});
    client
        .send(
            PayloadType::EncChallengeResponse,
            answer.to_string().as_bytes(),
        )
        .await
}

/// The whole client handshake; returns the keys once HandshakeComplete has arrived.
async fn handshake(
    handle: &EmulatorHandle,
    started: &Started,
    client: &mut RawClient,
    behaviour: Behaviour,
) -> ClientKeys {
    let mut keys = answer_handshake(handle, started, client, behaviour).await;
    answer_challenge(client, &mut keys, false).await;
    let complete = wait_for(client, PayloadType::HandshakeComplete)
        .await
        .expect("HandshakeComplete");
    assert_eq!(complete.sequence_number, 2);
    let complete = HandshakeComplete::from_payload(&complete.payload).unwrap();
    assert_eq!(
        complete.customer_message,
        "This session is encrypted using AWS KMS."
    );
    assert!(complete.handshake_time_to_complete > 0);
    keys
}

/// The decrypted output, in sequence order, each sequence number once.
fn output_of(client: &RawClient, keys: &ClientKeys) -> Vec<u8> {
    let mut frames: Vec<&Frame> = client
        .received
        .iter()
        .filter(|f| f.payload_type == PayloadType::Output)
        .collect();
    frames.sort_by_key(|f| f.sequence_number);
    frames.dedup_by_key(|f| f.sequence_number);
    frames.iter().flat_map(|f| keys.open(&f.payload)).collect()
}

async fn start(config: Config) -> EmulatorHandle {
    Emulator::start(config).await.unwrap()
}

async fn connect(started: &Started) -> RawClient {
    RawClient::connect(&started.stream_url, &started.token).await
}

#[tokio::test]
async fn an_encrypted_session_runs_input_and_output_through_the_data_key() {
    let handle = start(Config::default()).await;
    let started = execute_on_secure(
        &handle,
        "sh -c 'stty -echo; read line; echo got:$line; echo done'",
    )
    .await;
    let mut client = connect(&started).await;
    let mut keys = handshake(&handle, &started, &mut client, GOOD).await;
    // Size is never encrypted; keystrokes are.
    client
        .send(PayloadType::Size, br#"{"cols":100,"rows":30}"#)
        .await;
    let typed = keys.seal(b"secret words\r");
    assert_eq!(client.send(PayloadType::Output, &typed).await, 3);
    client.run_to_end(LIMIT).await;
    let output = output_of(&client, &keys);
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("got:secret words"), "{text}");
    assert!(client.acked.contains(&3), "the encrypted input was acked");

    // Output starts at seq 3, is never in the clear, and its nonces count up by one.
    let mut outputs: Vec<&Frame> = client
        .received
        .iter()
        .filter(|f| f.payload_type == PayloadType::Output)
        .collect();
    outputs.sort_by_key(|f| f.sequence_number);
    outputs.dedup_by_key(|f| f.sequence_number);
    assert_eq!(outputs[0].sequence_number, 3);
    for frame in &client.received {
        assert!(
            !common::contains(&frame.payload, b"got:"),
            "output in the clear"
        );
    }
    let nonce = |f: &Frame| {
        let mut bytes = [0u8; 16];
        bytes[4..].copy_from_slice(&f.payload[..12]);
        u128::from_be_bytes(bytes)
    };
    for pair in outputs.windows(2) {
        assert_eq!(nonce(pair[1]), (nonce(pair[0]) + 1) & ((1 << 96) - 1));
    }
    let closed = client.closed.as_ref().unwrap();
    assert_eq!(closed.output, "");
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.kms_handshakes_completed, 1);
    assert_eq!(counters.sessions_closed_cleanly, 1);
    assert_eq!(handle.issued_data_keys().len(), 1);
}

#[tokio::test]
async fn a_client_that_does_not_acknowledge_works_unless_the_agent_requires_it() {
    let plain_client = Behaviour {
        acknowledge: false,
        ..GOOD
    };
    let handle = start(Config::default()).await;
    let started = execute_on_secure(&handle, "echo hello").await;
    let mut client = connect(&started).await;
    let keys = handshake(&handle, &started, &mut client, plain_client).await;
    client.run_to_end(LIMIT).await;
    assert_eq!(output_of(&client, &keys), b"hello\r\n");

    let mut config = Config::default();
    config.agent.require_challenge_ack = true;
    config.agent.kms_challenge_timeout_ms = 600_000;
    config.agent.handshake_timeout_ms = 600_000;
    let strict = start(config).await;
    let started = execute_on_secure(&strict, "echo hello").await;
    let mut client = connect(&started).await;
    answer_handshake(&strict, &started, &mut client, plain_client).await;
    // Refused at once (both timeouts are far beyond the test's limit), with the reason.
    assert!(
        wait_for(&mut client, PayloadType::EncChallengeRequest)
            .await
            .is_none()
    );
    client.run_to_end(LIMIT).await;
    let closed = client.closed.as_ref().expect("channel_closed");
    assert!(
        closed.output.contains("random challenge"),
        "{}",
        closed.output
    );
    let counters = strict.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(
        (counters.kms_handshakes_failed, counters.processes_spawned),
        (1, 0)
    );

    // The same agent takes a client that acknowledges.
    let started = execute_on_secure(&strict, "echo hello").await;
    let mut client = connect(&started).await;
    let keys = handshake(&strict, &started, &mut client, GOOD).await;
    client.run_to_end(LIMIT).await;
    assert_eq!(output_of(&client, &keys), b"hello\r\n");
}

#[tokio::test]
async fn a_wrong_challenge_answer_is_not_acked_and_the_session_times_out() {
    let mut config = Config::default();
    config.agent.kms_challenge_timeout_ms = 300;
    let handle = start(config).await;
    let started = execute_on_secure(&handle, "echo never").await;
    let mut client = connect(&started).await;
    let mut keys = answer_handshake(&handle, &started, &mut client, GOOD).await;
    let answer = answer_challenge(&mut client, &mut keys, true).await;
    let challenged = std::time::Instant::now();
    client.run_to_end(LIMIT).await;
    assert!(
        challenged.elapsed() >= Duration::from_millis(300),
        "ended before the challenge timeout"
    );
    assert!(
        !client.acked.contains(&answer),
        "a wrong answer is not acked"
    );
    assert!(client.acked.contains(&0), "the HandshakeResponse was");
    assert!(
        !client
            .received
            .iter()
            .any(|f| f.payload_type == PayloadType::HandshakeComplete)
    );
    let closed = client.closed.as_ref().expect("channel_closed");
    assert!(closed.output.contains("timed out"), "{}", closed.output);
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert!(counters.kms_challenges_rejected >= 1);
    assert_eq!(counters.kms_handshakes_failed, 1);
    assert_eq!(counters.processes_spawned, 0);
}

#[tokio::test]
async fn a_failed_agent_decrypt_ends_the_session_at_once() {
    // The task role lacks kms:Decrypt.
    let mut config = Config::default();
    config.agent.kms_decrypt = KmsDecrypt::AccessDenied;
    config.agent.kms_challenge_timeout_ms = 600_000;
    config.agent.handshake_timeout_ms = 600_000;
    let handle = start(config.clone()).await;
    let started = execute_on_secure(&handle, "echo never").await;
    let mut client = connect(&started).await;
    answer_handshake(&handle, &started, &mut client, GOOD).await;
    assert!(
        wait_for(&mut client, PayloadType::EncChallengeRequest)
            .await
            .is_none()
    );
    client.run_to_end(LIMIT).await;
    let closed = client.closed.as_ref().expect("channel_closed");
    assert!(
        closed.output.contains("AccessDeniedException")
            && closed.output.contains("kms:Decrypt")
            && closed.output.contains(DEFAULT_KMS_KEY_ARN),
        "{}",
        closed.output
    );
    assert_eq!(
        handle
            .wait_until(|c| c.sessions_finished == 1)
            .await
            .kms_handshakes_failed,
        1
    );

    // A data key made for another target does not decrypt with the agent's context.
    config.agent.kms_decrypt = KmsDecrypt::Ok;
    let handle = start(config).await;
    let started = execute_on_secure(&handle, "echo never").await;
    let mut client = connect(&started).await;
    let wrong_target = Behaviour {
        wrong_target: true,
        ..GOOD
    };
    answer_handshake(&handle, &started, &mut client, wrong_target).await;
    assert!(
        wait_for(&mut client, PayloadType::EncChallengeRequest)
            .await
            .is_none()
    );
    client.run_to_end(LIMIT).await;
    let closed = client.closed.as_ref().expect("channel_closed");
    assert!(
        closed.output.contains("InvalidCiphertextException"),
        "{}",
        closed.output
    );
    assert_eq!(
        handle
            .wait_until(|c| c.sessions_finished == 1)
            .await
            .processes_spawned,
        0
    );
}

#[tokio::test]
async fn input_that_does_not_decrypt_is_neither_acked_nor_used() {
    let handle = start(Config::default()).await;
    let started = execute_on_secure(&handle, "sh -c 'stty -echo; read line; echo got:$line'").await;
    let mut client = connect(&started).await;
    let mut keys = handshake(&handle, &started, &mut client, GOOD).await;
    let frame = |payload: Vec<u8>| {
        Frame::stream(
            MessageType::InputStreamData,
            2,
            PayloadType::Output,
            Bytes::from(payload),
            1_700_000_000_000,
            uuid::Uuid::new_v4(),
        )
        .to_bytes()
    };
    // Sealed with the agent's own half of the key, in the clear, and too short: all refused.
    let mut wrong_half = vec![9u8; 12];
    wrong_half.extend(
        keys.from_agent
            .encrypt(&Nonce::from([9u8; 12]), &b"forged\r"[..])
            .unwrap(),
    );
    for forged in [wrong_half, b"plain text\r".to_vec(), vec![1, 2, 3]] {
        client.send_raw(frame(forged)).await;
    }
    client.send_raw(frame(keys.seal(b"real\r"))).await;
    client.run_to_end(LIMIT).await;
    let text = String::from_utf8_lossy(&output_of(&client, &keys)).into_owned();
    assert!(text.contains("got:real"), "{text}");
    assert!(
        !text.contains("forged") && !text.contains("plain"),
        "{text}"
    );
    assert_eq!(
        client.acked.iter().filter(|s| **s == 2).count(),
        1,
        "only the input that decrypted was acked"
    );
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.kms_inputs_undecryptable, 3);
    assert_eq!(counters.input_bytes, 5);
}

#[tokio::test]
async fn retransmitted_output_repeats_the_same_ciphertext() {
    let handle = start(Config::default()).await;
    let started = execute_on_secure(&handle, "sh -c 'echo first; exec sleep 1000'").await;
    let mut client = connect(&started).await;
    let keys = handshake(&handle, &started, &mut client, GOOD).await;
    client.ack_output = false;
    let resent = tokio::time::timeout(LIMIT, async {
        loop {
            assert!(client.step().await, "the session ended");
            let outputs: Vec<&Frame> = client
                .received
                .iter()
                .filter(|f| f.payload_type == PayloadType::Output)
                .collect();
            if let Some(again) = outputs
                .iter()
                .skip(1)
                .find(|f| f.sequence_number == outputs[0].sequence_number)
            {
                return (outputs[0].payload.clone(), again.payload.clone());
            }
        }
    })
    .await
    .expect("no retransmission came");
    assert_eq!(
        resent.0, resent.1,
        "a retransmission resends the same bytes"
    );
    assert!(keys.open(&resent.0).starts_with(b"first"));
    assert!(handle.counters().output_retransmits >= 1);
}

#[tokio::test]
async fn a_resumed_session_keeps_its_keys() {
    let mut config = Config::default();
    config.agent.reconnect_grace_secs = 60;
    let handle = start(config).await;
    let started = execute_on_secure(
        &handle,
        "sh -c 'stty -echo; echo before; read line; echo got:$line'",
    )
    .await;
    let mut first = connect(&started).await;
    let mut keys = handshake(&handle, &started, &mut first, GOOD).await;
    wait_for(&mut first, PayloadType::Output)
        .await
        .expect("first output");
    // The socket goes away without a close frame.
    drop(first);

    let mut ssm = Signer::for_handle(&handle);
    ssm.service = "ssm".into();
    let reply = call(
        handle.local_addr(),
        Some(&ssm),
        "AmazonSSM.ResumeSession",
        &json!({"SessionId": started.session_id}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let token = reply.json["TokenValue"].as_str().unwrap();
    let mut second = RawClient::connect(&started.stream_url, token).await;
    // Client sequence numbers carry on after HandshakeResponse (0) and the answer (1).
    let typed = Frame::stream(
        MessageType::InputStreamData,
        2,
        PayloadType::Output,
        Bytes::from(keys.seal(b"after\r")),
        1_700_000_000_000,
        uuid::Uuid::new_v4(),
    )
    .to_bytes();
    second.send_raw(typed).await;
    second.run_to_end(LIMIT).await;
    assert!(
        !second
            .received
            .iter()
            .any(|f| f.payload_type == PayloadType::HandshakeRequest),
        "no second handshake"
    );
    let text = String::from_utf8_lossy(&output_of(&second, &keys)).into_owned();
    assert!(text.contains("got:after"), "{text}");
    assert!(second.acked.contains(&2));
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(counters.reconnects, 1);
    assert_eq!(counters.kms_handshakes_completed, 1);
    assert_eq!(counters.sessions_closed_cleanly, 1);
}

#[tokio::test]
async fn an_unanswered_handshake_ends_when_the_agent_stops_waiting() {
    let mut config = Config::default();
    config.agent.handshake_timeout_ms = 200;
    let handle = start(config).await;
    let started = execute_on_secure(&handle, "echo never").await;
    let mut client = connect(&started).await;
    wait_for(&mut client, PayloadType::HandshakeRequest)
        .await
        .expect("HandshakeRequest");
    let asked = std::time::Instant::now();
    client.run_to_end(LIMIT).await;
    assert!(asked.elapsed() >= Duration::from_millis(150));
    let closed = client.closed.as_ref().expect("channel_closed");
    assert!(closed.output.contains("timed out"), "{}", closed.output);
    let counters = handle.wait_until(|c| c.sessions_finished == 1).await;
    assert_eq!(
        (counters.kms_handshakes_failed, counters.processes_spawned),
        (1, 0)
    );
}

#[tokio::test]
async fn lost_and_repeated_agent_frames_are_repaired_byte_exact() {
    let mut config = Config::default();
    config.faults.seed = 11;
    config.faults.outbound.drop = 0.2;
    config.faults.outbound.duplicate = 0.2;
    config.agent.read_chunk_bytes = 4096;
    let handle = start(config).await;
    let started = execute_on_secure(&handle, "seq 1 20000").await;
    let mut client = connect(&started).await;
    let keys = handshake(&handle, &started, &mut client, GOOD).await;
    client.run_to_end(LIMIT).await;
    let expected: String = (1..=20000).map(|n| format!("{n}\r\n")).collect();
    assert!(
        output_of(&client, &keys) == expected.as_bytes(),
        "the decrypted output differs"
    );
    let counters = handle.counters();
    assert!(counters.frames_dropped > 0 && counters.frames_duplicated > 0);
    assert!(counters.output_retransmits > 0);
}
