//! The SSM Session Manager data channel protocol (`docs/protocol.md`), sans-IO: no sockets, no
//! async runtime and no clock inside. Shared by the `ecs-exec` client and the emulator's agent.
//!
//! - [`frame`]: the binary message codec (header, message and payload types);
//! - [`payload`]: the JSON bodies (OpenDataChannel, acks, handshake, size, channel_closed);
//! - [`crypto`]: AES-256-GCM of KMS-encrypted sessions;
//! - [`session`]: the client core (sequence numbers, acks, retransmission, handshake), driven
//!   by bytes and time;
//! - the errors a session reports ([`ChannelError`] and its parts).
//!
//! The layers depend downwards only: `session` on `payload`, `frame` and `crypto`; `payload`
//! on `frame`; `frame` on nothing here.

pub mod crypto;
mod error;
pub mod frame;
pub mod payload;
pub mod session;

pub use error::{
    ChannelError, Closure, HandshakeEnding, HandshakeError, InvalidHandshakeRequest, InvalidUrl,
    KmsError, KmsProtocolError, ProxyError, ResumeError, TransportError,
};
