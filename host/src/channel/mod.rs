//! The SSM Session Manager data channel (`docs/protocol.md`), replacing
//! session-manager-plugin's transport.
//!
//! The protocol itself is the sans-IO crate `ecs-exec-wire`, re-exported here under the names
//! the rest of the host uses:
//! - [`frame`]: the binary message codec (shared with the emulator's agent);
//! - [`payload`]: the JSON bodies (OpenDataChannel, acks, handshake, size, channel_closed);
//! - [`session`]: the sans-IO client core (sequence numbers, acks, retransmission, handshake);
//! - [`crypto`]: AES-256-GCM of KMS-encrypted sessions.
//!
//! [`transport`] is the host's own part: the only async code, a tokio websocket driver around
//! the core. Nothing here reads credentials or prints to stdout; the run layer decides what to
//! show.

pub mod transport;

pub use ecs_exec_wire::{
    ChannelError, Closure, HandshakeEnding, HandshakeError, InvalidHandshakeRequest, InvalidUrl,
    KmsError, KmsProtocolError, ProxyError, ResumeError, TransportError, crypto, frame, payload,
    session,
};
