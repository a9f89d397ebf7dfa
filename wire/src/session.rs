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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use uuid::Uuid;

use crate::crypto::{DataKey, SessionCipher};
use crate::frame::{Frame, MessageType, PayloadType};
use crate::payload::{
    self, Acknowledge, ChannelClosed, EncryptionChallenge, HandshakeComplete, HandshakeRequest,
    HandshakeResponse, OpenDataChannel, ProcessedClientAction, TerminalSize, action, action_status,
};
use crate::{ChannelError, HandshakeError, KmsError};

/// §8.4 constants, shared by the reference plugin and agent.
const INITIAL_RTO: Duration = Duration::from_millis(200);
const INITIAL_SRTT: Duration = Duration::from_millis(100);
const CLOCK_GRANULARITY: Duration = Duration::from_millis(10);
const MAX_RTO: Duration = Duration::from_secs(1);
/// Ceiling for the backed-off timeout, so a link that recovers is noticed within seconds.
const MAX_BACKED_OFF_RTO: Duration = Duration::from_secs(4);
/// An unacked message this many sequence numbers behind an acknowledged one that was sent no
/// earlier is taken as lost and resent at once, without waiting for the timeout (selective-ack
/// loss detection, as TCP's SACK). An agent that drops a message (a full buffer, a lossy link)
/// acks what follows, and waiting a whole timeout per hole made input crawl. The margin keeps
/// mere reordering from causing resends.
const REORDER_TOLERANCE: i64 = 16;
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

/// What the agent's `KMSEncryption` action asks the driver to get from KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRequest {
    /// The key to call GenerateDataKey with, as the agent named it.
    pub key_id: String,
    /// The agent's challenge string: it goes into the encryption context as
    /// `aws:ssm:RandomChallenge`, exactly as received.
    pub challenge: Option<String>,
}

/// What GenerateDataKey returned: the blob the agent decrypts, and the 64-byte plaintext.
pub struct DataKeyGrant {
    pub ciphertext_blob: Bytes,
    pub data_key: DataKey,
}

impl fmt::Debug for DataKeyGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyGrant")
            .field(
                "ciphertext_blob",
                &format_args!("{} bytes", self.ciphertext_blob.len()),
            )
            .field("data_key", &self.data_key)
            .finish()
    }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Retransmit,
    Keepalive,
    PongDeadline,
    CloseLinger,
    KmsHandshake,
}

const TIMER_COUNT: usize = 5;

impl Timer {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; TIMER_COUNT]);

impl TimerTable {
    fn set(&mut self, timer: Timer, deadline: Instant) {
        self.0[timer.index()] = Some(deadline);
    }

    fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|deadline| deadline <= now)
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
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

/// Where the KMS part of the handshake stands.
#[derive(Debug)]
enum Kms {
    /// The agent did not ask for encryption (so far).
    Off,
    /// Waiting for the driver's GenerateDataKey result; the HandshakeResponse is held.
    AwaitingDataKey {
        key_id: String,
        challenge: Option<String>,
        response: HandshakeResponse,
        action_index: usize,
    },
    /// Our response is out and encryption is on; HandshakeComplete has not come yet.
    AwaitingComplete { key_id: String },
    /// The handshake completed: the session is encrypted.
    On,
}

/// One stream message we sent (or will send) and that is not acknowledged yet.
#[derive(Debug)]
struct Unacked {
    wire: Bytes,
    payload_len: usize,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    retransmits: u32,
    /// Already in `retransmit_queue` (keeps the queue free of repeats without a scan).
    queued_for_retransmit: bool,
}

/// The unacked messages, indexed by sequence number (acks remove entries out of order).
#[derive(Debug, Default)]
struct SendBuffer {
    first_seq: i64,
    entries: VecDeque<Option<Unacked>>,
    payload_bytes: usize,
    live: usize,
}

impl SendBuffer {
    fn slot(&mut self, seq: i64) -> Option<&mut Option<Unacked>> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.entries.get_mut(index)
    }

    fn get_mut(&mut self, seq: i64) -> Option<&mut Unacked> {
        self.slot(seq)?.as_mut()
    }

    fn push(&mut self, seq: i64, entry: Unacked) {
        if self.entries.is_empty() {
            self.first_seq = seq;
        }
        self.payload_bytes += entry.payload_len;
        self.live += 1;
        self.entries.push_back(Some(entry));
    }

    fn remove(&mut self, seq: i64) -> Option<Unacked> {
        let entry = self.slot(seq)?.take()?;
        self.payload_bytes -= entry.payload_len;
        self.live -= 1;
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.first_seq += 1;
        }
        Some(entry)
    }

    fn oldest(&self) -> Option<(i64, &Unacked)> {
        let entry = self.entries.front()?.as_ref()?;
        Some((self.first_seq, entry))
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &Unacked)> {
        (self.first_seq..)
            .zip(self.entries.iter())
            .filter_map(|(seq, entry)| Some((seq, entry.as_ref()?)))
    }
}

/// Round-trip estimation and the retransmission timeout (§8.4), plus exponential backoff.
#[derive(Debug)]
struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
    backoff: u32,
}

impl RttEstimator {
    fn new() -> Self {
        Self {
            srtt: INITIAL_SRTT,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            backoff: 0,
        }
    }

    fn sample(&mut self, rtt: Duration) {
        let deviation = self.srtt.abs_diff(rtt);
        self.rttvar = self.rttvar.mul_f64(0.75) + deviation.mul_f64(0.25);
        self.srtt = self.srtt.mul_f64(0.875) + rtt.mul_f64(0.125);
        self.rto = MAX_RTO.min(self.srtt + CLOCK_GRANULARITY.max(self.rttvar * 4));
    }

    /// The timeout in force: the RTO doubled once per consecutive expiry, capped.
    fn current(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(16);
        MAX_BACKED_OFF_RTO.min(self.rto.saturating_mul(factor))
    }
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

    /// Splits `data` into input messages, sealing each when the session is encrypted.
    fn queue_input(&mut self, data: Bytes) -> Result<(), ChannelError> {
        let chunk = self.config.max_input_payload;
        let mut offset = 0;
        while offset < data.len() {
            let end = data.len().min(offset + chunk);
            let plain = data.slice(offset..end);
            let payload = match self.cipher.as_mut().map(|cipher| cipher.seal(&plain)) {
                None => plain,
                Some(Ok(sealed)) => sealed,
                Some(Err(error)) => {
                    let error = ChannelError::from(KmsError::Crypto(error));
                    self.fail(error.clone());
                    return Err(error);
                }
            };
            self.queue_stream(PayloadType::Output, payload);
            offset = end;
        }
        Ok(())
    }

    /// Answers the agent's `KMSEncryption` action with the driver's GenerateDataKey result
    /// ([`Event::DataKeyRequested`]). On success encryption goes on and the held
    /// HandshakeResponse is queued, in that order (as the reference plugin does), and the
    /// wait for HandshakeComplete is bounded by `kms_handshake_timeout`. A failure ends the
    /// session with it. A result nobody asked for is ignored.
    pub fn supply_data_key(&mut self, now: Instant, result: Result<DataKeyGrant, KmsError>) {
        if self.state == State::Closed {
            return;
        }
        let Kms::AwaitingDataKey {
            key_id,
            challenge,
            mut response,
            action_index,
        } = std::mem::replace(&mut self.kms, Kms::Off)
        else {
            return;
        };
        let grant = match result {
            Ok(grant) => grant,
            Err(error) => {
                self.fail(error.into());
                return;
            }
        };
        let cipher = match SessionCipher::new(&grant.data_key) {
            Ok(cipher) => cipher,
            Err(error) => {
                self.fail(KmsError::Crypto(error).into());
                return;
            }
        };
        if let Some(answer) = response.processed_client_actions.get_mut(action_index) {
            answer.action_result = payload::kms_encryption_result(
                &BASE64.encode(&grant.ciphertext_blob),
                challenge.is_some(),
            );
        }
        self.cipher = Some(cipher);
        self.kms = Kms::AwaitingComplete { key_id };
        self.queue_stream(PayloadType::HandshakeResponse, response.to_bytes());
        self.timers
            .set(Timer::KmsHandshake, now + self.config.kms_handshake_timeout);
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
                detail: reason.to_string(),
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

    // ----- internals -----

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

    /// Assigns the next sequence number and buffers the frame before it can be written
    /// (the plugin's send-then-buffer race, §14 #3, cannot happen). The encoded bytes are
    /// kept and every retransmission sends exactly them: an encrypted payload is sealed once,
    /// so a resend repeats one message under its one nonce, and a nonce never covers two
    /// different plaintexts.
    fn queue_stream(&mut self, payload_type: PayloadType, payload: Bytes) {
        let seq = self.next_send_seq;
        self.next_send_seq += 1;
        let frame = Frame::stream(
            MessageType::InputStreamData,
            seq,
            payload_type,
            payload,
            self.clock.unix_millis(),
            self.ids.next_id(),
        );
        let payload_len = frame.payload.len();
        self.send_buffer.push(
            seq,
            Unacked {
                wire: frame.to_bytes(),
                payload_len,
                first_sent: None,
                last_sent: None,
                retransmits: 0,
                queued_for_retransmit: false,
            },
        );
        self.unsent.push_back(seq);
    }

    /// Records that `seq` is being written now; `None` if it was acked meanwhile.
    fn mark_sent(&mut self, seq: i64, now: Instant) -> Option<Bytes> {
        let max_retransmits = self.config.max_retransmits;
        let give_up_after = self.config.give_up_after;
        let timeout = self.rtt.current();
        let entry = self.send_buffer.get_mut(seq)?;
        entry.queued_for_retransmit = false;
        if entry.last_sent.is_some() {
            let unacked_for = entry
                .first_sent
                .map_or(Duration::ZERO, |first| now.saturating_duration_since(first));
            if entry.retransmits >= max_retransmits && unacked_for >= give_up_after {
                let attempts = entry.retransmits;
                self.fail(ChannelError::RetransmitExhausted {
                    sequence_number: seq,
                    attempts,
                });
                return None;
            }
            entry.retransmits += 1;
            self.stats.retransmits += 1;
            if entry.retransmits % 10 == 0 {
                tracing::debug!(
                    seq,
                    retransmits = entry.retransmits,
                    rto = ?timeout,
                    "message still unacknowledged"
                );
            }
        }
        entry.first_sent.get_or_insert(now);
        entry.last_sent = Some(now);
        let wire = entry.wire.clone();
        if self.error.is_none() && self.timers.get(Timer::Retransmit).is_none() {
            self.timers.set(Timer::Retransmit, now + timeout);
        }
        Some(wire)
    }

    fn on_retransmit_timeout(&mut self, now: Instant) {
        self.timers.stop(Timer::Retransmit);
        if self.paused {
            return;
        }
        let timeout = self.rtt.current();
        let expired: Vec<i64> = self
            .send_buffer
            .iter()
            .filter(|(_, entry)| entry.last_sent.is_some_and(|sent| sent + timeout <= now))
            .map(|(seq, _)| seq)
            .collect();
        if expired.is_empty() {
            // Acks arrived for the old ones; wait for the next-oldest in-flight message.
            if let Some(sent) = self
                .send_buffer
                .iter()
                .filter_map(|(_, entry)| entry.last_sent)
                .min()
            {
                self.timers.set(Timer::Retransmit, sent + timeout);
            }
            return;
        }
        for seq in expired {
            self.queue_retransmit(seq);
        }
        self.rtt.backoff = self.rtt.backoff.saturating_add(1);
        self.timers.set(Timer::Retransmit, now + self.rtt.current());
    }

    fn handle_ack(&mut self, now: Instant, frame: &Frame) {
        let ack = match Acknowledge::from_payload(&frame.payload) {
            Ok(ack) => ack,
            Err(error) => {
                self.stats.frames_rejected += 1;
                tracing::debug!(%error, "dropping unreadable acknowledge");
                return;
            }
        };
        let seq = ack.acknowledged_message_sequence_number;
        let Some(entry) = self.send_buffer.remove(seq) else {
            // Agents re-ack duplicates; an ack for something gone is normal.
            self.stats.unmatched_acks += 1;
            return;
        };
        if self.can_send()
            && let Some(size) = self.deferred_size.take()
        {
            self.queue_stream(PayloadType::Size, size.to_bytes());
        }
        if let Some(sent) = entry.last_sent
            && entry.retransmits == 0
        {
            // Karn's rule: a retransmitted message gives no RTT sample.
            self.rtt.sample(now.saturating_duration_since(sent));
        }
        // Any acknowledged message shows the link carries traffic again. Keeping the backed-off
        // timeout until a never-retransmitted message is acked (strict Karn) stalls recovery
        // for seconds per round when an agent drops every message beyond a full buffer: then
        // only retransmissions are ever acknowledged.
        self.rtt.backoff = 0;
        if self.send_buffer.live == 0 {
            self.timers.stop(Timer::Retransmit);
            return;
        }
        // New data acknowledged: restart the timer (RFC 6298 5.3), and resend the oldest
        // message at once if it has already outlived the timeout (a hole the acks skip over).
        let timeout = self.rtt.current();
        self.timers.set(Timer::Retransmit, now + timeout);
        if let Some((oldest, head)) = self.send_buffer.oldest()
            && head.last_sent.is_some_and(|sent| sent + timeout <= now)
        {
            self.queue_retransmit(oldest);
        }
        if let Some(acked_sent) = entry.last_sent {
            self.resend_overtaken(seq, acked_sent);
        }
    }

    /// Queues every unacked message sent no later than the acknowledged message `acked` and
    /// more than [`REORDER_TOLERANCE`] sequence numbers before it: the agent has moved past it.
    fn resend_overtaken(&mut self, acked: i64, acked_sent: Instant) {
        let limit = acked.saturating_sub(REORDER_TOLERANCE);
        let lost: Vec<i64> = self
            .send_buffer
            .iter()
            .take_while(|(seq, _)| *seq < limit)
            .filter(|(_, entry)| {
                // A resend that is lost again waits for the timeout: resending on every later
                // ack would flood an agent that drops input while its buffer is full.
                entry.retransmits == 0
                    && !entry.queued_for_retransmit
                    && entry.last_sent.is_some_and(|sent| sent <= acked_sent)
            })
            .map(|(seq, _)| seq)
            .collect();
        for seq in lost {
            self.queue_retransmit(seq);
        }
    }

    fn queue_retransmit(&mut self, seq: i64) {
        if let Some(entry) = self.send_buffer.get_mut(seq)
            && !entry.queued_for_retransmit
        {
            entry.queued_for_retransmit = true;
            self.retransmit_queue.push_back(seq);
        }
    }

    fn send_ack(&mut self, frame: &Frame) {
        let ack = Acknowledge::frame_for(frame, self.clock.unix_millis(), self.ids.next_id());
        let mut wire = BytesMut::with_capacity(ack.encoded_len());
        ack.encode(&mut wire);
        self.control_queue.push_back(wire.freeze());
        self.stats.acks_sent += 1;
    }

    fn handle_stream(&mut self, frame: Frame) {
        let seq = frame.sequence_number;
        if seq < self.expected_seq {
            // Our earlier ack was lost (or the sender raced it): ack again so it stops resending.
            self.stats.duplicates_received += 1;
            self.send_ack(&frame);
            return;
        }
        if seq > self.expected_seq {
            let ahead = u64::try_from(seq - self.expected_seq).unwrap_or(u64::MAX);
            let fits = ahead <= self.config.max_reorder_frames as u64
                && self.reorder_bytes + frame.payload.len() <= self.config.max_reorder_bytes;
            if !fits && !self.reorder.contains_key(&seq) {
                // No room: drop without an ack, the sender will retransmit.
                self.stats.reorder_dropped += 1;
                return;
            }
            self.send_ack(&frame);
            self.stats.reordered_buffered += 1;
            let payload_len = frame.payload.len();
            if let Some(previous) = self.reorder.insert(seq, frame) {
                self.reorder_bytes -= previous.payload.len();
            }
            self.reorder_bytes += payload_len;
            return;
        }
        self.send_ack(&frame);
        self.process_in_order(frame);
        while let Some(next) = self.reorder.remove(&self.expected_seq) {
            self.reorder_bytes -= next.payload.len();
            self.process_in_order(next);
            if self.state == State::Closed {
                break;
            }
        }
    }

    fn process_in_order(&mut self, frame: Frame) {
        self.expected_seq += 1;
        if !self.agent_started {
            self.agent_started = true;
            if frame.payload_type == PayloadType::HandshakeRequest {
                // Typed-ahead input went out before this request; the agent discards it while
                // it handshakes, so it goes again, first, once the handshake completes.
                self.held_input_bytes += self.early_input_bytes;
                self.held_input.extend(self.early_input.drain(..));
            } else {
                self.early_input.clear();
            }
            self.early_input_bytes = 0;
        }
        match frame.payload_type {
            PayloadType::Output => {
                if let Some(data) = self.incoming_plaintext(frame.payload)
                    && !data.is_empty()
                {
                    self.events.push_back(Event::Output(data));
                }
            }
            PayloadType::StdErr => {
                if let Some(data) = self.incoming_plaintext(frame.payload)
                    && !data.is_empty()
                {
                    self.events.push_back(Event::Stderr(data));
                }
            }
            PayloadType::ExitCode => {
                if let Some(data) = self.incoming_plaintext(frame.payload) {
                    match payload::parse_exit_code(&data) {
                        Some(code) => self.events.push_back(Event::ExitCode(code)),
                        None => tracing::warn!("ignoring an unreadable exit code message"),
                    }
                }
            }
            PayloadType::HandshakeRequest => self.handle_handshake_request(&frame.payload),
            PayloadType::EncChallengeRequest => self.answer_challenge(&frame.payload),
            PayloadType::HandshakeComplete => self.handle_handshake_complete(&frame.payload),
            other => tracing::debug!(payload_type = other.as_u32(), "ignoring payload type"),
        }
    }

    /// The plaintext of an agent payload of type 1, 11 or 12: opened when the session is
    /// encrypted, as is otherwise. A payload that does not open ends the session.
    fn incoming_plaintext(&mut self, payload: Bytes) -> Option<Bytes> {
        let result = match (&self.cipher, &self.kms) {
            (Some(cipher), _) => cipher.open(&payload).map_err(KmsError::Crypto),
            (None, Kms::Off) => Ok(payload),
            (None, _) => Err(KmsError::Protocol {
                reason: "output arrived before the data key was exchanged".to_owned(),
            }),
        };
        match result {
            Ok(plain) => Some(plain),
            Err(error) => {
                self.fail(error.into());
                None
            }
        }
    }

    /// The agent's type 8 challenge: open it with the agent's key, seal the same bytes with
    /// ours (a fresh nonce) and answer with type 9.
    fn answer_challenge(&mut self, payload: &[u8]) {
        let Some(cipher) = self.cipher.as_mut() else {
            self.fail(
                KmsError::Protocol {
                    reason: "an encryption challenge arrived before the data key was exchanged"
                        .to_owned(),
                }
                .into(),
            );
            return;
        };
        let answer = EncryptionChallenge::from_payload(payload)
            .map_err(|error| KmsError::Protocol {
                reason: error.to_string(),
            })
            .and_then(|challenge| {
                BASE64
                    .decode(challenge.challenge.as_bytes())
                    .map_err(|_| KmsError::Protocol {
                        reason: "the encryption challenge is not base64".to_owned(),
                    })
            })
            .and_then(|sealed| cipher.open(&sealed).map_err(KmsError::Crypto))
            .and_then(|plain| cipher.seal(&plain).map_err(KmsError::Crypto));
        match answer {
            Ok(sealed) => {
                let response = EncryptionChallenge {
                    challenge: BASE64.encode(&sealed),
                };
                self.queue_stream(PayloadType::EncChallengeResponse, response.to_bytes());
            }
            Err(error) => self.fail(error.into()),
        }
    }

    fn handle_handshake_complete(&mut self, payload: &[u8]) {
        match std::mem::replace(&mut self.kms, Kms::Off) {
            Kms::AwaitingDataKey { .. } => {
                let reason = "HandshakeComplete arrived before our answer to KMSEncryption";
                self.fail(
                    KmsError::Protocol {
                        reason: reason.to_owned(),
                    }
                    .into(),
                );
                return;
            }
            Kms::AwaitingComplete { .. } | Kms::On => {
                self.kms = Kms::On;
                self.timers.stop(Timer::KmsHandshake);
                if let Some(size) = self.last_size {
                    self.queue_stream(PayloadType::Size, size.to_bytes());
                }
            }
            Kms::Off => {}
        }
        let complete = HandshakeComplete::from_payload(payload).unwrap_or_default();
        self.handshake_in_progress = false;
        self.events.push_back(Event::HandshakeComplete {
            customer_message: complete.customer_message,
        });
        self.held_input_bytes = 0;
        while let Some(data) = self.held_input.pop_front() {
            if self.queue_input(data).is_err() {
                break;
            }
        }
    }

    /// The key of a KMS handshake that has started and not completed.
    fn kms_handshake_key(&self) -> Option<&str> {
        match &self.kms {
            Kms::AwaitingDataKey { key_id, .. } | Kms::AwaitingComplete { key_id } => Some(key_id),
            Kms::Off | Kms::On => None,
        }
    }

    fn handle_handshake_request(&mut self, payload: &[u8]) {
        let request = match HandshakeRequest::from_payload(payload) {
            Ok(request) => request,
            Err(error) => {
                self.fail(
                    HandshakeError::InvalidRequest {
                        reason: error.to_string(),
                    }
                    .into(),
                );
                return;
            }
        };
        self.handshake_seen = true;
        self.handshake_in_progress = true;
        let mut kms_request = None;
        let mut processed = Vec::with_capacity(request.requested_client_actions.len());
        for (index, requested) in request.requested_client_actions.iter().enumerate() {
            let (status, error) = match requested.action_type.as_str() {
                action::SESSION_TYPE => {
                    if let Some(session_type) = requested.session_type_name() {
                        self.events
                            .push_back(Event::SessionType(session_type.to_owned()));
                    }
                    (action_status::SUCCESS, String::new())
                }
                action::KMS_ENCRYPTION => {
                    let reason = match requested.kms_parameters() {
                        Some(parameters) if kms_request.is_none() => {
                            kms_request = Some((index, parameters));
                            None
                        }
                        Some(_) => Some("it asked for KMS encryption twice"),
                        None => Some("its KMSEncryption action names no KMSKeyId"),
                    };
                    if let Some(reason) = reason {
                        self.fail(
                            HandshakeError::InvalidRequest {
                                reason: reason.to_owned(),
                            }
                            .into(),
                        );
                        return;
                    }
                    (action_status::SUCCESS, String::new())
                }
                other => (
                    action_status::UNSUPPORTED,
                    format!("Unsupported action {other}"),
                ),
            };
            processed.push(ProcessedClientAction {
                action_type: requested.action_type.clone(),
                action_status: status,
                action_result: serde_json::Value::Null,
                error,
            });
        }
        let response = HandshakeResponse {
            client_version: self.config.client_version.clone(),
            processed_client_actions: processed,
            errors: Vec::new(),
        };
        if let Some((action_index, parameters)) = kms_request {
            // The response waits for the data key (supply_data_key).
            self.events
                .push_back(Event::DataKeyRequested(DataKeyRequest {
                    key_id: parameters.key_id.clone(),
                    challenge: parameters.challenge.clone(),
                }));
            self.kms = Kms::AwaitingDataKey {
                key_id: parameters.key_id,
                challenge: parameters.challenge,
                response,
                action_index,
            };
            return;
        }
        self.queue_stream(PayloadType::HandshakeResponse, response.to_bytes());
        // A size sent before the request was discarded by the agent; send it again after.
        if let Some(size) = self.last_size {
            self.queue_stream(PayloadType::Size, size.to_bytes());
        }
    }

    fn handle_channel_closed(&mut self, frame: &Frame) {
        let closed = ChannelClosed::from_payload(&frame.payload).unwrap_or_default();
        if let Kms::AwaitingComplete { key_id } = &self.kms {
            let error = KmsError::AgentEndedHandshake {
                key_id: key_id.clone(),
                detail: closed.output,
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
    use super::*;
    use crate::TransportError;
    use crate::payload::RequestedClientAction;

    const DATE: u64 = 1_700_000_000_000;

    fn config() -> SessionConfig {
        SessionConfig {
            client_id: Uuid::from_u128(0x1234),
            keepalive_interval: None,
            id_seed: Some(7),
            ..SessionConfig::default()
        }
    }

    fn session_with(config: SessionConfig, now: Instant) -> Session {
        let mut session = Session::new(config, "tok", Box::new(FixedClock(DATE)), now);
        assert!(matches!(
            session.poll_transmit(now),
            Some(Transmit::Text(_))
        ));
        session
    }

    fn session(now: Instant) -> Session {
        session_with(config(), now)
    }

    /// Every binary frame queued now, decoded.
    fn drain(session: &mut Session, now: Instant) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(transmit) = session.poll_transmit(now) {
            if let Transmit::Binary(bytes) = transmit {
                frames.push(Frame::decode(&bytes).expect("session frames decode"));
            }
        }
        frames
    }

    fn events(session: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| session.poll_event()).collect()
    }

    fn output(seq: i64, payload_type: PayloadType, payload: &'static [u8]) -> Bytes {
        Frame::stream(
            MessageType::OutputStreamData,
            seq,
            payload_type,
            Bytes::from_static(payload),
            DATE,
            Uuid::from_u128(seq as u128 + 1),
        )
        .to_bytes()
    }

    fn ack_of(frame: &Frame) -> Bytes {
        Acknowledge::frame_for(frame, DATE, Uuid::from_u128(99)).to_bytes()
    }

    fn control(message_type: MessageType, payload: Bytes) -> Bytes {
        Frame::control(message_type, payload, DATE, Uuid::from_u128(5)).to_bytes()
    }

    fn acked_seqs(frames: &[Frame]) -> Vec<i64> {
        frames
            .iter()
            .filter(|frame| frame.message_type == MessageType::Acknowledge)
            .map(|frame| {
                Acknowledge::from_payload(&frame.payload)
                    .expect("ack json")
                    .acknowledged_message_sequence_number
            })
            .collect()
    }

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
    fn input_is_chunked_numbered_and_never_empty() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_input(Bytes::new()).expect("open");
        assert!(drain(&mut session, now).is_empty());
        session
            .send_input(Bytes::from(vec![7u8; 2500]))
            .expect("open");
        session.send_resize(80, 24).expect("open");
        let frames = drain(&mut session, now);
        let shape: Vec<_> = frames
            .iter()
            .map(|f| (f.sequence_number, f.payload_type, f.payload.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, PayloadType::Output, 1024),
                (1, PayloadType::Output, 1024),
                (2, PayloadType::Output, 452),
                (3, PayloadType::Size, 21),
            ]
        );
        assert!(
            frames
                .iter()
                .all(|f| f.message_type == MessageType::InputStreamData)
        );
        assert_eq!(session.unacked_bytes(), 2500 + 21);
    }

    #[test]
    fn an_ack_right_after_the_write_clears_the_message_for_good() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_input(Bytes::from_static(b"k")).expect("open");
        let frames = drain(&mut session, now);
        session.handle_frame(now, ack_of(&frames[0]));
        assert!(!session.has_unacked());
        assert_eq!(session.poll_timeout(), None);
        session.handle_timeout(now + Duration::from_secs(5));
        assert!(drain(&mut session, now + Duration::from_secs(5)).is_empty());
        assert_eq!(session.stats().retransmits, 0);
    }

    #[test]
    fn retransmits_after_the_rto_with_exponential_backoff() {
        let start = Instant::now();
        let mut session = session(start);
        session.send_input(Bytes::from_static(b"x")).expect("open");
        assert_eq!(drain(&mut session, start).len(), 1);
        let mut now = start;
        let mut gaps = Vec::new();
        for _ in 0..4 {
            let deadline = session.poll_timeout().expect("retransmit timer armed");
            // Early timeouts do nothing.
            session.handle_timeout(deadline - Duration::from_millis(1));
            assert!(drain(&mut session, deadline).is_empty());
            session.handle_timeout(deadline);
            let resent = drain(&mut session, deadline);
            assert_eq!(resent.len(), 1);
            assert_eq!(resent[0].sequence_number, 0);
            gaps.push(deadline - now);
            now = deadline;
        }
        let millis: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, vec![200, 400, 800, 1600]);
        assert_eq!(session.stats().retransmits, 4);
    }

    #[test]
    fn rto_follows_section_8_4_and_karns_rule() {
        let start = Instant::now();
        let mut session = session(start);
        session.send_input(Bytes::from_static(b"a")).expect("open");
        let first = drain(&mut session, start);
        session.handle_frame(start + Duration::from_millis(50), ack_of(&first[0]));
        // RTTVAR = 0.25*|100-50| = 12.5; SRTT = 93.75; RTO = 93.75 + max(10, 50) = 143.75 ms.
        assert_eq!(
            session.retransmission_timeout(),
            Duration::from_micros(143_750)
        );

        // A retransmitted message's ack gives no sample (Karn); it does end the backoff.
        let t1 = start + Duration::from_secs(1);
        session.send_input(Bytes::from_static(b"b")).expect("open");
        let second = drain(&mut session, t1);
        let deadline = session.poll_timeout().expect("timer");
        session.handle_timeout(deadline);
        assert_eq!(drain(&mut session, deadline).len(), 1);
        assert_eq!(
            session.retransmission_timeout(),
            Duration::from_micros(287_500),
            "backed off once"
        );
        session.handle_frame(deadline + Duration::from_millis(900), ack_of(&second[0]));
        assert_eq!(
            session.retransmission_timeout(),
            Duration::from_micros(143_750),
            "the ack ends the backoff, and a retransmitted message gives no RTT sample (a \
             900 ms sample would have raised the timeout)"
        );
    }

    #[test]
    fn a_message_the_agent_moved_past_is_resent_without_waiting_for_the_timeout() {
        let now = Instant::now();
        let mut session = session(now);
        for _ in 0..40 {
            session.send_input(Bytes::from_static(b"x")).expect("open");
        }
        let sent = drain(&mut session, now);
        assert_eq!(sent.len(), 40);
        let later = now + Duration::from_millis(20);
        // Seq 0 was lost; 1..=16 arrive. Within the reordering margin nothing is resent.
        for frame in &sent[1..=16] {
            session.handle_frame(later, ack_of(frame));
        }
        assert!(
            drain(&mut session, later).is_empty(),
            "no resend within the margin"
        );
        // An ack far enough ahead marks seq 0 lost at once, long before the timeout.
        session.handle_frame(later, ack_of(&sent[17]));
        let resent = drain(&mut session, later);
        let seqs: Vec<i64> = resent.iter().map(|frame| frame.sequence_number).collect();
        assert_eq!(seqs, vec![0]);
        assert!(later < now + session.retransmission_timeout());
        // The resend is not resent again by later acks of older transmissions: only the
        // timeout retries it.
        for frame in &sent[18..40] {
            session.handle_frame(later, ack_of(frame));
        }
        assert!(drain(&mut session, later).is_empty());
        assert_eq!(session.stats().retransmits, 1);
    }

    #[test]
    fn gives_up_after_max_retransmits_and_the_age_limit_with_a_sticky_error() {
        // The count alone is not enough while the message is young.
        let start = Instant::now();
        let mut young = config();
        young.max_retransmits = 2;
        young.give_up_after = Duration::from_secs(3600);
        let mut patient = session_with(young, start);
        patient.send_input(Bytes::from_static(b"x")).expect("open");
        drain(&mut patient, start);
        let mut now = start;
        for _ in 0..4 {
            now = patient.poll_timeout().unwrap_or(now);
            patient.handle_timeout(now);
            drain(&mut patient, now);
        }
        assert!(events(&mut patient).is_empty());
        assert!(!patient.is_closed());

        let mut now = Instant::now();
        let mut config = config();
        config.max_retransmits = 2;
        config.give_up_after = Duration::from_secs(1);
        let mut session = session_with(config, now);
        session.send_input(Bytes::from_static(b"x")).expect("open");
        drain(&mut session, now);
        for _ in 0..3 {
            now = session.poll_timeout().unwrap_or(now);
            session.handle_timeout(now);
            drain(&mut session, now);
        }
        let expected = ChannelError::RetransmitExhausted {
            sequence_number: 0,
            attempts: 2,
        };
        assert_eq!(
            events(&mut session),
            vec![Event::Lost {
                reason: expected.clone()
            }]
        );
        assert!(session.is_closed());
        assert_eq!(
            session.send_input(Bytes::from_static(b"y")),
            Err(expected.clone())
        );
        assert_eq!(session.send_resize(1, 1), Err(expected));
        assert_eq!(session.poll_timeout(), None);
    }

    #[test]
    fn output_is_acked_delivered_once_and_duplicates_are_re_acked() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, output(0, PayloadType::Output, b"hi"));
        session.handle_frame(now, output(0, PayloadType::Output, b"hi"));
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![0, 0]);
        assert_eq!(
            events(&mut session),
            vec![Event::Output(Bytes::from_static(b"hi"))]
        );
        assert_eq!(session.stats().duplicates_received, 1);
    }

    #[test]
    fn output_before_a_lost_first_message_waits_for_the_gap() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, output(2, PayloadType::Output, b"c"));
        session.handle_frame(now, output(1, PayloadType::Output, b"b"));
        assert!(events(&mut session).is_empty());
        assert_eq!(acked_seqs(&drain(&mut session, now)), vec![2, 1]);
        assert_eq!(session.reorder_buffered(), (2, 2));
        session.handle_frame(now, output(0, PayloadType::Output, b"a"));
        let delivered: Vec<_> = events(&mut session);
        assert_eq!(
            delivered,
            vec![
                Event::Output(Bytes::from_static(b"a")),
                Event::Output(Bytes::from_static(b"b")),
                Event::Output(Bytes::from_static(b"c")),
            ]
        );
        assert_eq!(session.reorder_buffered(), (0, 0));
        assert_eq!(session.expected_sequence_number(), 3);
    }

    #[test]
    fn out_of_order_buffer_is_bounded_and_drops_without_ack() {
        let now = Instant::now();
        let mut config = config();
        config.max_reorder_frames = 2;
        config.max_reorder_bytes = 2;
        let mut session = session_with(config, now);
        session.handle_frame(now, output(3, PayloadType::Output, b"d"));
        session.handle_frame(now, output(1, PayloadType::Output, b"b"));
        session.handle_frame(now, output(2, PayloadType::Output, b"c"));
        assert_eq!(acked_seqs(&drain(&mut session, now)), vec![1, 2]);
        assert_eq!(session.stats().reorder_dropped, 1);
        assert_eq!(session.reorder_buffered(), (2, 2));
    }

    #[test]
    fn payload_types_are_routed_separately() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, output(0, PayloadType::Output, b"out"));
        session.handle_frame(now, output(1, PayloadType::StdErr, b"err"));
        session.handle_frame(now, output(2, PayloadType::ExitCode, b"EXIT_CODE: 3"));
        session.handle_frame(now, output(3, PayloadType::Other(99), b"?"));
        assert_eq!(
            events(&mut session),
            vec![
                Event::Output(Bytes::from_static(b"out")),
                Event::Stderr(Bytes::from_static(b"err")),
                Event::ExitCode(3),
            ]
        );
        assert_eq!(acked_seqs(&drain(&mut session, now)), vec![0, 1, 2, 3]);
    }

    fn handshake_request(actions: Vec<RequestedClientAction>) -> Bytes {
        let request = HandshakeRequest {
            agent_version: "3.3.0.0".to_owned(),
            requested_client_actions: actions,
        };
        Frame::stream(
            MessageType::OutputStreamData,
            0,
            PayloadType::HandshakeRequest,
            request.to_bytes(),
            DATE,
            Uuid::from_u128(1),
        )
        .to_bytes()
    }

    /// Found by the `session_frames` fuzz target: every resize used to be queued, so a stream
    /// of them against an agent that acks nothing grew the unacked buffer without bound.
    #[test]
    fn resizes_while_the_window_is_full_keep_only_the_latest() {
        let now = Instant::now();
        let mut session = session_with(
            SessionConfig {
                max_unacked_bytes: 2048,
                ..config()
            },
            now,
        );
        session
            .send_input(Bytes::from(vec![b'x'; 2048]))
            .expect("open");
        let sent = drain(&mut session, now);
        assert!(!session.can_send());
        let unacked = session.unacked_bytes();
        for cols in 1..=500 {
            session.send_resize(cols, 24).expect("open");
        }
        assert_eq!(session.unacked_bytes(), unacked);
        assert!(drain(&mut session, now).is_empty());

        session.handle_frame(now, ack_of(&sent[0]));
        let frames = drain(&mut session, now);
        let sizes: Vec<_> = frames
            .iter()
            .filter(|f| f.payload_type == PayloadType::Size)
            .map(|f| TerminalSize::from_payload(&f.payload).expect("json"))
            .collect();
        assert_eq!(
            sizes,
            vec![TerminalSize {
                cols: 500,
                rows: 24
            }]
        );
    }

    #[test]
    fn handshake_answers_session_type_and_resends_an_early_size() {
        let now = Instant::now();
        let mut session = session(now);
        session.send_resize(100, 30).expect("open");
        drain(&mut session, now);
        session.handle_frame(
            now,
            handshake_request(vec![RequestedClientAction::session_type(
                "NonInteractiveCommands",
            )]),
        );
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![0]);
        let stream: Vec<_> = frames
            .iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .collect();
        assert_eq!(stream.len(), 2);
        assert_eq!(stream[0].payload_type, PayloadType::HandshakeResponse);
        assert_eq!(stream[0].sequence_number, 1);
        let response = HandshakeResponse::from_payload(&stream[0].payload).expect("json");
        assert_eq!(response.processed_client_actions.len(), 1);
        assert_eq!(
            response.processed_client_actions[0].action_status,
            action_status::SUCCESS
        );
        assert_eq!(stream[1].payload_type, PayloadType::Size);
        assert_eq!(stream[1].sequence_number, 2);

        let complete = HandshakeComplete {
            handshake_time_to_complete: 5,
            customer_message: "hello".to_owned(),
        };
        let frame = Frame::stream(
            MessageType::OutputStreamData,
            1,
            PayloadType::HandshakeComplete,
            complete.to_bytes(),
            DATE,
            Uuid::from_u128(2),
        );
        session.handle_frame(now, frame.to_bytes());
        assert_eq!(
            events(&mut session),
            vec![
                Event::SessionType("NonInteractiveCommands".to_owned()),
                Event::HandshakeComplete {
                    customer_message: "hello".to_owned()
                },
            ]
        );
    }

    // ----- KMS (README "KMS encryption") -----

    const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/k";
    const AGENT_KEY: [u8; 32] = [0x11; 32];
    const CLIENT_KEY: [u8; 32] = [0x22; 32];

    /// The agent side of the cipher, written here with aws-lc-rs directly (not through
    /// `SessionCipher`): the nonce is the agent's counter, as the real agent does.
    fn agent_seal(key: &[u8; 32], counter: u64, plain: &[u8]) -> Bytes {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("key"));
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .expect("seal");
        Bytes::from([&nonce[..], &body].concat())
    }

    fn agent_open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("key"));
        let (nonce, body) = sealed.split_at(12);
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key.open_in_place(nonce, Aad::empty(), &mut body).ok()?;
        Some(plain.to_vec())
    }

    fn grant() -> DataKeyGrant {
        DataKeyGrant {
            ciphertext_blob: Bytes::from_static(b"opaque-blob"),
            data_key: DataKey::from_slice(&[AGENT_KEY, CLIENT_KEY].concat()).expect("64"),
        }
    }

    fn agent_stream(seq: i64, payload_type: PayloadType, payload: Bytes) -> Bytes {
        Frame::stream(
            MessageType::OutputStreamData,
            seq,
            payload_type,
            payload,
            DATE,
            Uuid::from_u128(seq as u128 + 100),
        )
        .to_bytes()
    }

    fn kms_request(challenge: Option<&str>) -> Bytes {
        handshake_request(vec![
            RequestedClientAction::session_type("InteractiveCommands"),
            RequestedClientAction::kms_encryption(KEY_ARN, challenge),
        ])
    }

    fn challenge_frame(seq: i64, plain: &[u8]) -> Bytes {
        let challenge = EncryptionChallenge {
            challenge: BASE64.encode(agent_seal(&AGENT_KEY, 7, plain)),
        };
        agent_stream(seq, PayloadType::EncChallengeRequest, challenge.to_bytes())
    }

    fn complete_frame(seq: i64) -> Bytes {
        let complete = HandshakeComplete {
            handshake_time_to_complete: 1,
            customer_message: "This session is encrypted using AWS KMS.".to_owned(),
        };
        agent_stream(seq, PayloadType::HandshakeComplete, complete.to_bytes())
    }

    /// A session through the whole KMS handshake (no challenge string): returns it with the
    /// frames it sent.
    fn encrypted_session(now: Instant) -> (Session, Vec<Frame>) {
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        session.handle_frame(now, challenge_frame(1, b"challenge"));
        session.handle_frame(now, complete_frame(2));
        let sent = drain(&mut session, now);
        events(&mut session);
        (session, sent)
    }

    #[test]
    fn a_kms_action_asks_for_a_data_key_and_holds_the_response() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(Some("Y2hhbGxlbmdl")));
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![0]);
        assert!(
            frames
                .iter()
                .all(|f| f.message_type == MessageType::Acknowledge),
            "no response before the data key"
        );
        assert_eq!(
            events(&mut session),
            vec![
                Event::SessionType("InteractiveCommands".to_owned()),
                Event::DataKeyRequested(DataKeyRequest {
                    key_id: KEY_ARN.to_owned(),
                    challenge: Some("Y2hhbGxlbmdl".to_owned()),
                }),
            ]
        );
        assert!(!session.is_encrypted());
        assert_eq!(session.poll_timeout(), None, "no handshake timer yet");
    }

    #[test]
    fn the_response_carries_the_blob_and_acknowledges_a_challenge() {
        for challenge in [Some("Y2hhbGxlbmdl"), None] {
            let now = Instant::now();
            let mut session = session(now);
            session.handle_frame(now, kms_request(challenge));
            drain(&mut session, now);
            session.supply_data_key(now, Ok(grant()));
            assert!(
                session.is_encrypted(),
                "encryption is on before the response leaves"
            );
            let frames = drain(&mut session, now);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].payload_type, PayloadType::HandshakeResponse);
            assert_eq!(frames[0].sequence_number, 0);
            let response = HandshakeResponse::from_payload(&frames[0].payload).expect("json");
            let statuses: Vec<_> = response
                .processed_client_actions
                .iter()
                .map(|a| (a.action_type.as_str(), a.action_status))
                .collect();
            assert_eq!(statuses, vec![("SessionType", 1), ("KMSEncryption", 1)]);
            let result = &response.processed_client_actions[1].action_result;
            assert_eq!(result["KMSCipherTextKey"], BASE64.encode(b"opaque-blob"));
            assert!(result["KMSCipherTextHash"].is_null());
            let expected_ack = challenge.map(|_| serde_json::Value::Bool(true));
            assert_eq!(
                result.get("ChallengeAcknowledgement").cloned(),
                expected_ack
            );
            assert_eq!(
                session.timers.get(Timer::KmsHandshake),
                Some(now + session.config().kms_handshake_timeout)
            );
        }
    }

    #[test]
    fn the_challenge_is_opened_with_the_agent_key_and_sealed_again_with_ours() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        drain(&mut session, now);
        session.handle_frame(now, challenge_frame(1, b"sixty-four random bytes"));
        let frames = drain(&mut session, now);
        assert_eq!(acked_seqs(&frames), vec![1]);
        let answer = frames
            .iter()
            .find(|f| f.payload_type == PayloadType::EncChallengeResponse)
            .expect("type 9 answer");
        assert_eq!(answer.sequence_number, 1);
        let answer = EncryptionChallenge::from_payload(&answer.payload).expect("json");
        let sealed = BASE64.decode(answer.challenge).expect("base64");
        assert_eq!(
            agent_open(&CLIENT_KEY, &sealed).as_deref(),
            Some(&b"sixty-four random bytes"[..])
        );
        assert_eq!(agent_open(&AGENT_KEY, &sealed), None, "not the agent's key");
        assert_ne!(
            &sealed[..12],
            &agent_seal(&AGENT_KEY, 7, b"")[..12],
            "a fresh nonce"
        );
    }

    #[test]
    fn only_type_1_input_is_sealed_and_types_1_11_12_are_opened() {
        let now = Instant::now();
        let (mut session, sent) = encrypted_session(now);
        // 0 response, 1 challenge answer; HandshakeComplete (re)sends nothing without a size.
        let stream: Vec<_> = sent
            .iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .map(|f| (f.sequence_number, f.payload_type))
            .collect();
        assert_eq!(
            stream,
            vec![
                (0, PayloadType::HandshakeResponse),
                (1, PayloadType::EncChallengeResponse)
            ]
        );
        session.send_resize(100, 30).expect("open");
        session
            .send_input(Bytes::from_static(b"ls\n"))
            .expect("open");
        let frames = drain(&mut session, now);
        assert_eq!(frames[0].payload_type, PayloadType::Size);
        assert_eq!(frames[0].payload.as_ref(), br#"{"cols":100,"rows":30}"#);
        assert_eq!(frames[1].payload_type, PayloadType::Output);
        assert_eq!(frames[1].sequence_number, 3);
        assert_eq!(frames[1].payload.len(), 3 + 28);
        assert_eq!(
            agent_open(&CLIENT_KEY, &frames[1].payload).as_deref(),
            Some(&b"ls\n"[..])
        );

        session.handle_frame(
            now,
            agent_stream(3, PayloadType::Output, agent_seal(&AGENT_KEY, 8, b"out")),
        );
        session.handle_frame(
            now,
            agent_stream(4, PayloadType::StdErr, agent_seal(&AGENT_KEY, 9, b"err")),
        );
        session.handle_frame(
            now,
            agent_stream(
                5,
                PayloadType::ExitCode,
                agent_seal(&AGENT_KEY, 10, b"EXIT_CODE: 3"),
            ),
        );
        assert_eq!(
            events(&mut session),
            vec![
                Event::Output(Bytes::from_static(b"out")),
                Event::Stderr(Bytes::from_static(b"err")),
                Event::ExitCode(3),
            ]
        );
    }

    #[test]
    fn input_chunks_are_sealed_each_with_its_own_nonce() {
        let now = Instant::now();
        let (mut session, _) = encrypted_session(now);
        session
            .send_input(Bytes::from(vec![b'x'; 3000]))
            .expect("open");
        let frames = drain(&mut session, now);
        let nonces: std::collections::HashSet<_> =
            frames.iter().map(|f| f.payload[..12].to_vec()).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(nonces.len(), 3);
        let plain: Vec<u8> = frames
            .iter()
            .flat_map(|f| agent_open(&CLIENT_KEY, &f.payload).expect("opens"))
            .collect();
        assert_eq!(plain, vec![b'x'; 3000]);
    }

    #[test]
    fn a_retransmission_resends_the_same_sealed_bytes() {
        let now = Instant::now();
        let (mut session, _) = encrypted_session(now);
        session
            .send_input(Bytes::from_static(b"secret"))
            .expect("open");
        let first = drain(&mut session, now);
        let deadline = session.poll_timeout().expect("retransmission timer");
        session.handle_timeout(deadline);
        let again = drain(&mut session, deadline);
        let input = |frames: &[Frame]| -> Vec<Frame> {
            frames
                .iter()
                .filter(|f| f.payload_type == PayloadType::Output)
                .cloned()
                .collect()
        };
        assert_eq!(input(&again), input(&first), "same message, same nonce");
        // A reconnect resends it the same way and keeps the keys and the nonce counter.
        session.reconnect(deadline, "tok-2").expect("reconnect");
        let resent = drain(&mut session, deadline);
        assert_eq!(input(&resent), input(&first));
        session
            .send_input(Bytes::from_static(b"next"))
            .expect("open");
        let next = drain(&mut session, deadline);
        let next = input(&next);
        assert_ne!(next[0].payload[..12], first[0].payload[..12]);
        assert_eq!(
            agent_open(&CLIENT_KEY, &next[0].payload).as_deref(),
            Some(&b"next"[..])
        );
        session.handle_frame(
            deadline,
            agent_stream(3, PayloadType::Output, agent_seal(&AGENT_KEY, 8, b"o")),
        );
        assert_eq!(
            events(&mut session),
            vec![Event::Output(Bytes::from_static(b"o"))]
        );
    }

    #[test]
    fn input_during_the_handshake_waits_for_it_and_is_then_sealed() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session
            .send_input(Bytes::from_static(b"early"))
            .expect("open");
        session.send_resize(90, 20).expect("open");
        session.supply_data_key(now, Ok(grant()));
        session.handle_frame(now, challenge_frame(1, b"c"));
        let before: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .map(|f| f.payload_type)
            .collect();
        assert_eq!(
            before,
            vec![
                PayloadType::HandshakeResponse,
                PayloadType::EncChallengeResponse
            ]
        );
        session.handle_frame(now, complete_frame(2));
        let after: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.message_type == MessageType::InputStreamData)
            .collect();
        assert_eq!(after.len(), 2);
        assert_eq!(
            (after[0].sequence_number, after[0].payload_type),
            (2, PayloadType::Size)
        );
        assert_eq!(
            (after[1].sequence_number, after[1].payload_type),
            (3, PayloadType::Output)
        );
        assert_eq!(
            agent_open(&CLIENT_KEY, &after[1].payload).as_deref(),
            Some(&b"early"[..])
        );
        assert!(events(&mut session).contains(&Event::HandshakeComplete {
            customer_message: "This session is encrypted using AWS KMS.".to_owned()
        }));
        assert_eq!(
            session.poll_timeout(),
            session.timers.get(Timer::Retransmit)
        );
    }

    #[test]
    fn input_typed_before_the_handshake_request_is_sent_again_after_it() {
        // Keys typed before the agent's first message go out at once (the agent may never
        // handshake); the agent discards them while it handshakes, so they go again, sealed.
        let now = Instant::now();
        let mut session = session(now);
        session
            .send_input(Bytes::from_static(b"typed ahead"))
            .expect("open");
        let early: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.payload_type == PayloadType::Output)
            .collect();
        assert_eq!(early.len(), 1);
        assert_eq!(&early[0].payload[..], b"typed ahead", "no keys yet: plain");
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        session.handle_frame(now, challenge_frame(1, b"c"));
        session.handle_frame(now, complete_frame(2));
        let resent: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| {
                f.message_type == MessageType::InputStreamData
                    && f.payload_type == PayloadType::Output
            })
            .collect();
        assert_eq!(resent.len(), 1, "sent again once, after the handshake");
        assert!(resent[0].sequence_number > early[0].sequence_number);
        assert_eq!(
            agent_open(&CLIENT_KEY, &resent[0].payload).as_deref(),
            Some(&b"typed ahead"[..])
        );
    }

    #[test]
    fn input_typed_ahead_of_a_session_without_handshake_is_sent_once() {
        let now = Instant::now();
        let mut session = session(now);
        session
            .send_input(Bytes::from_static(b"ls\n"))
            .expect("open");
        let first = drain(&mut session, now);
        session.handle_frame(
            now,
            agent_stream(0, PayloadType::Output, Bytes::from_static(b"$ ")),
        );
        let later: Vec<_> = drain(&mut session, now)
            .into_iter()
            .filter(|f| f.payload_type == PayloadType::Output)
            .collect();
        assert!(later.is_empty(), "nothing sent twice: {later:?}");
        assert!(
            first
                .iter()
                .any(|f| f.payload_type == PayloadType::Output && &f.payload[..] == b"ls\n")
        );
    }

    #[test]
    fn a_kms_failure_ends_the_session_with_it() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        drain(&mut session, now);
        let denied = KmsError::GenerateDataKeyDenied {
            key_id: KEY_ARN.to_owned(),
            aws: "(AccessDeniedException)".to_owned(),
        };
        session.supply_data_key(now, Err(denied.clone()));
        assert!(events(&mut session).contains(&Event::Lost {
            reason: denied.clone().into()
        }));
        assert_eq!(session.error(), Some(&ChannelError::Kms(denied)));
        // A late second answer changes nothing.
        session.supply_data_key(now, Ok(grant()));
        assert!(!session.is_encrypted());
    }

    #[test]
    fn no_handshake_complete_in_time_fails_with_the_likely_causes() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        drain(&mut session, now);
        let deadline = now + session.config().kms_handshake_timeout;
        // Acks keep the retransmission timer quiet; only the handshake bound is left.
        session.handle_frame(
            now,
            ack_of(&Frame::stream(
                MessageType::InputStreamData,
                0,
                PayloadType::HandshakeResponse,
                Bytes::from_static(b"x"),
                DATE,
                Uuid::from_u128(1),
            )),
        );
        session.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(session.error(), None);
        session.handle_timeout(deadline);
        let error = session.error().cloned().expect("failed");
        assert!(matches!(
            error,
            ChannelError::Kms(KmsError::HandshakeTimeout { .. })
        ));
        let text = error.to_string();
        assert!(
            text.contains("kms:Decrypt") && text.contains("key policy"),
            "{text}"
        );
        assert!(text.contains("challenge"), "{text}");
    }

    #[test]
    fn the_session_ending_during_the_handshake_names_the_task_role() {
        let now = Instant::now();
        let mut session = session(now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        let closed = ChannelClosed {
            output: "KMS decryption failed".to_owned(),
            ..ChannelClosed::default()
        };
        session.handle_frame(now, control(MessageType::ChannelClosed, closed.to_bytes()));
        let error = session.error().cloned().expect("failed");
        assert!(matches!(
            error,
            ChannelError::Kms(KmsError::AgentEndedHandshake { .. })
        ));
        let text = error.to_string();
        assert!(
            text.contains("kms:Decrypt") && text.contains(KEY_ARN),
            "{text}"
        );
        assert!(text.contains("KMS decryption failed"), "{text}");

        // A dropped socket at that point too, even when the session could be resumed.
        let mut config = config();
        config.resumable = true;
        let mut session = session_with(config, now);
        session.handle_frame(now, kms_request(None));
        session.supply_data_key(now, Ok(grant()));
        session.link_lost(ChannelError::Transport(TransportError::ClosedMidway {
            code: None,
            reason: String::new(),
        }));
        assert!(matches!(
            session.error(),
            Some(ChannelError::Kms(KmsError::AgentEndedHandshake { .. }))
        ));
    }

    #[test]
    fn forged_short_or_unencrypted_payloads_are_protocol_errors() {
        let now = Instant::now();
        for bad in [
            Bytes::from_static(b"short"),
            agent_seal(&CLIENT_KEY, 8, b"wrong key"),
            {
                let mut flipped = agent_seal(&AGENT_KEY, 8, b"flipped").to_vec();
                flipped[14] ^= 1;
                Bytes::from(flipped)
            },
        ] {
            let (mut session, _) = encrypted_session(now);
            session.handle_frame(now, agent_stream(3, PayloadType::Output, bad));
            assert!(
                matches!(
                    session.error(),
                    Some(ChannelError::Kms(KmsError::Crypto(_)))
                ),
                "{:?}",
                session.error()
            );
            assert!(
                !events(&mut session)
                    .iter()
                    .any(|e| matches!(e, Event::Output(_)))
            );
        }
        // A challenge before any key, and unreadable challenges.
        let mut session = session(now);
        session.handle_frame(now, challenge_frame(0, b"c"));
        assert!(matches!(
            session.error(),
            Some(ChannelError::Kms(KmsError::Protocol { .. }))
        ));
        for payload in [
            &br#"{"Challenge":"%%%"}"#[..],
            b"not json",
            br#"{"Challenge":"AAAA"}"#,
        ] {
            let mut session = self::session(now);
            session.handle_frame(now, kms_request(None));
            session.supply_data_key(now, Ok(grant()));
            session.handle_frame(
                now,
                agent_stream(
                    1,
                    PayloadType::EncChallengeRequest,
                    Bytes::copy_from_slice(payload),
                ),
            );
            assert!(session.error().is_some(), "{payload:?}");
        }
    }

    #[test]
    fn a_kms_action_without_a_key_id_is_refused() {
        let now = Instant::now();
        let mut session = session(now);
        let action = RequestedClientAction {
            action_type: action::KMS_ENCRYPTION.to_owned(),
            action_parameters: serde_json::json!({"Challenge": "x"}),
        };
        session.handle_frame(now, handshake_request(vec![action]));
        assert!(matches!(
            session.error(),
            Some(ChannelError::Handshake(
                HandshakeError::InvalidRequest { .. }
            ))
        ));
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
            reason: "connection refused".into(),
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
    fn can_send_turns_false_at_the_unacked_bound() {
        let now = Instant::now();
        let mut config = config();
        config.max_unacked_bytes = 2048;
        let mut session = session_with(config, now);
        session
            .send_input(Bytes::from(vec![0u8; 2047]))
            .expect("open");
        assert!(session.can_send());
        session.send_input(Bytes::from_static(b"x")).expect("open");
        assert!(!session.can_send());
        let frames = drain(&mut session, now);
        session.handle_frame(now, ack_of(&frames[0]));
        assert!(session.can_send());

        let mut config = self::config();
        config.max_unacked_frames = 2;
        let mut session = session_with(config, now);
        session.send_input(Bytes::from_static(b"1")).expect("open");
        assert!(session.can_send());
        session.send_input(Bytes::from_static(b"2")).expect("open");
        assert!(!session.can_send(), "bounded by message count too");
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
