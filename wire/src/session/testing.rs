//! Helpers shared by the session's unit tests: a session with fixed ids and a frozen clock,
//! the agent's frames, and the frames the session sent, decoded.

use std::time::Instant;

use bytes::Bytes;
use uuid::Uuid;

use super::{Event, FixedClock, Session, SessionConfig, Transmit};
use crate::frame::{Frame, MessageType, PayloadType};
use crate::payload::{Acknowledge, HandshakeRequest, RequestedClientAction};

pub(super) const DATE: u64 = 1_700_000_000_000;

pub(super) fn config() -> SessionConfig {
    SessionConfig {
        client_id: Uuid::from_u128(0x1234),
        keepalive_interval: None,
        id_seed: Some(7),
        ..SessionConfig::default()
    }
}

pub(super) fn session_with(config: SessionConfig, now: Instant) -> Session {
    let mut session = Session::new(config, "tok", Box::new(FixedClock(DATE)), now);
    assert!(matches!(
        session.poll_transmit(now),
        Some(Transmit::Text(_))
    ));
    session
}

pub(super) fn session(now: Instant) -> Session {
    session_with(config(), now)
}

/// Every binary frame queued now, decoded.
pub(super) fn drain(session: &mut Session, now: Instant) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(transmit) = session.poll_transmit(now) {
        if let Transmit::Binary(bytes) = transmit {
            frames.push(Frame::decode(&bytes).expect("session frames decode"));
        }
    }
    frames
}

pub(super) fn events(session: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

pub(super) fn output(seq: i64, payload_type: PayloadType, payload: &'static [u8]) -> Bytes {
    Frame::stream(
        MessageType::OutputStreamData,
        seq,
        payload_type,
        Bytes::from_static(payload),
        DATE,
        Uuid::from_u128(seq as u128 + 1),
    )
    .to_bytes()
}

pub(super) fn ack_of(frame: &Frame) -> Bytes {
    Acknowledge::frame_for(frame, DATE, Uuid::from_u128(99)).to_bytes()
}

pub(super) fn control(message_type: MessageType, payload: Bytes) -> Bytes {
    Frame::control(message_type, payload, DATE, Uuid::from_u128(5)).to_bytes()
}

pub(super) fn acked_seqs(frames: &[Frame]) -> Vec<i64> {
    frames
        .iter()
        .filter(|frame| frame.message_type == MessageType::Acknowledge)
        .map(|frame| {
            Acknowledge::from_payload(&frame.payload)
                .expect("ack json")
                .acknowledged_message_sequence_number
        })
        .collect()
}

pub(super) fn handshake_request(actions: Vec<RequestedClientAction>) -> Bytes {
    let request = HandshakeRequest {
        agent_version: "3.3.0.0".to_owned(),
        requested_client_actions: actions,
    };
    Frame::stream(
        MessageType::OutputStreamData,
        0,
        PayloadType::HandshakeRequest,
        request.to_bytes(),
        DATE,
        Uuid::from_u128(1),
    )
    .to_bytes()
}
