//! The errors of a data channel session: what the core found ([`ChannelError`],
//! [`HandshakeError`], [`KmsError`]) and what the driver reports of its websocket
//! ([`TransportError`]). All are plain data (`Clone`, `Eq`), so a session can keep reporting
//! the same one; none carries a token, a credential or key material.

use std::time::Duration;

/// A fatal channel failure. Once a session reports one it keeps reporting the same one (sticky).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A command was given after the session ended (channel_closed, `close()` or a failure).
    #[error("the data channel is closed")]
    SessionClosed,
    #[error("message {sequence_number} was not acknowledged after {attempts} retransmissions")]
    RetransmitExhausted { sequence_number: i64, attempts: u32 },
    #[error("no pong from the service within {timeout:?}: the connection is dead")]
    PongTimeout { timeout: Duration },
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("{0}")]
    Kms(#[from] KmsError),
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The connection dropped and every attempt to resume the session failed.
    #[error(
        "the data channel dropped and could not be resumed after {attempts} attempt(s) \
         (last: {reason})"
    )]
    ResumeFailed { attempts: u32, reason: String },
}

/// Why the optional handshake (docs/protocol.md §7) cannot complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the agent sent an unreadable handshake request: {reason}")]
    InvalidRequest { reason: String },
}

/// Why a KMS-encrypted session (README "KMS encryption") could not be set up or carried on.
/// `aws` fields hold what AWS said, on one line: code, message and request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// KMS refused GenerateDataKey to the identity running ecs-exec.
    #[error(
        "KMS denied kms:GenerateDataKey on key {key_id} {aws}: the identity running ecs-exec \
         needs kms:GenerateDataKey on {key_id} (the key of the cluster's ECS Exec \
         configuration), in its IAM policy and in the key policy"
    )]
    GenerateDataKeyDenied { key_id: String, aws: String },
    #[error(
        "KMS key {key_id} of the cluster's ECS Exec configuration was not found {aws}: check \
         executeCommandConfiguration.kmsKeyId of the cluster, and the region"
    )]
    KeyNotFound { key_id: String, aws: String },
    #[error(
        "KMS key {key_id} of the cluster's ECS Exec configuration is disabled {aws}: enable \
         the key, or change executeCommandConfiguration.kmsKeyId of the cluster"
    )]
    KeyDisabled { key_id: String, aws: String },
    #[error("no usable AWS credentials for kms:GenerateDataKey on key {key_id}: {detail}")]
    NoCredentials { key_id: String, detail: String },
    /// Throttled, unreachable, timed out or failed on the AWS side: worth another try.
    #[error(
        "KMS GenerateDataKey on key {key_id} failed: {detail}; check the network path to the \
         KMS endpoint (AWS_ENDPOINT_URL_KMS) and try again"
    )]
    Unavailable { key_id: String, detail: String },
    /// Any other refusal of the call.
    #[error("KMS GenerateDataKey on key {key_id} was rejected {aws}")]
    Rejected { key_id: String, aws: String },
    /// The encryption context needs the container's runtime id, which ECS did not report.
    #[error(
        "the session must be encrypted with KMS key {key_id}, but DescribeTasks reported no \
         runtimeId for container {container} of task {task_id}, which the encryption context \
         needs; wait until the container is running and try again"
    )]
    NoRuntimeId {
        key_id: String,
        task_id: String,
        container: String,
    },
    /// The session ended after we answered the handshake and before it completed.
    #[error(
        "the agent ended the session during the KMS handshake{}: usually the task role \
         lacks kms:Decrypt on key {key_id}, or the key policy does not let the task role use \
         it; check both",
        closed_detail(.detail)
    )]
    AgentEndedHandshake { key_id: String, detail: String },
    #[error(
        "the agent did not complete the KMS handshake within {waited:?} (key {key_id}): \
         usually the task role lacks kms:Decrypt on the key, the key policy forbids it, or the \
         agent refused the encryption challenge; check the task role, the key policy and the \
         agent's log"
    )]
    HandshakeTimeout { key_id: String, waited: Duration },
    #[error("encrypted data channel: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The agent broke the order or the format of the KMS handshake.
    #[error("the agent broke the KMS handshake: {reason}")]
    Protocol { reason: String },
    #[error("the agent asked for KMS encryption (key {key_id}) but no KMS client is set up")]
    NoKeySource { key_id: String },
}

fn closed_detail(detail: &str) -> String {
    if detail.trim().is_empty() {
        String::new()
    } else {
        format!(" ({})", detail.trim())
    }
}

/// Why the websocket failed. Messages carry no tokens or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("invalid stream URL: {reason}")]
    InvalidUrl { reason: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("proxy {proxy} refused the tunnel: {reason}")]
    Proxy { proxy: String, reason: String },
    #[error("TLS failure talking to {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("the websocket handshake was rejected with HTTP status {status}")]
    HandshakeRejected { status: u16 },
    #[error("timed out after {timeout:?} opening the websocket")]
    ConnectTimeout { timeout: Duration },
    #[error(
        "the service closed the data channel before sending anything (token rejected or expired?){}",
        close_detail(.code, .reason)
    )]
    TokenRejected { code: Option<u16>, reason: String },
    #[error("the data channel connection closed mid-session{}", close_detail(.code, .reason))]
    ClosedMidway { code: Option<u16>, reason: String },
    #[error("websocket protocol error: {reason}")]
    Protocol { reason: String },
    #[error("websocket I/O error: {reason}")]
    Io { reason: String },
}

fn close_detail(code: &Option<u16>, reason: &str) -> String {
    match (code, reason.is_empty()) {
        (Some(code), true) => format!(" (close code {code})"),
        (Some(code), false) => format!(" (close code {code}: {reason})"),
        (None, true) => String::new(),
        (None, false) => format!(" ({reason})"),
    }
}
