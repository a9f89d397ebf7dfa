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
         (last: {last})"
    )]
    ResumeFailed { attempts: u32, last: ResumeError },
}

/// What the last attempt to resume a dropped data channel ran into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No attempt was made (the policy allows none): the drop itself.
    #[error("{0}")]
    Dropped(Box<ChannelError>),
    /// The connection dropped again before carrying any data, as often as attempts are allowed.
    #[error("every reopened connection dropped before any data: {0}")]
    NoDataAfterReopen(Box<ChannelError>),
    /// The resumer (SSM ResumeSession, in the host) failed: its one-line message.
    #[error("{message}")]
    ResumeCall { message: String },
    #[error("timed out after {timeout:?} reopening the websocket")]
    ReopenTimeout { timeout: Duration },
    #[error("{0}")]
    Dial(TransportError),
    /// The session refused the new connection: it had ended meanwhile.
    #[error("{0}")]
    Reconnect(Box<ChannelError>),
}

/// Why the optional handshake (docs/protocol.md §7) cannot complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the agent sent an unreadable handshake request: {0}")]
    InvalidRequest(InvalidHandshakeRequest),
}

/// What is wrong with the agent's HandshakeRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHandshakeRequest {
    /// Not the JSON of a HandshakeRequest: the parser's message.
    #[error("{detail}")]
    Json { detail: String },
    #[error("it asked for KMS encryption twice")]
    KmsTwice,
    #[error("its KMSEncryption action names no KMSKeyId")]
    NoKmsKeyId,
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
        .how.detail()
    )]
    AgentEndedHandshake {
        key_id: String,
        how: HandshakeEnding,
    },
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
    #[error("the agent broke the KMS handshake: {0}")]
    Protocol(KmsProtocolError),
    #[error("the agent asked for KMS encryption (key {key_id}) but no KMS client is set up")]
    NoKeySource { key_id: String },
}

/// How the agent broke the order or the format of the KMS handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsProtocolError {
    #[error("output arrived before the data key was exchanged")]
    OutputBeforeDataKey,
    #[error("an encryption challenge arrived before the data key was exchanged")]
    ChallengeBeforeDataKey,
    /// Not the JSON of an encryption challenge: the parser's message.
    #[error("{detail}")]
    ChallengeJson { detail: String },
    #[error("the encryption challenge is not base64")]
    ChallengeNotBase64,
    #[error("HandshakeComplete arrived before our answer to KMSEncryption")]
    CompleteBeforeAnswer,
}

/// How a session ended during the KMS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeEnding {
    /// The agent sent channel_closed: its output text, as it sent it.
    ChannelClosed { output: String },
    /// The connection went down (the agent closes the socket of a session it gives up on).
    LinkLost(Box<ChannelError>),
}

impl HandshakeEnding {
    /// The ending's part of an error message: empty, or ` (…)`.
    fn detail(&self) -> String {
        match self {
            Self::ChannelClosed { output } if output.trim().is_empty() => String::new(),
            Self::ChannelClosed { output } => format!(" ({})", output.trim()),
            Self::LinkLost(reason) => format!(" ({reason})"),
        }
    }
}

/// Why the websocket failed. Messages carry no tokens or credentials. A `reason` field is a
/// foreign error's message (the OS, the TLS or websocket library); our own findings are typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("invalid stream URL: {0}")]
    InvalidUrl(InvalidUrl),
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("proxy {proxy} refused the tunnel: {problem}")]
    Proxy { proxy: String, problem: ProxyError },
    #[error("TLS failure talking to {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("the websocket handshake was rejected with HTTP status {status}")]
    HandshakeRejected { status: u16 },
    #[error("timed out after {timeout:?} opening the websocket")]
    ConnectTimeout { timeout: Duration },
    #[error(
        "the service closed the data channel before sending anything (token rejected or expired?){}",
        .0.detail()
    )]
    TokenRejected(Closure),
    #[error("the data channel connection closed mid-session{}", .0.detail())]
    ClosedMidway(Closure),
    #[error("websocket protocol error: {reason}")]
    Protocol { reason: String },
    #[error("websocket I/O error: {reason}")]
    Io { reason: String },
}

/// What is wrong with a stream URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUrl {
    #[error("the scheme must be ws:// or wss://")]
    Scheme,
    #[error("the host or port is malformed")]
    HostOrPort,
    /// The websocket library refused it: its message.
    #[error("{reason}")]
    Rejected { reason: String },
}

/// Why an HTTP CONNECT proxy did not give us a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not an http://host:port URL")]
    NotHttpUrl,
    /// Writing the CONNECT request failed: the OS's message.
    #[error("{reason}")]
    Write { reason: String },
    /// Reading the reply failed: the OS's message.
    #[error("reading the reply: {reason}")]
    Read { reason: String },
    #[error("reply header too long")]
    ReplyTooLong,
    /// The proxy answered with a status other than 200: its status line, as it sent it.
    #[error("answered {status_line:?}")]
    Refused { status_line: String },
}

/// How a websocket connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closure {
    /// The service sent a close frame: its code and reason, as it sent them.
    CloseFrame { code: Option<u16>, reason: String },
    /// The connection ended without a close frame.
    Dropped,
    /// The connection was reset without a close frame.
    Reset,
    /// Reading or writing the socket failed: the websocket library's message.
    Io { reason: String },
}

impl Closure {
    /// The closure's part of an error message: empty, or ` (…)`.
    fn detail(&self) -> String {
        match self {
            Self::CloseFrame {
                code: Some(code),
                reason,
            } if reason.is_empty() => format!(" (close code {code})"),
            Self::CloseFrame {
                code: Some(code),
                reason,
            } => format!(" (close code {code}: {reason})"),
            Self::CloseFrame { code: None, reason } if !reason.is_empty() => format!(" ({reason})"),
            Self::CloseFrame { code: None, .. } | Self::Dropped => String::new(),
            Self::Reset => " (reset without a close frame)".to_owned(),
            Self::Io { reason } => format!(" ({reason})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closure_is_told_as_the_service_closed_it() {
        let closed = |closure| TransportError::ClosedMidway(closure).to_string();
        let prefix = "the data channel connection closed mid-session";
        let frame = |code, reason: &str| Closure::CloseFrame {
            code,
            reason: reason.to_owned(),
        };
        assert_eq!(closed(Closure::Dropped), prefix);
        assert_eq!(closed(frame(None, "")), prefix);
        assert_eq!(closed(frame(None, "bye")), format!("{prefix} (bye)"));
        assert_eq!(
            closed(frame(Some(1000), "")),
            format!("{prefix} (close code 1000)")
        );
        assert_eq!(
            closed(frame(Some(1008), "token expired")),
            format!("{prefix} (close code 1008: token expired)")
        );
        assert_eq!(
            closed(Closure::Reset),
            format!("{prefix} (reset without a close frame)")
        );
    }

    #[test]
    fn an_ending_during_the_kms_handshake_says_how_it_ended() {
        let ended = |how| {
            KmsError::AgentEndedHandshake {
                key_id: "k".to_owned(),
                how,
            }
            .to_string()
        };
        let closed = |output: &str| HandshakeEnding::ChannelClosed {
            output: output.to_owned(),
        };
        assert!(
            ended(closed(" "))
                .starts_with("the agent ended the session during the KMS handshake: ")
        );
        assert!(
            ended(closed(" bye\n"))
                .starts_with("the agent ended the session during the KMS handshake (bye): ")
        );
        let lost = HandshakeEnding::LinkLost(Box::new(ChannelError::Transport(
            TransportError::ClosedMidway(Closure::Reset),
        )));
        assert!(ended(lost).starts_with(
            "the agent ended the session during the KMS handshake (the data channel connection \
             closed mid-session (reset without a close frame)): "
        ));
    }

    #[test]
    fn a_failed_resume_names_what_its_last_attempt_ran_into() {
        let drop = ChannelError::Transport(TransportError::ClosedMidway(Closure::Dropped));
        let failed = ChannelError::ResumeFailed {
            attempts: 5,
            last: ResumeError::NoDataAfterReopen(Box::new(drop)),
        };
        assert_eq!(
            failed.to_string(),
            "the data channel dropped and could not be resumed after 5 attempt(s) (last: every \
             reopened connection dropped before any data: the data channel connection closed \
             mid-session)"
        );
        let refused = TransportError::Proxy {
            proxy: "proxy:3128".to_owned(),
            problem: ProxyError::Refused {
                status_line: "HTTP/1.1 407 Proxy Authentication Required".to_owned(),
            },
        };
        assert_eq!(
            refused.to_string(),
            "proxy proxy:3128 refused the tunnel: answered \"HTTP/1.1 407 Proxy Authentication \
             Required\""
        );
    }
}
