//! The JSON bodies carried on the data channel: the OpenDataChannel text frame, acknowledgements,
//! channel_closed, the handshake messages, terminal size and the exit-code text.
//!
//! Field names and order match the reference peers' (docs/protocol.md §3.2, §7, §8.2, §9.2,
//! §10.1), so serialised bytes equal the golden vectors. Parsing is lenient where peers differ
//! (missing fields default, a number where a string is expected) and never panics.
//! No framing and no policy here: see `frame.rs` and `session.rs`.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::frame::{Frame, MessageType};

/// Why a JSON payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} payload: {source}")]
pub struct PayloadError {
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

fn parse<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(bytes).map_err(|source| PayloadError { what, source })
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs cannot fail (no maps with non-string keys, no I/O).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The first (text) frame on every websocket connection (docs/protocol.md §3.2).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenDataChannel {
    pub message_schema_version: String,
    pub request_id: String,
    pub token_value: String,
    pub client_id: String,
    /// Sent by clients (the plugin since Oct 2024); servers must not require it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// Sent by agents instead of `client_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_instance_id: Option<String>,
}

impl OpenDataChannel {
    /// A client's open message: schema 1.0, the given request id, token and client id.
    pub fn client(request_id: &str, token: &str, client_id: &str, client_version: &str) -> Self {
        Self {
            message_schema_version: "1.0".to_owned(),
            request_id: request_id.to_owned(),
            token_value: token.to_owned(),
            client_id: client_id.to_owned(),
            client_version: Some(client_version.to_owned()),
            client_instance_id: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, PayloadError> {
        parse("OpenDataChannel", text.as_bytes())
    }
}

impl fmt::Debug for OpenDataChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token authenticates the session: never print it.
        f.debug_struct("OpenDataChannel")
            .field("message_schema_version", &self.message_schema_version)
            .field("request_id", &self.request_id)
            .field("token_value", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("client_version", &self.client_version)
            .field("client_instance_id", &self.client_instance_id)
            .finish()
    }
}

/// The body of an `acknowledge` message (docs/protocol.md §8.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Acknowledge {
    #[serde(default)]
    pub acknowledged_message_type: String,
    /// The canonical, lower-case UUID of the acked message.
    #[serde(default)]
    pub acknowledged_message_id: String,
    pub acknowledged_message_sequence_number: i64,
    #[serde(default = "default_true")]
    pub is_sequential_message: bool,
}

fn default_true() -> bool {
    true
}

impl Acknowledge {
    /// The `acknowledge` frame a receiver sends for `acked` (docs/protocol.md §8.2).
    pub fn frame_for(acked: &Frame, created_date: u64, message_id: Uuid) -> Frame {
        Frame::control(
            MessageType::Acknowledge,
            Self::for_frame(acked).to_bytes(),
            created_date,
            message_id,
        )
    }

    /// The ack a receiver sends for `frame`.
    pub fn for_frame(frame: &Frame) -> Self {
        Self {
            acknowledged_message_type: frame.message_type.as_str().to_owned(),
            acknowledged_message_id: frame.message_id.hyphenated().to_string(),
            acknowledged_message_sequence_number: frame.sequence_number,
            is_sequential_message: true,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("acknowledge", payload)
    }
}

/// The body of a `channel_closed` message (docs/protocol.md §10.1). Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ChannelClosed {
    pub message_id: String,
    /// RFC 3339 text; some senders write a number, which is accepted and kept as text.
    #[serde(deserialize_with = "string_or_number")]
    pub created_date: String,
    pub destination_id: String,
    pub session_id: String,
    pub message_type: String,
    pub schema_version: u32,
    /// Why the channel closed; empty on a normal end.
    pub output: String,
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl ChannelClosed {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("channel_closed", payload)
    }
}

/// Action types a HandshakeRequest may carry (docs/protocol.md §7.2).
pub mod action {
    pub const SESSION_TYPE: &str = "SessionType";
    pub const KMS_ENCRYPTION: &str = "KMSEncryption";
}

/// ActionStatus values in a HandshakeResponse (docs/protocol.md §7.3).
pub mod action_status {
    pub const SUCCESS: i64 = 1;
    pub const FAILED: i64 = 2;
    pub const UNSUPPORTED: i64 = 3;
}

/// Agent → client, payload type 5.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HandshakeRequest {
    pub agent_version: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub requested_client_actions: Vec<RequestedClientAction>,
}

/// One action in a HandshakeRequest; parameters depend on the action type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestedClientAction {
    pub action_type: String,
    pub action_parameters: serde_json::Value,
}

impl RequestedClientAction {
    /// A `SessionType` action for a shell-type session (`Properties` null).
    pub fn session_type(session_type: &str) -> Self {
        Self {
            action_type: action::SESSION_TYPE.to_owned(),
            action_parameters: serde_json::json!({"SessionType": session_type, "Properties": null}),
        }
    }

    /// A `KMSEncryption` action (README "KMS encryption"); `challenge` is sent by newer agents.
    pub fn kms_encryption(key_id: &str, challenge: Option<&str>) -> Self {
        let mut parameters = serde_json::json!({ "KMSKeyId": key_id });
        if let Some(challenge) = challenge {
            parameters["Challenge"] = serde_json::Value::from(challenge);
        }
        Self {
            action_type: action::KMS_ENCRYPTION.to_owned(),
            action_parameters: parameters,
        }
    }

    /// The parameters of a `KMSEncryption` action: the key id (required) and the optional
    /// challenge string; `None` when this is another action or the key id is missing.
    pub fn kms_parameters(&self) -> Option<KmsEncryptionParameters> {
        if self.action_type != action::KMS_ENCRYPTION {
            return None;
        }
        let key_id = self.action_parameters.get("KMSKeyId")?.as_str()?.to_owned();
        let challenge = self
            .action_parameters
            .get("Challenge")
            .and_then(|value| value.as_str())
            .map(str::to_owned);
        Some(KmsEncryptionParameters { key_id, challenge })
    }

    /// The `SessionType` parameter, when this is a SessionType action.
    pub fn session_type_name(&self) -> Option<&str> {
        if self.action_type != action::SESSION_TYPE {
            return None;
        }
        self.action_parameters.get("SessionType")?.as_str()
    }
}

/// What a `KMSEncryption` action asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsEncryptionParameters {
    /// The key to generate the data key under (usually an ARN).
    pub key_id: String,
    /// Newer agents' random challenge, to be echoed in the encryption context as is.
    pub challenge: Option<String>,
}

/// The `ActionResult` of our answer to a `KMSEncryption` action: the data key's ciphertext
/// blob (base64), a null hash, and the acknowledgement of the agent's challenge when it sent one.
pub fn kms_encryption_result(
    ciphertext_blob_base64: &str,
    challenge_acknowledged: bool,
) -> serde_json::Value {
    let mut result = serde_json::json!({
        "KMSCipherTextKey": ciphertext_blob_base64,
        "KMSCipherTextHash": null,
    });
    if challenge_acknowledged {
        result["ChallengeAcknowledgement"] = serde_json::Value::Bool(true);
    }
    result
}

/// Agent → client payload type 8 and client → agent type 9: `{"Challenge": "<base64>"}`,
/// where the base64 text is a sealed payload (nonce, ciphertext, tag).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptionChallenge {
    pub challenge: String,
}

impl EncryptionChallenge {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("encryption challenge", payload)
    }
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl HandshakeRequest {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("HandshakeRequest", payload)
    }
}

/// Client → agent, payload type 6.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HandshakeResponse {
    pub client_version: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub processed_client_actions: Vec<ProcessedClientAction>,
    /// `[]` when there is nothing to report, as the reference serializer writes it.
    #[serde(deserialize_with = "null_as_empty")]
    pub errors: Vec<String>,
}

/// The client's answer to one requested action, in the same order as the request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProcessedClientAction {
    pub action_type: String,
    pub action_status: i64,
    pub action_result: serde_json::Value,
    pub error: String,
}

impl HandshakeResponse {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("HandshakeResponse", payload)
    }
}

/// Agent → client, payload type 7.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HandshakeComplete {
    /// A Go duration: nanoseconds.
    pub handshake_time_to_complete: i64,
    pub customer_message: String,
}

impl HandshakeComplete {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("HandshakeComplete", payload)
    }
}

/// Client → agent, payload type 3: the terminal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub cols: u32,
    pub rows: u32,
}

impl TerminalSize {
    pub fn to_bytes(&self) -> Bytes {
        to_bytes(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        parse("size", payload)
    }
}

/// Reads the exit status from a payload-type-12 body: `EXIT_CODE: <n>` (the agent's form) or a
/// bare decimal number, surrounding whitespace ignored.
pub fn parse_exit_code(payload: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let number = text.strip_prefix("EXIT_CODE:").unwrap_or(text).trim();
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PayloadType;

    const VECTOR_DATE: u64 = 1_700_000_000_000;

    fn unhex(text: &str) -> Vec<u8> {
        let compact: String = text.split_whitespace().collect();
        hex::decode(compact).expect("test vector is valid hex")
    }

    fn id(text: &str) -> Uuid {
        Uuid::parse_str(text).expect("test uuid")
    }

    #[test]
    fn vector_b_acknowledge() {
        let acked = Frame::stream(
            MessageType::OutputStreamData,
            7,
            PayloadType::Output,
            Bytes::from_static(b"x"),
            VECTOR_DATE,
            id("9f3c2b1a-4d5e-4f60-8a7b-1c2d3e4f5a6b"),
        );
        let frame = Acknowledge::frame_for(
            &acked,
            VECTOR_DATE,
            id("fedcba98-7654-4321-8fed-cba987654321"),
        );
        let payload = br#"{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":"9f3c2b1a-4d5e-4f60-8a7b-1c2d3e4f5a6b","AcknowledgedMessageSequenceNumber":7,"IsSequentialMessage":true}"#;
        assert_eq!(frame.payload.as_ref(), payload.as_slice());
        let mut wire = unhex(
            "00000074 61636b6e6f776c65646765202020202020202020202020202020202020202020
             00000001 0000018bcfe56800 0000000000000000 0000000000000003
             8fedcba987654321fedcba9876544321
             9abd942365207ecde69b790470ad90a5e4cf73722ad072f611f721fdd1f1a44e
             00000000 000000b0",
        );
        wire.extend_from_slice(payload);
        assert_eq!(frame.to_bytes().as_ref(), wire.as_slice());
        let decoded = Frame::decode(&wire).expect("vector b decodes");
        assert_eq!(decoded, frame);
        let ack = Acknowledge::from_payload(&decoded.payload).expect("ack json");
        assert_eq!(ack.acknowledged_message_sequence_number, 7);
    }

    /// Found by the `payloads` fuzz target: without serde_json's exact float parsing a number
    /// in ActionParameters changed on every pass through the parser.
    #[test]
    fn handshake_request_numbers_survive_a_round_trip() {
        let payload = br#"{"AgentVersion":"da","RequestedClientActions":[{"ActionType":"x","ActionParameters":[3.333333333333333e+39]}]}"#;
        let once = HandshakeRequest::from_payload(payload).map(|r| r.to_bytes());
        let once = once.expect("the request parses");
        let twice = HandshakeRequest::from_payload(&once).map(|r| r.to_bytes());
        assert_eq!(twice.ok(), Some(once));
    }

    #[test]
    fn size_serialises_as_the_vector() {
        let size = TerminalSize {
            cols: 120,
            rows: 40,
        };
        assert_eq!(size.to_bytes().as_ref(), br#"{"cols":120,"rows":40}"#);
        assert_eq!(
            TerminalSize::from_payload(&size.to_bytes()).ok(),
            Some(size)
        );
    }

    #[test]
    fn handshake_response_serialises_as_the_vector() {
        let response = HandshakeResponse {
            client_version: "1.2.0.0".to_owned(),
            processed_client_actions: vec![ProcessedClientAction {
                action_type: action::SESSION_TYPE.to_owned(),
                action_status: action_status::SUCCESS,
                action_result: serde_json::Value::Null,
                error: String::new(),
            }],
            errors: Vec::new(),
        };
        assert_eq!(
            response.to_bytes().as_ref(),
            br#"{"ClientVersion":"1.2.0.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":[]}"#
        );
    }

    #[test]
    fn handshake_request_reads_session_type_and_kms() {
        let text = br#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[
            {"ActionType":"SessionType","ActionParameters":{"SessionType":"InteractiveCommands","Properties":null}},
            {"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"arn:aws:kms:x","Challenge":"AA=="}}]}"#;
        let request = HandshakeRequest::from_payload(text).expect("parses");
        assert_eq!(request.requested_client_actions.len(), 2);
        assert_eq!(
            request.requested_client_actions[0].session_type_name(),
            Some("InteractiveCommands")
        );
        assert_eq!(
            request.requested_client_actions[1].action_type,
            action::KMS_ENCRYPTION
        );
        let null_list = HandshakeRequest::from_payload(br#"{"RequestedClientActions":null}"#)
            .expect("null list");
        assert!(null_list.requested_client_actions.is_empty());
    }

    #[test]
    fn kms_action_parameters_and_result() {
        let action = RequestedClientAction::kms_encryption("arn:aws:kms:k", Some("Q2g="));
        assert_eq!(
            action.kms_parameters(),
            Some(KmsEncryptionParameters {
                key_id: "arn:aws:kms:k".to_owned(),
                challenge: Some("Q2g=".to_owned()),
            })
        );
        let old_agent = RequestedClientAction::kms_encryption("k", None);
        assert_eq!(old_agent.kms_parameters().map(|p| p.challenge), Some(None));
        let no_key = RequestedClientAction {
            action_type: action::KMS_ENCRYPTION.to_owned(),
            action_parameters: serde_json::json!({"KMSKeyId": 5}),
        };
        assert_eq!(no_key.kms_parameters(), None);
        assert_eq!(
            RequestedClientAction::session_type("x").kms_parameters(),
            None
        );

        let acknowledged = kms_encryption_result("YmxvYg==", true);
        assert_eq!(
            acknowledged,
            serde_json::json!({"KMSCipherTextKey": "YmxvYg==", "KMSCipherTextHash": null,
                "ChallengeAcknowledgement": true})
        );
        let plain = kms_encryption_result("YmxvYg==", false);
        assert_eq!(plain.get("ChallengeAcknowledgement"), None);
        assert!(plain["KMSCipherTextHash"].is_null());

        let challenge = EncryptionChallenge {
            challenge: "AAEC".to_owned(),
        };
        assert_eq!(challenge.to_bytes().as_ref(), br#"{"Challenge":"AAEC"}"#);
        assert!(EncryptionChallenge::from_payload(b"{}").is_err());
    }

    #[test]
    fn channel_closed_accepts_numeric_created_date_and_missing_fields() {
        let closed = ChannelClosed::from_payload(
            br#"{"CreatedDate":1700000000000,"Output":"bye","SchemaVersion":1}"#,
        )
        .expect("parses");
        assert_eq!(closed.created_date, "1700000000000");
        assert_eq!(closed.output, "bye");
        assert!(ChannelClosed::from_payload(b"{}").is_ok());
        assert!(ChannelClosed::from_payload(b"not json").is_err());
    }

    #[test]
    fn open_data_channel_key_order_and_redaction() {
        let open = OpenDataChannel::client("req", "secret-token", "client", "1.2.0.0");
        assert_eq!(
            open.to_json(),
            r#"{"MessageSchemaVersion":"1.0","RequestId":"req","TokenValue":"secret-token","ClientId":"client","ClientVersion":"1.2.0.0"}"#
        );
        assert!(!format!("{open:?}").contains("secret-token"));
        let agent = OpenDataChannel::from_json(
            r#"{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t","ClientId":"c","ClientInstanceId":"ecs:x"}"#,
        )
        .expect("agent form parses");
        assert_eq!(agent.client_instance_id.as_deref(), Some("ecs:x"));
    }

    #[test]
    fn exit_code_forms() {
        assert_eq!(parse_exit_code(b"EXIT_CODE: 3"), Some(3));
        assert_eq!(parse_exit_code(b"3"), Some(3));
        assert_eq!(parse_exit_code(b" 130\n"), Some(130));
        assert_eq!(parse_exit_code(b"EXIT_CODE: x"), None);
        assert_eq!(parse_exit_code(&[0xFF]), None);
    }
}
