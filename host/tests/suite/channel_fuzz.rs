//! Decoder fuzzing without a nightly toolchain: proptest over random bytes and over mutated
//! valid frames (bit flips, truncation, extension, length-field rewrites). Decoding must
//! never panic, anything accepted must re-encode to a frame that decodes to the same value,
//! and the client session must survive every input. Ignored by default (a long run):
//! `FUZZ_CASES=3000000 cargo test -p ecs-exec --release --test suite channel_fuzz -- --ignored`.

use std::cell::RefCell;
use std::time::Instant;

use bytes::Bytes;
use ecs_exec::channel::frame::{Frame, MessageType, PayloadType};
use ecs_exec::channel::payload::{Acknowledge, ChannelClosed, HandshakeRequest};
use ecs_exec::channel::session::{FixedClock, Session, SessionConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use uuid::Uuid;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000)
}

fn seed_frames() -> Vec<Bytes> {
    let stream = |message_type, payload_type, payload: &'static [u8]| {
        Frame::stream(
            message_type,
            3,
            payload_type,
            Bytes::from_static(payload),
            1_700_000_000_000,
            Uuid::from_u128(9),
        )
        .to_bytes()
    };
    let ack = Acknowledge {
        acknowledged_message_type: "input_stream_data".to_owned(),
        acknowledged_message_id: Uuid::from_u128(1).to_string(),
        acknowledged_message_sequence_number: 0,
        is_sequential_message: true,
    };
    vec![
        stream(MessageType::OutputStreamData, PayloadType::Output, b"hello\r\n"),
        stream(MessageType::OutputStreamData, PayloadType::ExitCode, b"EXIT_CODE: 1"),
        stream(
            MessageType::OutputStreamData,
            PayloadType::HandshakeRequest,
            br#"{"AgentVersion":"3","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port"}}]}"#,
        ),
        Frame::control(MessageType::Acknowledge, ack.to_bytes(), 1, Uuid::nil()).to_bytes(),
        Frame::control(
            MessageType::ChannelClosed,
            ChannelClosed::default().to_bytes(),
            1,
            Uuid::nil(),
        )
        .to_bytes(),
        Frame::control(
            MessageType::PausePublication,
            HandshakeRequest::default().to_bytes(),
            0,
            Uuid::nil(),
        )
        .to_bytes(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { index: usize, mask: u8 },
    Truncate(usize),
    Extend(Vec<u8>),
    SetU32 { offset: usize, value: u32 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(index, mask)| Mutation::Flip { index, mask }),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Mutation::Extend),
        (
            prop_oneof![Just(0usize), Just(116), Just(112), Just(36), 0usize..130],
            prop_oneof![
                Just(0u32),
                Just(116),
                Just(u32::MAX),
                any::<u32>(),
                0u32..300
            ]
        )
            .prop_map(|(offset, value)| Mutation::SetU32 { offset, value }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match mutation {
            Mutation::Flip { index, mask } => {
                if !bytes.is_empty() {
                    let at = index % bytes.len();
                    bytes[at] ^= mask;
                }
            }
            Mutation::Truncate(len) => {
                let keep = len % (bytes.len() + 1);
                bytes.truncate(keep);
            }
            Mutation::Extend(extra) => bytes.extend_from_slice(extra),
            Mutation::SetU32 { offset, value } => {
                if offset + 4 <= bytes.len() {
                    bytes[*offset..offset + 4].copy_from_slice(&value.to_be_bytes());
                }
            }
        }
    }
    bytes
}

/// Random bytes almost never get past the length checks, so for most long inputs the
/// length fields (and, for half of those, the digest) are made consistent.
fn make_consistent(mut bytes: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    if bytes.len() < 120 || bytes[0] & 3 == 0 {
        return bytes;
    }
    let payload_len = (bytes.len() - 120) as u32;
    bytes[0..4].copy_from_slice(&116u32.to_be_bytes());
    bytes[116..120].copy_from_slice(&payload_len.to_be_bytes());
    if bytes[1] & 1 == 0 {
        let digest = Sha256::digest(&bytes[120..]);
        bytes[80..112].copy_from_slice(digest.as_slice());
    }
    if bytes[2] & 1 == 0 {
        // A known type name, so the session's handlers see garbage headers and payloads.
        let names: [&[u8]; 4] = [
            b"output_stream_data",
            b"acknowledge",
            b"channel_closed",
            b"pause_publication",
        ];
        let name = names[usize::from(bytes[3]) % names.len()];
        bytes[4..36].fill(b' ');
        bytes[4..4 + name.len()].copy_from_slice(name);
    }
    bytes
}

/// Decodes, round-trips and feeds one input; returns the outcome's name for the tally.
fn check(input: &[u8], session: &mut Session, now: Instant) -> String {
    let outcome = match Frame::decode(input) {
        Ok(frame) => {
            let again = Frame::decode(&frame.to_bytes()).expect("re-encoded frames decode");
            assert_eq!(again, frame);
            "accepted".to_owned()
        }
        Err(error) => format!("{error:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    session.handle_frame(now, Bytes::copy_from_slice(input));
    while session.poll_transmit(now).is_some() {}
    while session.poll_event().is_some() {}
    session.handle_timeout(now + std::time::Duration::from_secs(1));
    outcome
}

#[test]
#[ignore = "long fuzz run; see the module docs"]
fn decoder_and_session_survive_arbitrary_and_mutated_frames() {
    let started = std::time::Instant::now();
    let seeds = seed_frames();
    let now = Instant::now();
    let new_session = || {
        Session::new(
            SessionConfig {
                keepalive_interval: None,
                ..SessionConfig::default()
            },
            "t",
            Box::new(FixedClock(1)),
            now,
        )
    };
    let session = RefCell::new(new_session());
    let tally = RefCell::new(std::collections::BTreeMap::new());
    let total = cases();
    let config = Config {
        cases: total / 2,
        failure_persistence: None,
        ..Config::default()
    };
    // One runner per strategy: a runner counts its successes across `run` calls.
    TestRunner::new(config.clone())
        .run(&proptest::collection::vec(any::<u8>(), 0..300), |bytes| {
            let bytes = make_consistent(bytes);
            let mut session = session.borrow_mut();
            let outcome = check(&bytes, &mut session, now);
            *tally
                .borrow_mut()
                .entry(format!("random/{outcome}"))
                .or_insert(0u64) += 1;
            if session.is_closed() {
                *session = new_session();
            }
            Ok(())
        })
        .expect("random bytes never break the decoder");
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 1..4));
    TestRunner::new(config)
        .run(&strategy, |(seed, mutations)| {
            let bytes = apply(seeds[seed].to_vec(), &mutations);
            let mut session = session.borrow_mut();
            let outcome = check(&bytes, &mut session, now);
            *tally
                .borrow_mut()
                .entry(format!("mutated/{outcome}"))
                .or_insert(0u64) += 1;
            if session.is_closed() {
                *session = new_session();
            }
            Ok(())
        })
        .expect("mutated frames never break the decoder");
    eprintln!(
        "fuzzed {} cases in {:.1} s: {:?}",
        total,
        started.elapsed().as_secs_f64(),
        tally.borrow()
    );
    let tally = tally.borrow();
    assert!(
        tally.get("mutated/accepted").copied().unwrap_or(0) > 0,
        "mutations reach the accept path"
    );
}
