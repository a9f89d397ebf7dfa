//! Golden frames from the reference plugin's serializer: the codec must encode each vector's
//! fields to its exact wire bytes and decode them back. The vectors are in
//! `host/tests/fixtures/ssm-frames.json`. The file and every vector the tests name are required:
//! a missing file, a malformed one or a missing vector fails the test rather than skipping it.

use bytes::Bytes;
use ecs_exec::channel::frame::{Frame, MessageType, PayloadType};
use serde::Deserialize;
use uuid::Uuid;

const VECTORS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ssm-frames.json"
);

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    message_type: String,
    schema_version: u32,
    created_date: u64,
    sequence_number: i64,
    flags: u64,
    message_id: String,
    payload_type: u32,
    payload_hex: String,
    wire_hex: String,
}

fn load() -> Vec<Vector> {
    load_from(VECTORS_PATH)
}

fn load_from(path: &str) -> Vec<Vector> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!("golden frame file {path} is required but could not be read: {error}")
    });
    let file: VectorFile = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("golden frame file {path} is malformed: {error}"));
    let names: Vec<&str> = file.vectors.iter().map(|v| v.name.as_str()).collect();
    for required in REQUIRED_VECTORS {
        assert!(
            names.contains(required),
            "golden frame file {path} lacks the vector {required:?}; it has {names:?}"
        );
    }
    file.vectors
}

/// Every vector the file must hold: each kind of frame the codec handles, and each one a test
/// below checks by name.
const REQUIRED_VECTORS: &[&str] = &[
    "input_text",
    "input_binary_all_bytes",
    "output_text",
    "acknowledge",
    "size",
    "handshake_response",
    "exit_code",
    "large_seq",
];

#[test]
#[should_panic(expected = "is required but could not be read")]
fn a_missing_golden_file_fails_instead_of_passing() {
    load_from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/no-such-frames.json"
    ));
}

#[test]
#[should_panic(expected = "lacks the vector \"input_text\"")]
fn a_golden_file_without_a_named_vector_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("frames.json");
    std::fs::write(&path, r#"{"vectors": []}"#).expect("write");
    load_from(path.to_str().expect("utf-8 temp path"));
}

fn frame_of(vector: &Vector) -> Frame {
    Frame {
        message_type: MessageType::from_name(&vector.message_type).expect("vector type name"),
        schema_version: vector.schema_version,
        created_date: vector.created_date,
        sequence_number: vector.sequence_number,
        flags: vector.flags,
        message_id: Uuid::parse_str(&vector.message_id).expect("vector uuid"),
        payload_type: PayloadType::from_u32(vector.payload_type),
        payload: Bytes::from(hex::decode(&vector.payload_hex).expect("payload hex")),
    }
}

#[test]
fn every_golden_vector_encodes_byte_exactly() {
    for vector in load() {
        let wire = hex::decode(&vector.wire_hex).expect("wire hex");
        let encoded = frame_of(&vector).to_bytes();
        assert_eq!(
            hex::encode(&encoded),
            hex::encode(&wire),
            "vector {} encodes differently",
            vector.name
        );
    }
}

#[test]
fn every_golden_vector_decodes_to_its_fields() {
    for vector in load() {
        let wire = hex::decode(&vector.wire_hex).expect("wire hex");
        let decoded = Frame::decode(&wire)
            .unwrap_or_else(|error| panic!("vector {} fails to decode: {error}", vector.name));
        assert_eq!(decoded, frame_of(&vector), "vector {}", vector.name);
        assert_eq!(
            decoded.message_id.hyphenated().to_string(),
            vector.message_id
        );
        let shared = Frame::decode_shared(&Bytes::from(wire)).expect("shared decode");
        assert_eq!(shared, decoded, "vector {}", vector.name);
    }
}

#[test]
fn golden_json_payloads_parse_with_the_payload_types() {
    use ecs_exec::channel::payload::{
        Acknowledge, HandshakeResponse, TerminalSize, parse_exit_code,
    };
    for vector in load() {
        let frame = frame_of(&vector);
        match vector.name.as_str() {
            "acknowledge" => {
                let ack = Acknowledge::from_payload(&frame.payload).expect("ack");
                assert_eq!(
                    ack.to_bytes(),
                    frame.payload,
                    "ack re-serialises byte-exactly"
                );
            }
            "size" => {
                let size = TerminalSize::from_payload(&frame.payload).expect("size");
                assert_eq!(size.to_bytes(), frame.payload);
            }
            "handshake_response" => {
                let response = HandshakeResponse::from_payload(&frame.payload).expect("response");
                assert_eq!(response.to_bytes(), frame.payload);
            }
            "exit_code" => assert_eq!(parse_exit_code(&frame.payload), Some(3)),
            _ => {}
        }
    }
}
