//! The binary message codec of the SSM data channel ("ClientMessage" / "AgentMessage").
//!
//! Owns the 120-byte header of docs/protocol.md §4 (big-endian integers, space-padded type,
//! swapped UUID halves, SHA-256 payload digest) and the receiver checks of §4.3–4.4. Decoding
//! untrusted bytes never panics: every malformed frame is a typed [`FrameError`].
//! It holds no session state, does no IO and reads no clock: `created_date` is a field the
//! caller fills, so golden frames stay byte-stable. It knows no JSON body: an acknowledge
//! frame is built in `payload.rs` (`Acknowledge::frame_for`). Both the client session and the
//! emulator's agent use it; reliability policy lives elsewhere.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// Value always written in the HeaderLength field: the offset of PayloadLength.
pub const HEADER_LENGTH: u32 = 116;
/// Bytes in a frame before the payload (header plus the PayloadLength field).
pub const FRAME_OVERHEAD: usize = 120;
/// The only schema version in use.
pub const SCHEMA_VERSION: u32 = 1;
/// Flags bit 0: first message of a stream (the agent sets it on output seq 0).
pub const FLAG_SYN: u64 = 1;
/// Flags bit 1: set (with SYN) on acknowledge and other non-stream messages.
pub const FLAG_FIN: u64 = 2;
/// Width of the MessageType field.
pub const MESSAGE_TYPE_LEN: usize = 32;

const OFFSET_MESSAGE_TYPE: usize = 4;
const OFFSET_SCHEMA_VERSION: usize = 36;
const OFFSET_CREATED_DATE: usize = 40;
const OFFSET_SEQUENCE_NUMBER: usize = 48;
const OFFSET_FLAGS: usize = 56;
const OFFSET_MESSAGE_ID: usize = 64;
const OFFSET_PAYLOAD_DIGEST: usize = 80;
const OFFSET_PAYLOAD_TYPE: usize = 112;
const OFFSET_PAYLOAD_LENGTH: usize = 116;

/// The 32-byte MessageType field (docs/protocol.md §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    InputStreamData,
    OutputStreamData,
    Acknowledge,
    ChannelClosed,
    StartPublication,
    PausePublication,
    AgentSessionState,
    /// A name this codec does not know; kept so a receiver can log and drop it.
    Other(UnknownMessageType),
}

/// A message type name outside §5: printable ASCII, 1 to 32 bytes, no surrounding spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnknownMessageType(String);

impl UnknownMessageType {
    /// Validates a name so that it can be written into the 32-byte field and read back unchanged.
    pub fn new(name: &str) -> Result<Self, FrameError> {
        let printable = name
            .bytes()
            .all(|byte| byte.is_ascii_graphic() || byte == b' ');
        if name.is_empty() || name.len() > MESSAGE_TYPE_LEN || !printable || name.trim() != name {
            return Err(FrameError::InvalidMessageTypeName);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl MessageType {
    pub const INPUT_STREAM_DATA: &'static str = "input_stream_data";
    pub const OUTPUT_STREAM_DATA: &'static str = "output_stream_data";
    pub const ACKNOWLEDGE: &'static str = "acknowledge";
    pub const CHANNEL_CLOSED: &'static str = "channel_closed";
    pub const START_PUBLICATION: &'static str = "start_publication";
    pub const PAUSE_PUBLICATION: &'static str = "pause_publication";
    pub const AGENT_SESSION_STATE: &'static str = "agent_session_state";

    /// Maps a wire name (already stripped of padding) to a type; unknown names become `Other`.
    pub fn from_name(name: &str) -> Result<Self, FrameError> {
        Ok(match name {
            Self::INPUT_STREAM_DATA => Self::InputStreamData,
            Self::OUTPUT_STREAM_DATA => Self::OutputStreamData,
            Self::ACKNOWLEDGE => Self::Acknowledge,
            Self::CHANNEL_CLOSED => Self::ChannelClosed,
            Self::START_PUBLICATION => Self::StartPublication,
            Self::PAUSE_PUBLICATION => Self::PausePublication,
            Self::AGENT_SESSION_STATE => Self::AgentSessionState,
            other => Self::Other(UnknownMessageType::new(other)?),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::InputStreamData => Self::INPUT_STREAM_DATA,
            Self::OutputStreamData => Self::OUTPUT_STREAM_DATA,
            Self::Acknowledge => Self::ACKNOWLEDGE,
            Self::ChannelClosed => Self::CHANNEL_CLOSED,
            Self::StartPublication => Self::START_PUBLICATION,
            Self::PausePublication => Self::PAUSE_PUBLICATION,
            Self::AgentSessionState => Self::AGENT_SESSION_STATE,
            Self::Other(name) => name.as_str(),
        }
    }

    /// Stream-data messages carry a sequence number and must be acknowledged.
    pub fn is_stream_data(&self) -> bool {
        matches!(self, Self::InputStreamData | Self::OutputStreamData)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PayloadType field (docs/protocol.md §6). Unknown values are preserved in `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// 0: used by acknowledge, channel_closed and other non-stream messages.
    Undefined,
    Output,
    Error,
    Size,
    Parameter,
    HandshakeRequest,
    HandshakeResponse,
    HandshakeComplete,
    EncChallengeRequest,
    EncChallengeResponse,
    Flag,
    StdErr,
    ExitCode,
    Other(u32),
}

impl PayloadType {
    pub fn from_u32(value: u32) -> Self {
        match value {
            0 => Self::Undefined,
            1 => Self::Output,
            2 => Self::Error,
            3 => Self::Size,
            4 => Self::Parameter,
            5 => Self::HandshakeRequest,
            6 => Self::HandshakeResponse,
            7 => Self::HandshakeComplete,
            8 => Self::EncChallengeRequest,
            9 => Self::EncChallengeResponse,
            10 => Self::Flag,
            11 => Self::StdErr,
            12 => Self::ExitCode,
            other => Self::Other(other),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            Self::Undefined => 0,
            Self::Output => 1,
            Self::Error => 2,
            Self::Size => 3,
            Self::Parameter => 4,
            Self::HandshakeRequest => 5,
            Self::HandshakeResponse => 6,
            Self::HandshakeComplete => 7,
            Self::EncChallengeRequest => 8,
            Self::EncChallengeResponse => 9,
            Self::Flag => 10,
            Self::StdErr => 11,
            Self::ExitCode => 12,
            Self::Other(other) => other,
        }
    }
}

/// Why a received frame was rejected. None of these is fatal to a session: the frame is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is shorter than the {FRAME_OVERHEAD}-byte header")]
    TooShort { len: usize },
    #[error("header length {header_length} is below the minimum {HEADER_LENGTH}")]
    HeaderLengthTooSmall { header_length: u32 },
    #[error(
        "frame of {frame_len} bytes disagrees with header length {header_length} and payload length {payload_length}"
    )]
    LengthMismatch {
        frame_len: usize,
        header_length: u32,
        payload_length: u32,
    },
    #[error("message type is not valid UTF-8")]
    MessageTypeNotUtf8,
    #[error("message type is empty")]
    EmptyMessageType,
    #[error("message type name is not 1-32 printable ASCII characters")]
    InvalidMessageTypeName,
    #[error("created date is zero")]
    ZeroCreatedDate,
    #[error("payload digest does not match the payload")]
    DigestMismatch,
}

/// One data-channel message, decoded. `payload` is exactly the bytes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub message_type: MessageType,
    pub schema_version: u32,
    /// Unix epoch milliseconds; receivers reject 0 (except on publication messages).
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    /// The canonical (un-swapped) UUID; the codec swaps its halves on the wire.
    pub message_id: Uuid,
    pub payload_type: PayloadType,
    pub payload: Bytes,
}

impl Frame {
    /// A stream-data frame (`input_stream_data` or `output_stream_data`).
    ///
    /// Flags follow what the reference peers send: SYN on output seq 0, otherwise 0.
    pub fn stream(
        message_type: MessageType,
        sequence_number: i64,
        payload_type: PayloadType,
        payload: Bytes,
        created_date: u64,
        message_id: Uuid,
    ) -> Self {
        let flags = if message_type == MessageType::OutputStreamData && sequence_number == 0 {
            FLAG_SYN
        } else {
            0
        };
        Self {
            message_type,
            schema_version: SCHEMA_VERSION,
            created_date,
            sequence_number,
            flags,
            message_id,
            payload_type,
            payload,
        }
    }

    /// A non-stream frame (acknowledge, channel_closed, publication, agent_session_state):
    /// sequence number 0, flags SYN|FIN, payload type 0.
    pub fn control(
        message_type: MessageType,
        payload: Bytes,
        created_date: u64,
        message_id: Uuid,
    ) -> Self {
        Self {
            message_type,
            schema_version: SCHEMA_VERSION,
            created_date,
            sequence_number: 0,
            flags: FLAG_SYN | FLAG_FIN,
            message_id,
            payload_type: PayloadType::Undefined,
            payload,
        }
    }

    /// Bytes this frame occupies on the wire.
    pub fn encoded_len(&self) -> usize {
        FRAME_OVERHEAD + self.payload.len()
    }

    /// Appends the wire form to `dst`. Payloads longer than `u32::MAX` cannot be framed; the
    /// length field saturates and receivers reject the frame (no caller in this crate makes one).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u32(HEADER_LENGTH);
        let name = self.message_type.as_str().as_bytes();
        let name = name.get(..MESSAGE_TYPE_LEN).unwrap_or(name);
        dst.put_slice(name);
        dst.put_bytes(b' ', MESSAGE_TYPE_LEN - name.len());
        dst.put_u32(self.schema_version);
        dst.put_u64(self.created_date);
        dst.put_i64(self.sequence_number);
        dst.put_u64(self.flags);
        let id = self.message_id.as_bytes();
        dst.put_slice(&id[8..16]);
        dst.put_slice(&id[0..8]);
        dst.put_slice(sha256(&self.payload).as_ref());
        dst.put_u32(self.payload_type.as_u32());
        dst.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        dst.put_slice(&self.payload);
    }

    /// The wire form as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes one whole websocket message, copying the payload.
    pub fn decode(src: &[u8]) -> Result<Self, FrameError> {
        let (header, payload) = parse(src)?;
        Ok(header.into_frame(Bytes::copy_from_slice(payload)))
    }

    /// Decodes one whole websocket message; the payload shares `src`'s storage (no copy).
    pub fn decode_shared(src: &Bytes) -> Result<Self, FrameError> {
        let (header, payload) = parse(src)?;
        let start = src.len() - payload.len();
        Ok(header.into_frame(src.slice(start..)))
    }
}

struct Header {
    message_type: MessageType,
    schema_version: u32,
    created_date: u64,
    sequence_number: i64,
    flags: u64,
    message_id: Uuid,
    payload_type: PayloadType,
}

impl Header {
    fn into_frame(self, payload: Bytes) -> Frame {
        Frame {
            message_type: self.message_type,
            schema_version: self.schema_version,
            created_date: self.created_date,
            sequence_number: self.sequence_number,
            flags: self.flags,
            message_id: self.message_id,
            payload_type: self.payload_type,
            payload,
        }
    }
}

fn sha256(bytes: &[u8]) -> aws_lc_rs::digest::Digest {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
}

fn array_at<const N: usize>(src: &[u8], offset: usize) -> [u8; N] {
    // Callers have checked `src.len() >= FRAME_OVERHEAD`, and every field ends within it; the
    // zero fallback only keeps this total.
    src.get(offset..offset + N)
        .and_then(|field| <[u8; N]>::try_from(field).ok())
        .unwrap_or([0; N])
}

/// Structural and §4.4 checks; returns the header and the payload slice.
fn parse(src: &[u8]) -> Result<(Header, &[u8]), FrameError> {
    if src.len() < FRAME_OVERHEAD {
        return Err(FrameError::TooShort { len: src.len() });
    }
    let header_length = u32::from_be_bytes(array_at(src, 0));
    if header_length < HEADER_LENGTH {
        return Err(FrameError::HeaderLengthTooSmall { header_length });
    }
    let payload_length = u32::from_be_bytes(array_at(src, OFFSET_PAYLOAD_LENGTH));
    let expected_len = u64::from(header_length) + 4 + u64::from(payload_length);
    if u64::try_from(src.len()).ok() != Some(expected_len) {
        return Err(FrameError::LengthMismatch {
            frame_len: src.len(),
            header_length,
            payload_length,
        });
    }
    // Readers take the payload as everything after HeaderLength + 4 (§4.3).
    let payload_start = usize::try_from(header_length)
        .ok()
        .and_then(|length| length.checked_add(4))
        .ok_or(FrameError::HeaderLengthTooSmall { header_length })?;
    let payload = src.get(payload_start..).unwrap_or_default();

    let name_field: [u8; MESSAGE_TYPE_LEN] = array_at(src, OFFSET_MESSAGE_TYPE);
    let name = std::str::from_utf8(&name_field).map_err(|_| FrameError::MessageTypeNotUtf8)?;
    let name = name.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if name.is_empty() {
        return Err(FrameError::EmptyMessageType);
    }
    let message_type = MessageType::from_name(name)?;

    let created_date = u64::from_be_bytes(array_at(src, OFFSET_CREATED_DATE));
    let publication = matches!(
        message_type,
        MessageType::StartPublication | MessageType::PausePublication
    );
    if !publication {
        if created_date == 0 {
            return Err(FrameError::ZeroCreatedDate);
        }
        let digest: [u8; 32] = array_at(src, OFFSET_PAYLOAD_DIGEST);
        if payload_length != 0 && sha256(payload).as_ref() != digest.as_slice() {
            return Err(FrameError::DigestMismatch);
        }
    }

    let swapped: [u8; 16] = array_at(src, OFFSET_MESSAGE_ID);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&swapped[8..]);
    id[8..].copy_from_slice(&swapped[..8]);

    let header = Header {
        message_type,
        schema_version: u32::from_be_bytes(array_at(src, OFFSET_SCHEMA_VERSION)),
        created_date,
        sequence_number: i64::from_be_bytes(array_at(src, OFFSET_SEQUENCE_NUMBER)),
        flags: u64::from_be_bytes(array_at(src, OFFSET_FLAGS)),
        message_id: Uuid::from_bytes(id),
        payload_type: PayloadType::from_u32(u32::from_be_bytes(array_at(src, OFFSET_PAYLOAD_TYPE))),
    };
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_DATE: u64 = 1_700_000_000_000;

    fn unhex(text: &str) -> Vec<u8> {
        let compact: String = text.split_whitespace().collect();
        hex::decode(compact).expect("test vector is valid hex")
    }

    fn id(text: &str) -> Uuid {
        Uuid::parse_str(text).expect("test uuid")
    }

    #[test]
    fn vector_a_input_stream_data() {
        let frame = Frame::stream(
            MessageType::InputStreamData,
            5,
            PayloadType::Output,
            Bytes::from_static(b"ls\r"),
            VECTOR_DATE,
            id("00112233-4455-4677-8899-aabbccddeeff"),
        );
        let wire = unhex(
            "00000074 696e7075745f73747265616d5f64617461202020202020202020202020202020
             00000001 0000018bcfe56800 0000000000000005 0000000000000000
             8899aabbccddeeff0011223344554677
             1d887ce0f8672e4914d9000e801cd74ecd805dd9366c0bc42dc16adc0197dc2f
             00000001 00000003 6c730d",
        );
        assert_eq!(frame.to_bytes().as_ref(), wire.as_slice());
        assert_eq!(Frame::decode(&wire), Ok(frame));
    }

    #[test]
    fn vector_c_output_stream_data_with_syn() {
        let frame = Frame::stream(
            MessageType::OutputStreamData,
            0,
            PayloadType::Output,
            Bytes::from_static(b"hi\r\n"),
            VECTOR_DATE,
            id("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        );
        assert_eq!(frame.flags, FLAG_SYN);
        let wire = unhex(
            "00000074 6f75747075745f73747265616d5f646174612020202020202020202020202020
             00000001 0000018bcfe56800 0000000000000000 0000000000000001
             8c7d9e0f1a2b3c4d0a1b2c3d4e5f4a6b
             44723dd4d0e0d46a3c7fa8aca254b61c27b6b5789f96177e82c80700409f1535
             00000001 00000004 68690d0a",
        );
        assert_eq!(frame.to_bytes().as_ref(), wire.as_slice());
        assert_eq!(Frame::decode(&wire), Ok(frame));
    }

    fn sample() -> Frame {
        Frame::stream(
            MessageType::InputStreamData,
            3,
            PayloadType::Output,
            Bytes::from_static(b"payload"),
            VECTOR_DATE,
            id("00112233-4455-4677-8899-aabbccddeeff"),
        )
    }

    #[test]
    fn short_frames_are_rejected_at_every_length() {
        let wire = sample().to_bytes();
        for len in 0..FRAME_OVERHEAD {
            assert_eq!(
                Frame::decode(&wire[..len]),
                Err(FrameError::TooShort { len })
            );
        }
    }

    #[test]
    fn truncated_or_extended_payload_is_a_length_mismatch() {
        let wire = sample().to_bytes();
        assert!(matches!(
            Frame::decode(&wire[..wire.len() - 1]),
            Err(FrameError::LengthMismatch { .. })
        ));
        let mut longer = wire.to_vec();
        longer.push(0);
        assert!(matches!(
            Frame::decode(&longer),
            Err(FrameError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn header_length_below_116_is_rejected() {
        let mut wire = sample().to_bytes().to_vec();
        wire[..4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            Frame::decode(&wire),
            Err(FrameError::HeaderLengthTooSmall { header_length: 0 })
        );
    }

    #[test]
    fn huge_header_length_is_a_mismatch_not_a_panic() {
        let mut wire = sample().to_bytes().to_vec();
        wire[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Frame::decode(&wire),
            Err(FrameError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn larger_header_length_moves_the_payload_start() {
        // A peer that writes HL = 120 with four extra header bytes: payload starts at 124.
        let frame = sample();
        let wire = frame.to_bytes();
        let mut longer = wire[..FRAME_OVERHEAD].to_vec();
        longer[..4].copy_from_slice(&120u32.to_be_bytes());
        longer.extend_from_slice(&[0xAA; 4]);
        longer.extend_from_slice(&frame.payload);
        assert_eq!(Frame::decode(&longer), Ok(frame));
    }

    #[test]
    fn bad_digest_is_rejected() {
        let mut wire = sample().to_bytes().to_vec();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(Frame::decode(&wire), Err(FrameError::DigestMismatch));
    }

    #[test]
    fn publication_messages_skip_validation() {
        let mut frame = Frame::control(
            MessageType::PausePublication,
            Bytes::from_static(b"{}"),
            0,
            Uuid::nil(),
        );
        let mut wire = frame.to_bytes().to_vec();
        wire[OFFSET_PAYLOAD_DIGEST] ^= 1;
        let decoded = Frame::decode(&wire).expect("publication frames are not validated");
        frame.created_date = 0;
        assert_eq!(decoded, frame);
    }

    #[test]
    fn zero_created_date_is_rejected() {
        let mut frame = sample();
        frame.created_date = 0;
        assert_eq!(
            Frame::decode(&frame.to_bytes()),
            Err(FrameError::ZeroCreatedDate)
        );
    }

    #[test]
    fn empty_payload_is_accepted_on_receive() {
        let mut frame = sample();
        frame.payload = Bytes::new();
        let mut wire = frame.to_bytes().to_vec();
        // The digest of an empty payload is not checked (§4.4 rule 3).
        wire[OFFSET_PAYLOAD_DIGEST..OFFSET_PAYLOAD_TYPE].fill(0);
        assert_eq!(Frame::decode(&wire), Ok(frame));
    }

    #[test]
    fn message_type_with_nul_padding_and_unknown_names() {
        let mut wire = sample().to_bytes().to_vec();
        let field = &mut wire[OFFSET_MESSAGE_TYPE..OFFSET_SCHEMA_VERSION];
        field.fill(0);
        field[..6].copy_from_slice(b"future");
        let decoded = Frame::decode(&wire).expect("unknown types decode");
        assert_eq!(decoded.message_type.as_str(), "future");
        assert!(matches!(decoded.message_type, MessageType::Other(_)));
        // And it re-encodes with space padding under the same name.
        let again = Frame::decode(&decoded.to_bytes()).expect("round trip");
        assert_eq!(again.message_type, decoded.message_type);
    }

    #[test]
    fn empty_and_non_utf8_message_types_are_rejected() {
        let mut wire = sample().to_bytes().to_vec();
        wire[OFFSET_MESSAGE_TYPE..OFFSET_SCHEMA_VERSION].fill(b' ');
        assert_eq!(Frame::decode(&wire), Err(FrameError::EmptyMessageType));
        wire[OFFSET_MESSAGE_TYPE] = 0xFF;
        assert_eq!(Frame::decode(&wire), Err(FrameError::MessageTypeNotUtf8));
        wire[OFFSET_MESSAGE_TYPE] = 0x07;
        assert_eq!(
            Frame::decode(&wire),
            Err(FrameError::InvalidMessageTypeName)
        );
    }

    #[test]
    fn unknown_payload_types_are_preserved() {
        let mut frame = sample();
        frame.payload_type = PayloadType::Other(77);
        assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
        for value in 0..20 {
            assert_eq!(PayloadType::from_u32(value).as_u32(), value);
        }
    }

    #[test]
    fn decode_shared_slices_without_copying() {
        let wire = sample().to_bytes();
        let frame = Frame::decode_shared(&wire).expect("decodes");
        assert_eq!(frame, sample());
        assert_eq!(frame.payload.as_ptr(), wire[FRAME_OVERHEAD..].as_ptr());
    }

    #[test]
    fn unknown_message_type_names_are_validated() {
        assert!(UnknownMessageType::new("interactive_shell").is_ok());
        assert!(UnknownMessageType::new("").is_err());
        assert!(UnknownMessageType::new(" padded").is_err());
        assert!(UnknownMessageType::new(&"x".repeat(33)).is_err());
        assert!(UnknownMessageType::new("tab\there").is_err());
    }
}
