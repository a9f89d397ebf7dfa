//! The client side of the data channel as a pure state machine (sans-IO, quinn-proto style).
//!
//! Owns both sequence counters, the unacked outgoing buffer and its retransmission (`docs/protocol.md` §8.4
//! RTO with Karn's rule and exponential backoff), the bounded out-of-order incoming buffer,
//! selective acks and duplicate re-acks, the optional handshake with its KMS encryption
//! (README "KMS encryption"), pause/start publication, keepalive pings with a pong deadline,
//! and channel_closed. It never touches a socket, tokio
//! or the system clock: time comes in as `now`, and the wall-clock `CreatedDate` of the frames
//! it makes from the [`Clock`] its driver hands it (the host's reads the system time).
//! What to do with output (stdout, stderr, exit status) is the caller's business.
//!
//! This file holds [`Session`], its public API and its life (open, keepalive, pause, close,
//! link loss, reconnect). The parts, each with its tests beside it:
//! - `send.rs`: the send buffer, retransmission and the window;
//! - `recv.rs`: in-order delivery, the reorder buffer and the acks we send;
//! - `timers.rs`: the session's deadlines;
//! - `handshake.rs`: the handshake and its KMS encryption;
//! - `events.rs`: what the session reports.

mod events;
mod handshake;
mod recv;
mod send;
#[cfg(test)]
mod testing;
mod timers;

pub use events::{DataKeyRequest, Event, SessionStats};
pub use handshake::DataKeyGrant;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::crypto::SessionCipher;
use crate::frame::{Frame, MessageType, PayloadType};
use crate::payload::{ChannelClosed, OpenDataChannel, TerminalSize};
use crate::{ChannelError, HandshakeEnding, KmsError};
use handshake::Kms;
use send::{RttEstimator, SendBuffer};
use timers::{Timer, TimerTable};

/// Payload of our keepalive pings, as the plugin sends it.
const PING_PAYLOAD: &[u8] = b"keepalive";

/// Where the wall-clock `CreatedDate` (Unix epoch milliseconds) stamped on our frames comes
/// from: the driver's input, as `now` is. The host's driver reads the system time.
pub trait Clock: Send {
    /// Milliseconds since the Unix epoch; must be non-zero for receivers to accept the frame.
    fn unix_millis(&self) -> u64;
}

/// A clock frozen at one instant, for byte-stable tests.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn unix_millis(&self) -> u64 {
        self.0
    }
}

/// Tunables of a [`Session`]. `Default` gives the values the run layer should use.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Fixed for the life of the process, the same across reconnects.
    pub client_id: Uuid,
    /// Sent in OpenDataChannel and the HandshakeResponse; agents want it above 1.2.295.
    pub client_version: String,
    /// Largest payload of one input message; larger writes are split. Must be at least 1.
    pub max_input_payload: usize,
    /// [`Session::can_send`] turns false once this many payload bytes are unacked.
    pub max_unacked_bytes: usize,
    /// ... or once this many messages are unacked (the agent's reorder buffer counts
    /// messages, so tiny writes must not flood it).
    pub max_unacked_frames: usize,
    /// Furthest ahead of the expected sequence number that a message is buffered.
    pub max_reorder_frames: usize,
    /// Payload bytes the out-of-order buffer may hold.
    pub max_reorder_bytes: usize,
    /// A message is given up on, failing the session, once it has been retransmitted this
    /// many times...
    pub max_retransmits: u32,
    /// ... and has gone unacknowledged this long since it was first sent. Both must hold:
    /// the timeout's backoff restarts whenever other messages are acknowledged, so a count
    /// alone would give up within seconds on an agent that is merely busy.
    pub give_up_after: Duration,
    /// Interval between websocket pings; `None` disables keepalive.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered (no pong and no frame) before the connection is
    /// declared dead.
    pub pong_timeout: Duration,
    /// A dead connection (pong deadline, or [`Session::link_lost`]) waits for the driver to
    /// [`reconnect`](Session::reconnect) instead of failing the session.
    pub resumable: bool,
    /// How long `close()` waits for unacked input before giving up on it.
    pub close_linger: Duration,
    /// Seed for message ids; `None` seeds from the OS. Ids are never used for matching.
    pub id_seed: Option<u64>,
    /// How long after our KMS HandshakeResponse the agent has to send HandshakeComplete. The
    /// agent itself gives up after 15 s without a right challenge answer, so its own verdict
    /// (the session ending) normally arrives first; this bound is for an agent that says nothing.
    pub kms_handshake_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            client_id: Uuid::new_v4(),
            client_version: "1.2.694.0".to_owned(),
            max_input_payload: 1024,
            max_unacked_bytes: 4 << 20,
            max_unacked_frames: 4096,
            max_reorder_frames: 4096,
            max_reorder_bytes: 8 << 20,
            max_retransmits: 60,
            give_up_after: Duration::from_secs(120),
            keepalive_interval: Some(Duration::from_secs(5)),
            pong_timeout: Duration::from_secs(10),
            resumable: false,
            close_linger: Duration::from_secs(2),
            id_seed: None,
            kms_handshake_timeout: Duration::from_secs(20),
        }
    }
}

/// Something for the driver to put on the websocket.
#[derive(Clone, PartialEq, Eq)]
pub enum Transmit {
    /// The OpenDataChannel JSON, as a text message. It carries the token: never log it.
    Text(String),
    /// One encoded frame, as a binary message.
    Binary(Bytes),
    /// A websocket ping with this payload.
    Ping(Bytes),
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(_) => f.write_str("Text(<OpenDataChannel, redacted>)"),
            Self::Binary(bytes) => write!(f, "Binary({} bytes)", bytes.len()),
            Self::Ping(bytes) => write!(f, "Ping({} bytes)", bytes.len()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// `close()` was called: no new input, waiting for acks.
    Closing,
    /// channel_closed received, `close()` done, or a fatal error.
    Closed,
}

/// Random v4 message ids from a splitmix64 stream (one OS seed, no syscall per message).
#[derive(Debug)]
struct IdGenerator(u64);

impl IdGenerator {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_id(&mut self) -> Uuid {
        let high = self.next_u64().to_be_bytes();
        let low = self.next_u64().to_be_bytes();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high);
        bytes[8..].copy_from_slice(&low);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The client session core.
///
/// # Call order
/// 1. [`Session::new`] queues the OpenDataChannel text frame (and a first ping).
/// 2. After every input — [`handle_frame`](Self::handle_frame) for each websocket message,
///    [`handle_pong`](Self::handle_pong), [`handle_timeout`](Self::handle_timeout) when the
///    deadline from [`poll_timeout`](Self::poll_timeout) has passed, or a command
///    ([`send_input`](Self::send_input), [`send_resize`](Self::send_resize),
///    [`close`](Self::close), [`reconnect`](Self::reconnect)) — drain
///    [`poll_transmit`](Self::poll_transmit) until `None` and write what it yields in order,
///    drain [`poll_event`](Self::poll_event), then re-arm one timer at `poll_timeout()`.
/// 3. Feed input only while [`can_send`](Self::can_send) is true; this bounds memory.
/// 4. Stop when [`is_closed`](Self::is_closed) is true and `poll_transmit` is empty.
///
/// Calling `handle_timeout` early or twice is harmless: it acts only on expired deadlines.
///
/// # Notes for drivers
/// - A dropped websocket goes to [`link_lost`](Self::link_lost). In a resumable session
///   (`SessionConfig::resumable`) it is not a failure: [`link_down`](Self::link_down) then
///   says so until the driver calls [`reconnect`](Self::reconnect) on a new socket, or
///   [`fail`](Self::fail) when it gives up. The pong deadline takes the same path.
/// - When the agent handshakes (never for ECS Exec without KMS), it discards input that
///   arrives before the handshake finishes: input given between the HandshakeRequest and
///   [`Event::HandshakeComplete`] is therefore held and sent once the handshake completes.
/// - [`Event::DataKeyRequested`] must be answered with
///   [`supply_data_key`](Self::supply_data_key) (a KMS failure too), or the handshake waits.
pub struct Session {
    config: SessionConfig,
    clock: Box<dyn Clock>,
    ids: IdGenerator,
    state: State,
    error: Option<ChannelError>,
    /// The connection died and a reconnect is awaited (resumable sessions only).
    link_down: Option<ChannelError>,
    token: String,
    open_pending: bool,
    ping_pending: bool,

    next_send_seq: i64,
    send_buffer: SendBuffer,
    unsent: VecDeque<i64>,
    retransmit_queue: VecDeque<i64>,
    control_queue: VecDeque<Bytes>,
    rtt: RttEstimator,
    paused: bool,

    expected_seq: i64,
    reorder: BTreeMap<i64, Frame>,
    reorder_bytes: usize,

    handshake_seen: bool,
    /// A HandshakeRequest arrived and its HandshakeComplete did not yet.
    handshake_in_progress: bool,
    /// Input given while the handshake is in progress, sent when it completes.
    held_input: VecDeque<Bytes>,
    held_input_bytes: usize,
    /// The agent's first in-order message has been handled: whether it handshakes is known.
    agent_started: bool,
    /// Input sent before that (typed ahead). If the agent's first message is a
    /// HandshakeRequest, the agent discards this input (docs/protocol.md §8.2), so it is sent
    /// again once the handshake completes; otherwise it is forgotten.
    early_input: VecDeque<Bytes>,
    early_input_bytes: usize,
    kms: Kms,
    /// Seals our type-1 input and opens the agent's types 1, 11 and 12, from the moment our
    /// KMS HandshakeResponse is queued. Reconnects keep it, with its nonce counter.
    cipher: Option<SessionCipher>,
    last_size: Option<TerminalSize>,
    /// A size given while the send window was full; only the latest matters, and it goes out
    /// once an ack opens the window, so resizes cannot grow the unacked buffer without bound.
    deferred_size: Option<TerminalSize>,
    events: VecDeque<Event>,
    timers: TimerTable,
    stats: SessionStats,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("next_send_seq", &self.next_send_seq)
            .field("expected_seq", &self.expected_seq)
            .field("unacked_bytes", &self.send_buffer.payload_bytes)
            .field("paused", &self.paused)
            .field("kms", &self.kms)
            .field("encrypted", &self.cipher.is_some())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session that will authenticate with `token` (from ExecuteCommand or a resume).
    pub fn new(config: SessionConfig, token: &str, clock: Box<dyn Clock>, now: Instant) -> Self {
        let seed = config
            .id_seed
            .unwrap_or_else(|| Uuid::new_v4().as_u64_pair().0);
        let mut session = Self {
            ids: IdGenerator(seed),
            clock,
            state: State::Open,
            error: None,
            link_down: None,
            token: token.to_owned(),
            open_pending: true,
            ping_pending: false,
            next_send_seq: 0,
            send_buffer: SendBuffer::default(),
            unsent: VecDeque::new(),
            retransmit_queue: VecDeque::new(),
            control_queue: VecDeque::new(),
            rtt: RttEstimator::new(),
            paused: false,
            expected_seq: 0,
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            handshake_seen: false,
            handshake_in_progress: false,
            held_input: VecDeque::new(),
            held_input_bytes: 0,
            agent_started: false,
            early_input: VecDeque::new(),
            early_input_bytes: 0,
            kms: Kms::Off,
            cipher: None,
            last_size: None,
            deferred_size: None,
            events: VecDeque::new(),
            timers: TimerTable::default(),
            stats: SessionStats::default(),
            config,
        };
        session.config.max_input_payload = session.config.max_input_payload.max(1);
        session.start_keepalive(now);
        session
    }

    // ----- getters -----

    /// The service asked us to stop publishing (pause_publication) and has not resumed us.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Some stream message we sent is not acknowledged yet.
    pub fn has_unacked(&self) -> bool {
        self.send_buffer.live > 0
    }

    /// Payload bytes sent (or queued) and not yet acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.send_buffer.payload_bytes
    }

    /// The session is over (channel_closed, `close()` finished, or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The sticky fatal error, if any.
    pub fn error(&self) -> Option<&ChannelError> {
        self.error.as_ref()
    }

    /// True while more input may be given without exceeding the unacked bound.
    pub fn can_send(&self) -> bool {
        self.state == State::Open
            && self.send_buffer.payload_bytes + self.held_input_bytes
                < self.config.max_unacked_bytes
            && self.send_buffer.live < self.config.max_unacked_frames
    }

    /// Sequence number the next outgoing stream message will get.
    pub fn next_sequence_number(&self) -> i64 {
        self.next_send_seq
    }

    /// Sequence number of the next in-order message expected from the agent.
    pub fn expected_sequence_number(&self) -> i64 {
        self.expected_seq
    }

    /// Messages held in the out-of-order buffer, and their payload bytes.
    pub fn reorder_buffered(&self) -> (usize, usize) {
        (self.reorder.len(), self.reorder_bytes)
    }

    /// The retransmission timeout now in force (including backoff).
    pub fn retransmission_timeout(&self) -> Duration {
        self.rtt.current()
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session is encrypted with a KMS data key (our response to the agent's KMS action
    /// is queued, so everything of types 1, 11 and 12 from here on is sealed).
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    // ----- commands -----

    /// Queues `data` as input (payload type 1), split into payloads of at most
    /// `max_input_payload` bytes. Empty input sends nothing. The caller bounds memory by
    /// giving input only while [`can_send`](Self::can_send) is true.
    pub fn send_input(&mut self, data: Bytes) -> Result<(), ChannelError> {
        self.check_open()?;
        if data.is_empty() {
            return Ok(());
        }
        if self.handshake_in_progress {
            self.held_input_bytes += data.len();
            self.held_input.push_back(data);
            return Ok(());
        }
        // The copy shares its bytes with the send buffer's; it is bounded like the window, and
        // what an agent has not answered after that much typing is not kept to send again.
        if !self.agent_started
            && self.early_input_bytes + data.len() <= self.config.max_unacked_bytes
        {
            self.early_input_bytes += data.len();
            self.early_input.push_back(data.clone());
        }
        self.queue_input(data)
    }

    /// Queues a terminal size message (payload type 3). While the send window is full only the
    /// latest size is kept, and sent once an acknowledgement opens the window.
    pub fn send_resize(&mut self, cols: u32, rows: u32) -> Result<(), ChannelError> {
        self.check_open()?;
        let size = TerminalSize { cols, rows };
        self.last_size = Some(size);
        if self.kms_handshake_key().is_some() {
            // Sent once the encrypted handshake completes, as the agent would discard it now.
            return Ok(());
        }
        if self.can_send() {
            self.deferred_size = None;
            self.queue_stream(PayloadType::Size, size.to_bytes());
        } else {
            self.deferred_size = Some(size);
        }
        Ok(())
    }

    /// Ends the session from our side: no more input; once every input message is
    /// acknowledged (or `close_linger` passes) the session reports [`Event::LocallyClosed`].
    /// The protocol has no client close message; the driver then closes the websocket.
    pub fn close(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing;
        self.timers
            .set(Timer::CloseLinger, now + self.config.close_linger);
        self.finish_close_if_drained();
    }

    /// Prepares for a new websocket after the old one dropped: queues a fresh OpenDataChannel
    /// with `token` (same client id, new request id) and retransmits every unacked message.
    /// Sequence numbers, both buffers and the RTT estimate carry on.
    pub fn reconnect(&mut self, now: Instant, token: &str) -> Result<(), ChannelError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.state == State::Closed {
            return Err(ChannelError::SessionClosed);
        }
        self.link_down = None;
        self.token = token.to_owned();
        self.open_pending = true;
        self.paused = false;
        // Acks queued for the old socket are dropped; the agent's retransmissions get re-acked.
        self.control_queue.clear();
        self.retransmit_queue.clear();
        self.unsent.clear();
        let seqs: Vec<i64> = self.send_buffer.iter().map(|(seq, _)| seq).collect();
        for seq in seqs {
            if let Some(entry) = self.send_buffer.get_mut(seq) {
                entry.queued_for_retransmit = false;
                if entry.last_sent.is_none() {
                    self.unsent.push_back(seq);
                } else {
                    entry.queued_for_retransmit = true;
                    self.retransmit_queue.push_back(seq);
                }
            }
        }
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::PongDeadline);
        self.start_keepalive(now);
        Ok(())
    }

    /// The connection died (socket closed or errored, or no pong). A resumable session waits
    /// for [`reconnect`](Self::reconnect): nothing is sent and no retransmission timer runs
    /// meanwhile, and [`link_down`](Self::link_down) gives the reason. Otherwise the session
    /// fails with `reason`.
    pub fn link_lost(&mut self, reason: ChannelError) {
        if self.error.is_some() || self.state == State::Closed {
            return;
        }
        if let Kms::AwaitingComplete { key_id } = &self.kms {
            // The agent ends a session whose key it cannot decrypt at once; a resume would
            // only find the session gone.
            let error = KmsError::AgentEndedHandshake {
                key_id: key_id.clone(),
                how: HandshakeEnding::LinkLost(Box::new(reason)),
            };
            self.fail(error.into());
            return;
        }
        if !self.config.resumable {
            self.fail(reason);
            return;
        }
        if self.link_down.is_none() {
            self.link_down = Some(reason);
        }
        self.ping_pending = false;
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::Keepalive);
        self.timers.stop(Timer::PongDeadline);
    }

    /// Why the connection is down, while a resumable session waits for a reconnect.
    pub fn link_down(&self) -> Option<&ChannelError> {
        self.link_down.as_ref()
    }

    /// Records a failure found by the driver (e.g. the socket closed); it becomes sticky.
    pub fn fail(&mut self, reason: ChannelError) {
        self.link_down = None;
        if self.error.is_none() {
            self.error = Some(reason.clone());
            self.state = State::Closed;
            self.timers = TimerTable::default();
            // Queued acks and first transmissions may still flush; retransmissions stop.
            self.retransmit_queue.clear();
            self.events.push_back(Event::Lost { reason });
        }
    }

    // ----- inputs -----

    /// A websocket pong arrived.
    pub fn handle_pong(&mut self, _now: Instant) {
        self.timers.stop(Timer::PongDeadline);
    }

    /// One websocket message (binary, or a late text message, which is parsed the same way).
    /// Malformed frames are counted and dropped; they are never fatal.
    pub fn handle_frame(&mut self, now: Instant, bytes: Bytes) {
        self.timers.stop(Timer::PongDeadline);
        if self.state == State::Closed {
            return;
        }
        let frame = match Frame::decode_shared(&bytes) {
            Ok(frame) => frame,
            Err(error) => {
                self.stats.frames_rejected += 1;
                tracing::debug!(%error, "dropping malformed frame");
                return;
            }
        };
        match &frame.message_type {
            MessageType::OutputStreamData | MessageType::InputStreamData => {
                self.resume(now);
                self.handle_stream(frame);
            }
            MessageType::Acknowledge => {
                self.resume(now);
                self.handle_ack(now, &frame);
            }
            MessageType::ChannelClosed => self.handle_channel_closed(&frame),
            MessageType::PausePublication => {
                self.paused = true;
                self.timers.stop(Timer::Retransmit);
            }
            MessageType::StartPublication => self.resume(now),
            other => tracing::debug!(message_type = %other, "ignoring message type"),
        }
        self.finish_close_if_drained();
    }

    /// Un-pauses (start_publication, or any stream data or ack, as the agent does) and
    /// restarts the retransmission timer that pausing stopped.
    fn resume(&mut self, now: Instant) {
        if !self.paused {
            return;
        }
        self.paused = false;
        if self.state != State::Closed
            && self
                .send_buffer
                .iter()
                .any(|(_, entry)| entry.last_sent.is_some())
        {
            self.timers.set(Timer::Retransmit, now + self.rtt.current());
        }
    }

    /// Acts on every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.is_expired(Timer::KmsHandshake, now) {
            self.timers.stop(Timer::KmsHandshake);
            if let Kms::AwaitingComplete { key_id } = &self.kms {
                let error = KmsError::HandshakeTimeout {
                    key_id: key_id.clone(),
                    waited: self.config.kms_handshake_timeout,
                };
                self.fail(error.into());
                return;
            }
        }
        if self.timers.is_expired(Timer::PongDeadline, now) {
            self.link_lost(ChannelError::PongTimeout {
                timeout: self.config.pong_timeout,
            });
            return;
        }
        if self.timers.is_expired(Timer::CloseLinger, now) {
            self.timers.stop(Timer::CloseLinger);
            if self.state == State::Closing {
                self.state = State::Closed;
                self.events.push_back(Event::LocallyClosed {
                    unacked_bytes: self.send_buffer.payload_bytes,
                });
                self.timers = TimerTable::default();
                return;
            }
        }
        if self.timers.is_expired(Timer::Keepalive, now) {
            self.ping_pending = true;
            if let Some(interval) = self.config.keepalive_interval {
                self.timers.set(Timer::Keepalive, now + interval);
            }
        }
        if self.timers.is_expired(Timer::Retransmit, now) {
            self.on_retransmit_timeout(now);
        }
    }

    // ----- outputs -----

    /// The next websocket message to write, if any. `now` is when it is written (RTT sampling).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.link_down.is_some() {
            return None;
        }
        if self.open_pending {
            self.open_pending = false;
            let open = OpenDataChannel::client(
                &self.ids.next_id().hyphenated().to_string(),
                &self.token,
                &self.config.client_id.hyphenated().to_string(),
                &self.config.client_version,
            );
            return Some(Transmit::Text(open.to_json()));
        }
        if self.ping_pending && self.state != State::Closed {
            self.ping_pending = false;
            if self.timers.get(Timer::PongDeadline).is_none() {
                self.timers
                    .set(Timer::PongDeadline, now + self.config.pong_timeout);
            }
            return Some(Transmit::Ping(Bytes::from_static(PING_PAYLOAD)));
        }
        if let Some(control) = self.control_queue.pop_front() {
            return Some(Transmit::Binary(control));
        }
        if self.paused || (self.state == State::Closed && self.error.is_none()) {
            return None;
        }
        while let Some(seq) = self.retransmit_queue.pop_front() {
            if let Some(wire) = self.mark_sent(seq, now) {
                return Some(Transmit::Binary(wire));
            }
        }
        while let Some(seq) = self.unsent.pop_front() {
            if let Some(wire) = self.mark_sent(seq, now) {
                return Some(Transmit::Binary(wire));
            }
        }
        None
    }

    /// The earliest deadline at which [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next event for the user, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn check_open(&self) -> Result<(), ChannelError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        match self.state {
            State::Open => Ok(()),
            State::Closing | State::Closed => Err(ChannelError::SessionClosed),
        }
    }

    fn start_keepalive(&mut self, now: Instant) {
        if let Some(interval) = self.config.keepalive_interval {
            self.ping_pending = true;
            self.timers.set(Timer::Keepalive, now + interval);
        }
    }

    fn handle_channel_closed(&mut self, frame: &Frame) {
        let closed = ChannelClosed::from_payload(&frame.payload).unwrap_or_default();
        if let Kms::AwaitingComplete { key_id } = &self.kms {
            let error = KmsError::AgentEndedHandshake {
                key_id: key_id.clone(),
                how: HandshakeEnding::ChannelClosed {
                    output: closed.output,
                },
            };
            self.fail(error.into());
            return;
        }
        self.state = State::Closed;
        self.timers = TimerTable::default();
        self.unsent.clear();
        self.retransmit_queue.clear();
        self.events.push_back(Event::Closed {
            output: closed.output,
        });
    }

    fn finish_close_if_drained(&mut self) {
        if self.state == State::Closing && self.send_buffer.live == 0 {
            self.state = State::Closed;
            self.timers = TimerTable::default();
            self.events
                .push_back(Event::LocallyClosed { unacked_bytes: 0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::{ResumeError, TransportError};

    #[test]
    fn opens_with_the_text_frame_then_a_ping() {
        let now = Instant::now();
        let mut config = config();
        config.keepalive_interval = Some(Duration::from_secs(5));
        let mut session = Session::new(config, "tok-1", Box::new(FixedClock(DATE)), now);
        let Some(Transmit::Text(text)) = session.poll_transmit(now) else {
            panic!("first transmit must be the OpenDataChannel text");
        };
        let open = OpenDataChannel::from_json(&text).expect("json");
        assert_eq!(open.token_value, "tok-1");
        assert_eq!(open.client_id, Uuid::from_u128(0x1234).to_string());
        assert_eq!(open.message_schema_version, "1.0");
        assert!(matches!(
            session.poll_transmit(now),
            Some(Transmit::Ping(_))
        ));
        assert_eq!(session.poll_transmit(now), None);
        assert!(!format!("{:?}", Transmit::Text(text)).contains("tok-1"));
    }

    #[test]
    fn pause_publication_holds_new_frames_and_retransmissions() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_input(Bytes::from_static(b"1")).expect("open");
        drain(&mut session, now);
        session.handle_frame(now, control(MessageType::PausePublication, Bytes::new()));
        assert!(session.is_paused());
        session.send_input(Bytes::from_static(b"2")).expect("open");
        session.handle_frame(now, output(0, PayloadType::Output, b"o"));
        // Stream data un-pauses, as the agent does; pause again to test the hold.
        session.handle_frame(now, control(MessageType::PausePublication, Bytes::new()));
        let held = drain(&mut session, now);
        assert_eq!(acked_seqs(&held), vec![0], "acks still flow while paused");
        assert!(
            held.iter()
                .all(|f| f.message_type == MessageType::Acknowledge)
        );
        assert_eq!(
            session.poll_timeout(),
            None,
            "no retransmission while paused"
        );
        let later = now + Duration::from_secs(3);
        session.handle_frame(later, control(MessageType::StartPublication, Bytes::new()));
        assert!(!session.is_paused());
        let sent: Vec<_> = drain(&mut session, later)
            .iter()
            .map(|f| f.sequence_number)
            .collect();
        assert_eq!(sent, vec![1]);
        assert!(session.poll_timeout().is_some());
    }

    #[test]
    fn channel_closed_ends_the_session_with_its_output() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_input(Bytes::from_static(b"x")).expect("open");
        let closed = ChannelClosed {
            output: "Session terminated".to_owned(),
            ..ChannelClosed::default()
        };
        session.handle_frame(now, control(MessageType::ChannelClosed, closed.to_bytes()));
        assert_eq!(
            events(&mut session),
            vec![Event::Closed {
                output: "Session terminated".to_owned()
            }]
        );
        assert!(session.is_closed());
        assert_eq!(session.poll_transmit(now), None);
        assert_eq!(session.poll_timeout(), None);
        assert_eq!(
            session.send_input(Bytes::from_static(b"y")),
            Err(ChannelError::SessionClosed)
        );
        session.handle_frame(now, output(0, PayloadType::Output, b"late"));
        assert!(events(&mut session).is_empty());
    }

    #[test]
    fn unanswered_ping_fails_with_pong_timeout_and_answered_ping_does_not() {
        let now = Instant::now();
        let mut config = config();
        config.keepalive_interval = Some(Duration::from_secs(5));
        config.pong_timeout = Duration::from_secs(3);
        let mut session = Session::new(config, "t", Box::new(FixedClock(DATE)), now);
        assert!(matches!(
            session.poll_transmit(now),
            Some(Transmit::Text(_))
        ));
        assert!(matches!(
            session.poll_transmit(now),
            Some(Transmit::Ping(_))
        ));
        session.handle_pong(now + Duration::from_secs(1));
        let keepalive = session.poll_timeout().expect("keepalive");
        assert_eq!(keepalive, now + Duration::from_secs(5));
        session.handle_timeout(keepalive);
        assert!(matches!(
            session.poll_transmit(keepalive),
            Some(Transmit::Ping(_))
        ));
        let deadline = keepalive + Duration::from_secs(3);
        assert_eq!(session.poll_timeout(), Some(deadline));
        session.handle_timeout(deadline);
        assert_eq!(
            session.error(),
            Some(&ChannelError::PongTimeout {
                timeout: Duration::from_secs(3)
            })
        );
    }

    #[test]
    fn a_resumable_session_waits_out_a_dead_link_then_resends_on_reconnect() {
        let now = Instant::now();
        let mut config = config();
        config.resumable = true;
        config.keepalive_interval = Some(Duration::from_secs(5));
        config.pong_timeout = Duration::from_secs(3);
        let mut session = session_with(config, now);
        session.send_input(Bytes::from_static(b"a")).expect("open");
        let sent = drain(&mut session, now);
        assert_eq!(sent.len(), 1);

        // The first ping went out with the open message; no pong: the link is down, but the
        // session is not lost and stays silent.
        let deadline = now + Duration::from_secs(3);
        session.handle_timeout(deadline);
        assert!(matches!(
            session.link_down(),
            Some(ChannelError::PongTimeout { .. })
        ));
        assert_eq!(session.error(), None);
        assert!(!session.is_closed());
        assert!(events(&mut session).is_empty());
        assert_eq!(session.poll_timeout(), None, "no retransmission while down");
        session
            .send_input(Bytes::from_static(b"b"))
            .expect("input is queued");
        assert!(session.poll_transmit(deadline).is_none());

        // A second cause while down keeps the first.
        session.link_lost(ChannelError::Transport(TransportError::Io {
            reason: "reset".into(),
        }));
        assert!(matches!(
            session.link_down(),
            Some(ChannelError::PongTimeout { .. })
        ));

        session.reconnect(deadline, "tok-2").expect("reconnect");
        assert_eq!(session.link_down(), None);
        assert!(matches!(
            session.poll_transmit(deadline),
            Some(Transmit::Text(_))
        ));
        let resent = drain(&mut session, deadline);
        let seqs: Vec<i64> = resent.iter().map(|frame| frame.sequence_number).collect();
        assert_eq!(
            seqs,
            vec![0, 1],
            "the unacked frame again, then the queued one"
        );
        assert_eq!(resent[0], sent[0]);
    }

    #[test]
    fn a_lost_link_fails_a_session_that_is_not_resumable() {
        let now = Instant::now();
        let mut session = session(now);
        let reason = ChannelError::Transport(TransportError::Io {
            reason: "reset".into(),
        });
        session.link_lost(reason.clone());
        assert_eq!(session.link_down(), None);
        assert_eq!(session.error(), Some(&reason));
        assert_eq!(events(&mut session), vec![Event::Lost { reason }]);
    }

    #[test]
    fn giving_up_on_a_dead_link_reports_the_failure_once() {
        let now = Instant::now();
        let mut config = config();
        config.resumable = true;
        let mut session = session_with(config, now);
        session.link_lost(ChannelError::PongTimeout {
            timeout: Duration::from_secs(1),
        });
        let gave_up = ChannelError::ResumeFailed {
            attempts: 3,
            last: ResumeError::Dial(TransportError::Connect {
                host: "127.0.0.1:9".into(),
                reason: "connection refused".into(),
            }),
        };
        session.fail(gave_up.clone());
        assert_eq!(session.link_down(), None);
        assert!(session.is_closed());
        assert_eq!(events(&mut session), vec![Event::Lost { reason: gave_up }]);
    }

    #[test]
    fn close_waits_for_acks_then_reports_locally_closed() {
        let now = Instant::now();
        let mut session = session(now);
        session
            .send_input(Bytes::from_static(b"bye"))
            .expect("open");
        let frames = drain(&mut session, now);
        session.close(now);
        assert!(!session.is_closed());
        assert_eq!(
            session.send_input(Bytes::from_static(b"more")),
            Err(ChannelError::SessionClosed)
        );
        session.handle_frame(now, ack_of(&frames[0]));
        assert!(session.is_closed());
        assert_eq!(
            events(&mut session),
            vec![Event::LocallyClosed { unacked_bytes: 0 }]
        );

        let mut stuck = self::session(now);
        stuck.send_input(Bytes::from_static(b"lost")).expect("open");
        drain(&mut stuck, now);
        stuck.close(now);
        let linger = now + stuck.config().close_linger;
        while let Some(deadline) = stuck.poll_timeout() {
            if deadline > linger {
                break;
            }
            stuck.handle_timeout(deadline);
            drain(&mut stuck, deadline);
        }
        assert!(stuck.is_closed());
        assert_eq!(
            events(&mut stuck),
            vec![Event::LocallyClosed { unacked_bytes: 4 }]
        );
    }

    #[test]
    fn reconnect_reopens_and_retransmits_with_the_same_sequence_numbers() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_input(Bytes::from_static(b"a")).expect("open");
        session.send_input(Bytes::from_static(b"b")).expect("open");
        let first = drain(&mut session, now);
        session.handle_frame(now, ack_of(&first[0]));
        session.handle_frame(now, output(0, PayloadType::Output, b"o"));
        drain(&mut session, now);
        assert_eq!(events(&mut session).len(), 1);
        session.reconnect(now, "tok-2").expect("reconnect");
        let Some(Transmit::Text(text)) = session.poll_transmit(now) else {
            panic!("reconnect starts with a new OpenDataChannel");
        };
        let open = OpenDataChannel::from_json(&text).expect("json");
        assert_eq!(open.token_value, "tok-2");
        assert_eq!(open.client_id, Uuid::from_u128(0x1234).to_string());
        let resent = drain(&mut session, now);
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0], first[1]);
        session.send_input(Bytes::from_static(b"c")).expect("open");
        assert_eq!(drain(&mut session, now)[0].sequence_number, 2);
        // The agent's counter carries on too: a restarted seq 0 is a duplicate.
        session.handle_frame(now, output(0, PayloadType::Output, b"o"));
        assert!(
            events(&mut session)
                .iter()
                .all(|e| !matches!(e, Event::Output(_)))
        );
        assert_eq!(session.expected_sequence_number(), 1);
    }

    #[test]
    fn malformed_frames_are_counted_and_dropped() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, Bytes::from_static(b"garbage"));
        let mut bad_ack = control(MessageType::Acknowledge, Bytes::from_static(b"{")).to_vec();
        bad_ack.truncate(bad_ack.len());
        session.handle_frame(now, Bytes::from(bad_ack));
        assert_eq!(session.stats().frames_rejected, 2);
        assert!(!session.is_closed());
        assert!(events(&mut session).is_empty());
    }
}
