//! The SSM Session Manager data channel (`docs/ssm-data-channel.md`), replacing
//! session-manager-plugin's transport.
//!
//! - [`frame`]: the binary message codec (pure, shared with the emulator's agent);
//! - [`payload`]: the JSON bodies (OpenDataChannel, acks, handshake, size, channel_closed);
//! - [`session`]: the sans-IO client core (sequence numbers, acks, retransmission, handshake);
//! - [`transport`]: the only async code, a tokio websocket driver around the core.
//!
//! Nothing here reads credentials or prints to stdout; the run layer decides what to show.

pub mod frame;
pub mod payload;
pub mod session;
pub mod transport;

use std::time::Duration;

/// A fatal channel failure. Once a session reports one it keeps reporting the same one (sticky).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum HandshakeError {
    #[error(
        "the agent requires KMS encryption (key {key_id}), which ecs-exec does not support; \
         disable the KMS key in the cluster's ECS Exec configuration"
    )]
    KmsEncryptionUnsupported { key_id: String },
    #[error("the agent sent an unreadable handshake request: {reason}")]
    InvalidRequest { reason: String },
}

/// Why the websocket failed. Messages carry no tokens or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
