//! The agent's thin layer over the host's frame codec (`ecs_exec_wire::frame` and
//! `payload`): building the few frames an agent sends (output, acks, channel_closed) and
//! reading the acks it receives. No policy lives here; sequence numbers and flags are chosen
//! by the caller, so the agent keeps its own rules even where the client's differ.

use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub use ecs_exec_wire::frame::{Frame, FrameError, MessageType, PayloadType};
use ecs_exec_wire::payload::{Acknowledge, ChannelClosed};

/// Encodes one frame with exactly these header values and a fresh random message id.
pub fn encode(
    message_type: MessageType,
    sequence_number: i64,
    flags: u64,
    payload_type: u32,
    payload: &[u8],
    created_ms: u64,
) -> Bytes {
    let mut frame = Frame::stream(
        message_type,
        sequence_number,
        PayloadType::from_u32(payload_type),
        Bytes::copy_from_slice(payload),
        created_ms,
        Uuid::new_v4(),
    );
    frame.flags = flags;
    frame.to_bytes()
}

/// Decodes one websocket binary message.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    Frame::decode(bytes)
}

/// Decodes one websocket binary message; the payload shares `bytes` (no copy).
pub fn decode_shared(bytes: &Bytes) -> Result<Frame, FrameError> {
    Frame::decode_shared(bytes)
}

/// The `acknowledge` frame for `acked` (seq 0, flags 3, payload type 0, `docs/protocol.md` §8.2).
pub fn encode_ack(acked: &Frame, created_ms: u64) -> Bytes {
    Acknowledge::frame_for(acked, created_ms, Uuid::new_v4()).to_bytes()
}

/// The sequence number an `acknowledge` payload refers to.
pub fn acked_sequence_number(payload: &[u8]) -> Option<i64> {
    Acknowledge::from_payload(payload)
        .ok()
        .map(|ack| ack.acknowledged_message_sequence_number)
}

/// The `channel_closed` body of `docs/protocol.md` §10.1.
pub fn channel_closed_payload(
    session_id: &str,
    target: &str,
    output: &str,
    created_ms: u64,
) -> Bytes {
    let created = i128::from(created_ms) * 1_000_000;
    let created_date = OffsetDateTime::from_unix_timestamp_nanos(created)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    ChannelClosed {
        message_id: Uuid::new_v4().hyphenated().to_string(),
        created_date,
        destination_id: target.to_string(),
        session_id: session_id.to_string(),
        message_type: MessageType::CHANNEL_CLOSED.to_string(),
        schema_version: 1,
        output: output.to_string(),
    }
    .to_bytes()
}

/// Milliseconds since the epoch (never 0: receivers reject a zero CreatedDate).
pub fn system_clock_ms() -> u64 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(1);
    u64::try_from(millis).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_the_given_header() {
        let bytes = encode(
            MessageType::OutputStreamData,
            5,
            0,
            1,
            b"hi",
            1_700_000_000_000,
        );
        let frame = decode(&bytes).unwrap();
        assert_eq!(frame.message_type, MessageType::OutputStreamData);
        assert_eq!((frame.sequence_number, frame.flags), (5, 0));
        assert_eq!(frame.payload_type, PayloadType::Output);
        assert_eq!(&frame.payload[..], b"hi");
        let ack = decode(&encode_ack(&frame, 1)).unwrap();
        assert_eq!(ack.message_type, MessageType::Acknowledge);
        assert_eq!((ack.sequence_number, ack.flags), (0, 3));
        assert_eq!(acked_sequence_number(&ack.payload), Some(5));
        assert_eq!(acked_sequence_number(b"not json"), None);
    }

    #[test]
    fn channel_closed_has_the_documented_fields() {
        let payload = channel_closed_payload("sid", "ecs:c_t_r", "", 1_704_067_200_000);
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["CreatedDate"], "2024-01-01T00:00:00Z");
        assert_eq!(json["DestinationId"], "ecs:c_t_r");
        assert_eq!(json["Output"], "");
        assert!(json["MessageId"].as_str().unwrap().len() == 36);
    }
}
