//! The client session core driven by a hostile agent: well-formed frames with arbitrary
//! sequence numbers, payload types and bodies (acks for anything, duplicates, gaps, pauses,
//! channel_closed), raw garbage, timeouts, input, resizes, link loss and reconnects, in any
//! order. The core must never panic, never move its sequence counters backwards, and keep
//! its buffers within the configured bounds however the agent behaves.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use ecs_exec_wire::frame::{Frame, MessageType, PayloadType};
use ecs_exec_wire::payload::Acknowledge;
use ecs_exec_wire::session::{FixedClock, Session, SessionConfig};
use ecs_exec_wire::{ChannelError, TransportError};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

const MAX_REORDER_FRAMES: usize = 8;
const MAX_REORDER_BYTES: usize = 4096;
const MAX_UNACKED_BYTES: usize = 8192;
const MAX_INPUT_PAYLOAD: usize = 512;
/// `{"cols":4294967295,"rows":4294967295}`: one deferred size may go out beyond the window.
const MAX_SIZE_PAYLOAD: usize = 38;

#[derive(Arbitrary, Debug)]
enum Kind {
    Output,
    Acknowledge,
    ChannelClosed,
    StartPublication,
    PausePublication,
    AgentSessionState,
    InputStreamData,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// A valid frame from the agent.
    Frame {
        kind: Kind,
        /// Near the expected number most of the time, anywhere sometimes.
        seq: i8,
        far_seq: Option<i64>,
        payload_type: u32,
        payload: Vec<u8>,
    },
    /// An acknowledge for one of our sequence numbers, as the agent would write it.
    AckOurs {
        seq: u8,
    },
    /// Whatever bytes, as one websocket message.
    Raw(Vec<u8>),
    /// Time passes, then the core's timeout runs.
    Wait {
        millis: u16,
    },
    Input(Vec<u8>),
    Resize {
        cols: u16,
        rows: u16,
    },
    Pong,
    Close,
    LinkLost,
    Reconnect,
}

fn config() -> SessionConfig {
    SessionConfig {
        client_id: Uuid::from_u128(1),
        max_input_payload: MAX_INPUT_PAYLOAD,
        max_unacked_bytes: MAX_UNACKED_BYTES,
        max_unacked_frames: 64,
        max_reorder_frames: MAX_REORDER_FRAMES,
        max_reorder_bytes: MAX_REORDER_BYTES,
        max_retransmits: 4,
        give_up_after: Duration::from_secs(5),
        resumable: true,
        id_seed: Some(7),
        ..SessionConfig::default()
    }
}

fn message_type(kind: &Kind) -> MessageType {
    match kind {
        Kind::Output => MessageType::OutputStreamData,
        Kind::Acknowledge => MessageType::Acknowledge,
        Kind::ChannelClosed => MessageType::ChannelClosed,
        Kind::StartPublication => MessageType::StartPublication,
        Kind::PausePublication => MessageType::PausePublication,
        Kind::AgentSessionState => MessageType::AgentSessionState,
        Kind::InputStreamData => MessageType::InputStreamData,
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let start = Instant::now();
    let mut now = start;
    let mut session = Session::new(config(), "token", Box::new(FixedClock(1)), now);
    let mut sent_seq = session.next_sequence_number();
    let mut expected_seq = session.expected_sequence_number();
    for step in steps {
        match step {
            Step::Frame {
                kind,
                seq,
                far_seq,
                payload_type,
                payload,
            } => {
                let seq = far_seq.unwrap_or(expected_seq.saturating_add(i64::from(seq)));
                let frame = Frame::stream(
                    message_type(&kind),
                    seq,
                    PayloadType::from_u32(payload_type),
                    Bytes::from(payload),
                    1,
                    Uuid::from_u128(seq as u128),
                );
                session.handle_frame(now, frame.to_bytes());
            }
            Step::AckOurs { seq } => {
                let ours = Frame::stream(
                    MessageType::InputStreamData,
                    i64::from(seq),
                    PayloadType::Output,
                    Bytes::new(),
                    1,
                    Uuid::from_u128(u128::from(seq)),
                );
                let ack = Acknowledge::frame_for(&ours, 1, Uuid::from_u128(9));
                session.handle_frame(now, ack.to_bytes());
            }
            Step::Raw(bytes) => session.handle_frame(now, Bytes::from(bytes)),
            Step::Wait { millis } => {
                now += Duration::from_millis(u64::from(millis));
                session.handle_timeout(now);
            }
            // As the driver does: input only while the window is open, in bounded chunks.
            Step::Input(mut data) => {
                if session.can_send() {
                    data.truncate(MAX_INPUT_PAYLOAD);
                    let _ = session.send_input(Bytes::from(data));
                }
            }
            Step::Resize { cols, rows } => {
                let _ = session.send_resize(u32::from(cols), u32::from(rows));
            }
            Step::Pong => session.handle_pong(now),
            Step::Close => session.close(now),
            Step::LinkLost => session.link_lost(ChannelError::Transport(TransportError::Io {
                reason: "cut".to_owned(),
            })),
            Step::Reconnect => {
                let _ = session.reconnect(now, "token-2");
            }
        }
        while session.poll_transmit(now).is_some() {}
        while session.poll_event().is_some() {}

        let (reorder_frames, reorder_bytes) = session.reorder_buffered();
        assert!(
            reorder_frames <= MAX_REORDER_FRAMES,
            "{reorder_frames} frames held"
        );
        assert!(
            reorder_bytes <= MAX_REORDER_BYTES,
            "{reorder_bytes} bytes held"
        );
        assert!(
            session.unacked_bytes() <= MAX_UNACKED_BYTES + MAX_INPUT_PAYLOAD + MAX_SIZE_PAYLOAD,
            "{} bytes unacked",
            session.unacked_bytes()
        );
        assert!(session.next_sequence_number() >= sent_seq);
        assert!(session.expected_sequence_number() >= expected_seq);
        sent_seq = session.next_sequence_number();
        expected_seq = session.expected_sequence_number();
    }
});
