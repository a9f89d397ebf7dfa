//! What a session reports to its driver: [`Event`]s in order (with the [`DataKeyRequest`] a
//! KMS handshake asks the driver to answer), and [`SessionStats`] counters.

use bytes::Bytes;

use crate::ChannelError;

/// What the session tells its user, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// In-order bytes of payload type 1 (terminal output or stdout).
    Output(Bytes),
    /// In-order bytes of payload type 11.
    Stderr(Bytes),
    /// Payload type 12, parsed.
    ExitCode(i32),
    /// The agent declared a session type in its handshake request.
    SessionType(String),
    /// The agent wants the session encrypted: the driver must call KMS GenerateDataKey and
    /// hand the result to [`Session::supply_data_key`]. The handshake waits until then.
    DataKeyRequested(DataKeyRequest),
    /// The handshake finished; a non-empty message is meant for the user.
    HandshakeComplete { customer_message: String },
    /// The service sent channel_closed: the session is over. `output` is its reason text.
    Closed { output: String },
    /// `close()` finished; `unacked_bytes` of input were still unacknowledged when it gave up.
    LocallyClosed { unacked_bytes: usize },
    /// A fatal error; reported once, then returned by every command.
    Lost { reason: ChannelError },
}

/// Counters for diagnostics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub frames_rejected: u64,
    pub duplicates_received: u64,
    pub reordered_buffered: u64,
    pub reorder_dropped: u64,
    pub retransmits: u64,
    pub acks_sent: u64,
    pub unmatched_acks: u64,
}

/// What the agent's `KMSEncryption` action asks the driver to get from KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRequest {
    /// The key to call GenerateDataKey with, as the agent named it.
    pub key_id: String,
    /// The agent's challenge string: it goes into the encryption context as
    /// `aws:ssm:RandomChallenge`, exactly as received.
    pub challenge: Option<String>,
}
