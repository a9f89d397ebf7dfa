//! The data channel's agent side: one tokio task per session that plays MGS and the SSM agent
//! at once (`docs/protocol.md` §13). It starts the command under a PTY, streams its
//! output in UTF-8-safe chunks, writes input to the PTY with back-pressure, applies resizes,
//! and ends with `channel_closed` once every output byte is acknowledged.
//!
//! A session on a cluster with a KMS key first runs the KMS handshake ([`kms`]):
//! HandshakeRequest (seq 0) with the KMSEncryption action, the agent's own Decrypt of the
//! client's data key, the encryption challenge (seq 1), HandshakeComplete (seq 2); output from
//! seq 3 is encrypted. Refusals and Decrypt errors end the session at once with
//! `channel_closed`; a missing or wrong challenge answer ends it when the challenge times out.
//!
//! Protocol state lives in the sans-IO [`channel::AgentChannel`]; faults in
//! [`crate::faults::FaultLine`]. This module is only the driver: one `select!` over the
//! websocket, the PTY, the child, timers, reconnects and shutdown. It never reuses the
//! client's `Session`, and it kills the command's process group whenever the session ends.

pub mod channel;
pub mod kms;
pub mod pty;
pub mod utf8;
pub mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use nix::pty::Winsize;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{AgentConfig, Direction, FaultConfig, KmsDecrypt};
use crate::counters::Counters;
use crate::faults::{FaultLine, FrameInfo};
use crate::kms::{Kms, KmsError};
use crate::sessions::{SessionRegistry, SessionSpec};
use channel::{AgentChannel, ChannelSettings};
use ecs_exec_wire::payload::{
    HandshakeComplete, HandshakeRequest, HandshakeResponse, RequestedClientAction, TerminalSize,
};
use wire::{MessageType, PayloadType};

/// A websocket accepted by the emulator's HTTP server.
pub type Connection = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What every session shares.
#[derive(Debug, Clone)]
pub struct AgentShared {
    /// Agent behaviour.
    pub agent: AgentConfig,
    /// Fault injection.
    pub faults: FaultConfig,
    /// Counters for tests.
    pub counters: Arc<Counters>,
    /// Sessions (for reattach and removal).
    pub sessions: SessionRegistry,
    /// Flips to true when the emulator stops.
    pub shutdown: watch::Receiver<bool>,
    /// The emulator's KMS, for the agent's Decrypt of the client's data key.
    pub kms: Arc<Kms>,
}

/// Session type announced in the optional handshake.
const SESSION_TYPE: &str = "InteractiveCommands";
/// Version the fake agent claims.
const AGENT_VERSION: &str = "3.3.0.0";
/// Realistic mode: the real agent's pause before its first PTY read, and between reads.
const REALISTIC_FIRST_READ: Duration = Duration::from_secs(1);
const REALISTIC_READ_PAUSE: Duration = Duration::from_millis(1);
const REALISTIC_READ_SIZE: usize = 1024;
/// After the command exits, how long others may keep the terminal open before they are killed.
const LINGER_AFTER_EXIT: Duration = Duration::from_millis(500);
/// The real agent's limit on waiting for acks of the last output (realistic mode).
const REALISTIC_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a closed channel waits for the client to hang up before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Largest input payload written to the PTY in one call.
const PTY_WRITE_MAX: usize = 64 * 1024;

struct Link {
    sink: SplitSink<Connection, Message>,
    stream: SplitStream<Connection>,
    /// Binary frames that crossed this connection (both ways), for `disconnect_after_frames`.
    frames: u64,
    /// Drop it after this many frames (first connection only).
    disconnect_after: Option<u64>,
}

enum Phase {
    /// Waiting for the client's HandshakeResponse.
    Handshaking,
    /// KMS: waiting for a correct answer to the encryption challenge.
    Challenging,
    /// The command runs (or has run).
    Running,
}

/// Runs one session on its first websocket until it ends.
pub async fn run_session(shared: AgentShared, spec: Arc<SessionSpec>, connection: Connection) {
    let counters = Arc::clone(&shared.counters);
    Counters::bump(&counters.sessions_started);
    let (reattach_tx, reattach_rx) = mpsc::channel(1);
    shared.sessions.mark_running(&spec.session_id, reattach_tx);
    let terminate = shared.sessions.terminate_signal(&spec.session_id);
    let mut driver = Driver::new(shared.clone(), Arc::clone(&spec), connection);
    let outcome = driver.run(reattach_rx, terminate).await;
    tracing::info!(session = %spec.session_id, ?outcome, "session ended");
    if outcome == Outcome::ClosedCleanly {
        Counters::bump(&counters.sessions_closed_cleanly);
    }
    drop(driver); // kills the process group
    shared.sessions.remove(&spec.session_id);
    Counters::bump(&counters.sessions_finished);
    counters.notify();
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited, all output was acked, channel_closed was sent.
    ClosedCleanly,
    /// The websocket went away (and no reconnect came in time).
    Disconnected,
    /// The command ended but the client did not acknowledge all output in time;
    /// channel_closed was sent anyway.
    DrainTimedOut,
    /// TerminateSession was called.
    Terminated,
    /// The emulator is stopping.
    Shutdown,
    /// The agent ended the session during the handshake (refusal, Decrypt error, timeout).
    HandshakeFailed,
}

struct Driver {
    shared: AgentShared,
    spec: Arc<SessionSpec>,
    channel: AgentChannel,
    outbound: FaultLine,
    inbound: FaultLine,
    link: Option<Link>,
    disconnected_at: Option<Instant>,
    phase: Phase,
    size: Winsize,
    pty: Option<pty::PtyMaster>,
    group: Option<pty::ProcessGroup>,
    exit_code: Option<i32>,
    exited_at: Option<Instant>,
    lingerers_killed: bool,
    /// When the command had exited and all its output was read.
    drained_at: Option<Instant>,
    pty_eof: bool,
    carry: Vec<u8>,
    read_buf: Vec<u8>,
    read_not_before: Option<Instant>,
    pending_input: VecDeque<Bytes>,
    pending_input_bytes: usize,
    closed_sent: bool,
    /// KMS sessions: the `Challenge` string sent in the HandshakeRequest.
    kms_challenge: Option<String>,
    /// KMS sessions after the Decrypt: encrypts output.
    output_cipher: Option<kms::OutputCipher>,
    /// When the handshake started, for HandshakeTimeToComplete.
    handshake_started: Option<Instant>,
    /// The handshake (or the challenge) must be done by then.
    handshake_deadline: Option<Instant>,
    /// Why the handshake failed; the session ends on the next pump.
    handshake_failure: Option<kms::HandshakeFailure>,
}

impl Driver {
    fn new(shared: AgentShared, spec: Arc<SessionSpec>, connection: Connection) -> Self {
        let agent = &shared.agent;
        let faults = &shared.faults;
        let channel = AgentChannel::new(
            ChannelSettings {
                reorder_capacity: agent.reorder_capacity,
                reorder_max_bytes: agent.max_pending_input_bytes.max(1024 * 1024),
                realistic: agent.realistic,
            },
            wire::system_clock_ms,
        );
        let line = |direction, rates| {
            FaultLine::new(
                direction,
                rates,
                &faults.rules,
                faults.seed,
                Arc::clone(&shared.counters),
            )
        };
        let outbound = line(Direction::Outbound, &faults.outbound);
        let inbound = line(Direction::Inbound, &faults.inbound);
        let (sink, stream) = connection.split();
        let read_size = if agent.realistic {
            REALISTIC_READ_SIZE
        } else {
            agent.read_chunk_bytes
        };
        Self {
            link: Some(Link {
                sink,
                stream,
                frames: 0,
                disconnect_after: faults.disconnect_after_frames,
            }),
            shared: shared.clone(),
            spec,
            channel,
            outbound,
            inbound,
            disconnected_at: None,
            phase: Phase::Running,
            size: Winsize {
                ws_row: 24,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
            pty: None,
            group: None,
            exit_code: None,
            exited_at: None,
            lingerers_killed: false,
            drained_at: None,
            pty_eof: false,
            carry: Vec::new(),
            read_buf: vec![0u8; read_size],
            read_not_before: None,
            pending_input: VecDeque::new(),
            pending_input_bytes: 0,
            closed_sent: false,
            kms_challenge: None,
            output_cipher: None,
            handshake_started: None,
            handshake_deadline: None,
            handshake_failure: None,
        }
    }

    async fn run(
        &mut self,
        mut reattach: mpsc::Receiver<Connection>,
        terminate: Option<Arc<tokio::sync::Notify>>,
    ) -> Outcome {
        let now = Instant::now();
        if self.shared.agent.handshake || self.spec.kms_key_id.is_some() {
            self.phase = Phase::Handshaking;
            let mut actions = vec![RequestedClientAction::session_type(SESSION_TYPE)];
            if let Some(key_id) = &self.spec.kms_key_id {
                if self.shared.agent.kms_challenge {
                    self.kms_challenge = Some(kms::new_challenge_string());
                }
                actions.push(kms::request_action(key_id, self.kms_challenge.as_deref()));
                self.channel.set_input_gate(kms::InputGate::AwaitingKeys);
            }
            let request = HandshakeRequest {
                agent_version: AGENT_VERSION.to_string(),
                requested_client_actions: actions,
            };
            self.handshake_started = Some(now);
            self.handshake_deadline =
                Some(now + Duration::from_millis(self.shared.agent.handshake_timeout_ms));
            self.channel.send_output(
                now.into_std(),
                PayloadType::HandshakeRequest.as_u32(),
                &request.to_bytes(),
            );
        } else {
            self.start_command(now);
        }
        let mut shutdown = self.shared.shutdown.clone();
        let terminate = terminate.unwrap_or_default();
        loop {
            if let Some(outcome) = self.pump(Instant::now()).await {
                return outcome;
            }
            if *shutdown.borrow() {
                return Outcome::Shutdown;
            }
            let deadline = self.next_deadline();
            let can_read = self.can_read_pty(Instant::now());
            let can_write = !self.pending_input.is_empty();
            let waiting_child = self.exit_code.is_none() && self.group.is_some();
            let read_socket = self.should_read_socket();
            tokio::select! {
                message = next_message(&mut self.link), if read_socket => {
                    self.handle_message(message).await;
                }
                read = read_pty(self.pty.as_ref(), &mut self.read_buf), if can_read => {
                    self.handle_pty_read(read);
                }
                written = write_pty(self.pty.as_ref(), self.pending_input.front()), if can_write => {
                    self.handle_pty_write(written);
                }
                code = wait_child(self.group.as_mut()), if waiting_child => {
                    self.exit_code = Some(code);
                    self.exited_at = Some(Instant::now());
                    tracing::debug!(session = %self.spec.session_id, code, "command exited");
                }
                () = sleep_until(deadline) => {}
                Some(connection) = reattach.recv() => self.reattach(connection),
                () = terminate.notified() => {
                    self.end_with_channel_closed("").await;
                    return Outcome::Terminated;
                }
                _ = shutdown.changed() => return Outcome::Shutdown,
            }
            if self.link.is_none() {
                let grace = Duration::from_secs(self.shared.agent.reconnect_grace_secs);
                match self.disconnected_at {
                    Some(at) if at.elapsed() >= grace => return Outcome::Disconnected,
                    Some(_) => {}
                    None => return Outcome::Disconnected,
                }
            }
        }
    }

    fn start_command(&mut self, now: Instant) {
        match pty::spawn(
            &self.spec.command,
            &self.spec.exec,
            self.size,
            Arc::clone(&self.shared.counters),
        ) {
            Ok((master, group)) => {
                tracing::info!(session = %self.spec.session_id, "command started");
                // The command line may carry the user's input (inline stdin): debug only.
                tracing::debug!(session = %self.spec.session_id, command = %self.spec.command, "command line");
                self.pty = Some(master);
                self.group = Some(group);
                if self.shared.agent.realistic {
                    self.read_not_before = Some(now + REALISTIC_FIRST_READ);
                }
            }
            Err(error) => {
                // The real agent reports start failures as terminal output, then ends.
                tracing::info!(session = %self.spec.session_id, %error, "command failed to start");
                let text = format!("{error}\r\n");
                self.send_stream(now, PayloadType::Output, text.as_bytes());
                self.exit_code = Some(127);
                self.pty_eof = true;
            }
        }
    }

    fn can_read_pty(&self, now: Instant) -> bool {
        self.pty.is_some()
            && !self.pty_eof
            && !self.channel.is_paused()
            && self.channel.unacked_bytes() < self.shared.agent.max_unacked_bytes
            && self.read_not_before.is_none_or(|t| t <= now)
    }

    /// When to stop waiting for the last acks; set once all output has been read.
    fn drain_deadline(&self) -> Option<Instant> {
        let drained_at = self.drained_at?;
        let limit = if self.shared.agent.realistic {
            REALISTIC_DRAIN_TIMEOUT
        } else {
            Duration::from_secs(self.shared.agent.drain_timeout_secs)
        };
        Some(drained_at + limit)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines: Vec<Instant> = Vec::with_capacity(7);
        if self.link.is_some() {
            deadlines.extend(self.drain_deadline());
        }
        deadlines.extend(self.channel.poll_timeout().map(Instant::from_std));
        deadlines.extend(self.outbound.poll_timeout().map(Instant::from_std));
        deadlines.extend(self.inbound.poll_timeout().map(Instant::from_std));
        if let Some(at) = self.read_not_before {
            deadlines.push(at);
        }
        if let (Some(exited), false) = (self.exited_at, self.pty_eof || self.lingerers_killed) {
            deadlines.push(exited + LINGER_AFTER_EXIT);
        }
        if let Some(at) = self.disconnected_at {
            deadlines.push(at + Duration::from_secs(self.shared.agent.reconnect_grace_secs));
        }
        deadlines.extend(self.handshake_deadline);
        deadlines.into_iter().min()
    }

    async fn handle_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let now = Instant::now();
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                Counters::bump(&self.shared.counters.frames_received);
                if tracing::enabled!(tracing::Level::TRACE) {
                    trace_frame("in", &bytes);
                }
                self.count_link_frame();
                if self.inbound.is_transparent() {
                    let accept = self.accepts_input();
                    self.channel.handle_frame(now.into_std(), &bytes, accept);
                } else {
                    let info = frame_info(&bytes);
                    let info = info.as_ref().map(|(t, s)| FrameInfo {
                        message_type: t.as_str(),
                        sequence_number: *s,
                    });
                    self.inbound.push(now.into_std(), bytes, info);
                }
            }
            // Pings are answered by tungstenite itself; text after the first frame and pongs
            // mean nothing here.
            Some(Ok(
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
            )) => {}
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => self.lose_link(now),
        }
    }

    /// Input back-pressure: while the PTY has a full queue of input, leave further frames in
    /// the socket (TCP then slows the client down) — unless acks are needed to free the
    /// output window, in which case frames are read and in-order input is refused unacked
    /// (the client resends it), so a command blocked on output can never deadlock us.
    fn should_read_socket(&self) -> bool {
        self.accepts_input()
            || self.pty.is_none()
            || self.pty_eof
            || self.channel.unacked_bytes() >= self.shared.agent.max_unacked_bytes
    }

    fn accepts_input(&self) -> bool {
        self.pending_input_bytes < self.shared.agent.max_pending_input_bytes
    }

    fn count_link_frame(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.frames += 1;
        if link.disconnect_after.is_some_and(|n| link.frames >= n) {
            tracing::info!(session = %self.spec.session_id, frames = link.frames, "dropping the websocket on purpose");
            Counters::bump(&self.shared.counters.disconnects_injected);
            self.lose_link(Instant::now());
        }
    }

    fn lose_link(&mut self, now: Instant) {
        if self.link.is_some() && self.shared.agent.reconnect_grace_secs == 0 {
            // With no grace the session ends with its socket. It leaves the registry before the
            // socket closes, so a client that sees the close and calls ResumeSession at once
            // always finds it gone, as it would on a real agent that ended the session.
            self.shared.sessions.remove(&self.spec.session_id);
        }
        if self.link.take().is_some() {
            tracing::info!(session = %self.spec.session_id, "websocket closed");
            self.disconnected_at = Some(now);
            self.channel.discard_transmit_queue();
            // Frames in flight on a dead socket are lost, as they would be on a real one.
            self.outbound.clear();
        }
    }

    fn reattach(&mut self, connection: Connection) {
        let (sink, stream) = connection.split();
        self.link = Some(Link {
            sink,
            stream,
            frames: 0,
            disconnect_after: None,
        });
        self.disconnected_at = None;
        Counters::bump(&self.shared.counters.reconnects);
        tracing::info!(session = %self.spec.session_id, "websocket re-attached");
        self.channel.resend_all(Instant::now().into_std());
    }

    fn handle_pty_read(&mut self, read: std::io::Result<usize>) {
        let now = Instant::now();
        let n = match read {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(session = %self.spec.session_id, %error, "pty read failed");
                0
            }
        };
        if n == 0 {
            self.pty_eof = true;
            self.flush_carry(now);
            return;
        }
        let mut filled = n;
        if !self.shared.agent.realistic {
            // A terminal hands out at most 4 KiB per read: gather more for bigger frames.
            while filled < self.read_buf.len() {
                let Some(pty) = self.pty.as_ref() else { break };
                let rest = self.read_buf.get_mut(filled..).unwrap_or_default();
                match pty.try_read(rest) {
                    Ok(Some(0)) => {
                        self.pty_eof = true;
                        break;
                    }
                    Ok(Some(more)) => filled += more,
                    Ok(None) | Err(_) => break,
                }
            }
        } else {
            self.read_not_before = Some(now + REALISTIC_READ_PAUSE);
        }
        Counters::add(&self.shared.counters.output_bytes, filled as u64);
        let fresh = self.read_buf.get(..filled).unwrap_or_default();
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(fresh);
        let (ready, wait) = utf8::split_ready(&data);
        if !ready.is_empty() {
            self.send_stream(now, PayloadType::Output, ready);
        }
        self.carry = wait.to_vec();
        if self.pty_eof {
            self.flush_carry(now);
        }
    }

    fn flush_carry(&mut self, now: Instant) {
        if !self.carry.is_empty() {
            let rest = std::mem::take(&mut self.carry);
            self.send_stream(now, PayloadType::Output, &rest);
        }
    }

    fn handle_pty_write(&mut self, written: std::io::Result<usize>) {
        match written {
            Ok(n) => {
                Counters::add(&self.shared.counters.input_bytes, n as u64);
                self.pending_input_bytes = self.pending_input_bytes.saturating_sub(n);
                if let Some(front) = self.pending_input.front_mut() {
                    if n >= front.len() {
                        self.pending_input.pop_front();
                    } else {
                        *front = front.slice(n..);
                    }
                }
            }
            Err(error) => {
                // The terminal is gone (command exited): input has nowhere to go.
                tracing::debug!(session = %self.spec.session_id, %error, "pty write failed");
                self.pending_input.clear();
                self.pending_input_bytes = 0;
            }
        }
    }

    /// Sends one stream message, encrypted when the session has keys and the type is one the
    /// agent encrypts. The channel keeps the sealed bytes, so a retransmission repeats them.
    fn send_stream(&mut self, now: Instant, payload_type: PayloadType, payload: &[u8]) {
        match &mut self.output_cipher {
            Some(cipher) if kms::OutputCipher::covers(payload_type) => {
                let sealed = cipher.seal(payload);
                self.channel
                    .send_output(now.into_std(), payload_type.as_u32(), &sealed);
            }
            _ => {
                self.channel
                    .send_output(now.into_std(), payload_type.as_u32(), payload);
            }
        }
    }

    /// KMS: the client's HandshakeResponse. Checks it, decrypts the data key as the task role
    /// would, and sends the encryption challenge; any failure ends the session at once.
    fn handle_kms_response(&mut self, now: Instant, key_id: &str, payload: &[u8]) {
        match self.unlock_keys(key_id, payload) {
            Ok((mut output, mut input)) => {
                let challenge = output.challenge_request(&mut input);
                self.channel
                    .set_input_gate(kms::InputGate::Encrypted(Box::new(input)));
                self.output_cipher = Some(output);
                self.channel.send_output(
                    now.into_std(),
                    PayloadType::EncChallengeRequest.as_u32(),
                    &challenge,
                );
                self.phase = Phase::Challenging;
                self.handshake_deadline =
                    Some(now + Duration::from_millis(self.shared.agent.kms_challenge_timeout_ms));
            }
            Err(failure) => self.fail_handshake(failure),
        }
    }

    fn unlock_keys(
        &self,
        key_id: &str,
        payload: &[u8],
    ) -> Result<(kms::OutputCipher, kms::InputCipher), kms::HandshakeFailure> {
        let answer = kms::read_response(payload)?;
        if self.shared.agent.require_challenge_ack && !answer.acknowledged {
            return Err(kms::HandshakeFailure::ChallengeNotAcknowledged);
        }
        let context = kms::decrypt_context(
            &self.spec.session_id,
            &self.spec.target,
            self.kms_challenge.as_deref(),
            answer.acknowledged,
        );
        let kms = &self.shared.kms;
        if self.shared.agent.kms_decrypt == KmsDecrypt::AccessDenied {
            let key_arn = kms.resolve(key_id).map_or(key_id, |k| k.arn.as_str());
            return Err(KmsError::AccessDenied {
                principal: format!(
                    "arn:aws:sts::{}:assumed-role/ecsTaskRole/{}",
                    kms.account_id(),
                    self.spec.task_id
                ),
                action: "kms:Decrypt".to_string(),
                key_arn: key_arn.to_string(),
            }
            .into());
        }
        let (_, data_key) = kms.decrypt(&answer.ciphertext_key, &context, Some(key_id))?;
        kms::split_data_key(&data_key)
    }

    fn fail_handshake(&mut self, failure: kms::HandshakeFailure) {
        tracing::info!(session = %self.spec.session_id, %failure, "handshake failed");
        self.handshake_deadline = None;
        self.handshake_failure = Some(failure);
    }

    /// HandshakeComplete, then the command starts.
    fn complete_handshake(&mut self, now: Instant, customer_message: &str) {
        let took = self
            .handshake_started
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let complete = HandshakeComplete {
            handshake_time_to_complete: i64::try_from(took.as_nanos()).unwrap_or(i64::MAX).max(1),
            customer_message: customer_message.to_string(),
        };
        self.channel.send_output(
            now.into_std(),
            PayloadType::HandshakeComplete.as_u32(),
            &complete.to_bytes(),
        );
        self.handshake_deadline = None;
        self.phase = Phase::Running;
        self.start_command(now);
    }

    fn handle_delivered(&mut self, now: Instant, payload_type: u32, payload: Bytes) {
        match (&self.phase, PayloadType::from_u32(payload_type)) {
            (Phase::Handshaking, PayloadType::HandshakeResponse)
                if self.spec.kms_key_id.is_some() =>
            {
                let key_id = self.spec.kms_key_id.clone().unwrap_or_default();
                self.handle_kms_response(now, &key_id, &payload);
            }
            (Phase::Challenging, PayloadType::EncChallengeResponse) => {
                // The channel's gate has checked the answer before acking it.
                Counters::bump(&self.shared.counters.kms_handshakes_completed);
                self.shared.counters.notify();
                self.complete_handshake(now, kms::CUSTOMER_MESSAGE);
            }
            (Phase::Handshaking, PayloadType::HandshakeResponse) => {
                let accepted = HandshakeResponse::from_payload(&payload)
                    .map(|r| {
                        r.processed_client_actions
                            .iter()
                            .all(|a| a.action_status == 1)
                    })
                    .unwrap_or(false);
                if !accepted {
                    tracing::info!(session = %self.spec.session_id, "handshake refused by the client");
                    self.exit_code = Some(1);
                    self.pty_eof = true;
                    self.phase = Phase::Running;
                    return;
                }
                self.complete_handshake(now, "");
            }
            (_, PayloadType::Size) => {
                if let Ok(size) = TerminalSize::from_payload(&payload) {
                    let cols = u16::try_from(size.cols).unwrap_or(u16::MAX);
                    let rows = u16::try_from(size.rows).unwrap_or(u16::MAX);
                    self.size.ws_col = cols;
                    self.size.ws_row = rows;
                    if let Some(pty) = &self.pty
                        && let Err(error) = pty.resize(cols, rows)
                    {
                        tracing::debug!(%error, "resize failed");
                    }
                }
            }
            (Phase::Running, PayloadType::Output)
                if self.pty.is_some() && !self.pty_eof && !payload.is_empty() =>
            {
                self.pending_input_bytes += payload.len();
                self.pending_input.push_back(payload);
            }
            // Before the handshake completes other payloads are dropped (already acked), as
            // the agent does; flags and unknown types are ignored.
            _ => {}
        }
    }

    /// Moves frames between the core, the fault lines and the socket; decides the end.
    async fn pump(&mut self, now: Instant) -> Option<Outcome> {
        if self.exited_at.is_some_and(|t| now >= t + LINGER_AFTER_EXIT)
            && !self.pty_eof
            && !self.lingerers_killed
        {
            // Someone else still holds the terminal open: end them so the output ends.
            self.lingerers_killed = true;
            if let Some(group) = &self.group {
                group.signal(Signal::SIGKILL);
            }
        }
        if self.read_not_before.is_some_and(|t| t <= now) && self.shared.agent.realistic {
            // Keep the pause marker only while it is in the future.
            self.read_not_before = None;
        }
        while let Some(frame) = self.inbound.poll(now.into_std()) {
            let accept = self.accepts_input();
            self.channel.handle_frame(now.into_std(), &frame, accept);
        }
        self.channel.handle_timeout(now.into_std());
        while let Some(delivered) = self.channel.poll_delivered() {
            self.handle_delivered(now, delivered.payload_type, delivered.payload);
        }
        self.collect_stats();
        if self.handshake_deadline.is_some_and(|at| now >= at) {
            self.fail_handshake(kms::HandshakeFailure::TimedOut);
        }
        if let Some(failure) = self.handshake_failure.take()
            && !self.closed_sent
        {
            if self.spec.kms_key_id.is_some() {
                Counters::bump(&self.shared.counters.kms_handshakes_failed);
            }
            self.flush_outbound(now).await;
            self.end_with_channel_closed(&failure.to_string()).await;
            return Some(Outcome::HandshakeFailed);
        }
        let finished = self.exit_code.is_some() && self.pty_eof && self.carry.is_empty();
        if finished && self.drained_at.is_none() {
            self.drained_at = Some(now);
        }
        if finished && !self.closed_sent && self.link.is_some() {
            if self.channel.all_acked() {
                self.end_with_channel_closed("").await;
                return Some(Outcome::ClosedCleanly);
            }
            if self.drain_deadline().is_some_and(|at| now >= at) {
                self.flush_outbound(now).await;
                self.end_with_channel_closed("").await;
                return Some(Outcome::DrainTimedOut);
            }
        }
        self.flush_outbound(now).await;
        None
    }

    /// Sends `channel_closed` (with `output` as its Output text) and hangs up.
    async fn end_with_channel_closed(&mut self, output: &str) {
        self.closed_sent = true;
        self.channel
            .send_channel_closed(&self.spec.session_id, &self.spec.target, output);
        self.flush_outbound(Instant::now()).await;
        // channel_closed must not wait behind an injected delay: send what is left now.
        let rest = self.outbound.drain_all(Instant::now().into_std());
        if let Some(link) = self.link.as_mut() {
            for frame in rest {
                let _ = link.sink.feed(Message::Binary(frame)).await;
            }
            let _ = link.sink.flush().await;
            let _ = link.sink.close().await;
            // Let the client finish reading (and acking stragglers) before the TCP connection
            // goes: closing at once can turn its last writes into a broken pipe that hides the
            // channel_closed already waiting in its receive buffer.
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(_)) = link.stream.next().await {}
            })
            .await;
        }
    }

    async fn flush_outbound(&mut self, now: Instant) {
        while let Some(frame) = self.channel.poll_transmit() {
            if self.outbound.is_transparent() {
                self.write_frame(frame).await;
                continue;
            }
            let info = frame_info(&frame);
            let info = info.as_ref().and_then(|(t, s)| {
                // channel_closed keeps its place but is never faulted.
                (*t != MessageType::ChannelClosed).then_some(FrameInfo {
                    message_type: t.as_str(),
                    sequence_number: *s,
                })
            });
            self.outbound.push(now.into_std(), frame, info);
        }
        while let Some(frame) = self.outbound.poll(now.into_std()) {
            self.write_frame(frame).await;
        }
        if let Some(link) = self.link.as_mut()
            && link.sink.flush().await.is_err()
        {
            self.lose_link(now);
        }
    }

    async fn write_frame(&mut self, frame: Bytes) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            trace_frame("out", &frame);
        }
        if link.sink.feed(Message::Binary(frame)).await.is_err() {
            self.lose_link(Instant::now());
            return;
        }
        Counters::bump(&self.shared.counters.frames_sent);
        self.count_link_frame();
    }

    fn collect_stats(&mut self) {
        let stats = self.channel.take_stats();
        let counters = &self.shared.counters;
        Counters::add(&counters.output_retransmits, stats.retransmits);
        Counters::add(&counters.duplicate_inputs, stats.duplicates);
        Counters::add(&counters.frames_invalid, stats.invalid);
        Counters::add(&counters.kms_inputs_undecryptable, stats.undecryptable);
        Counters::add(&counters.kms_challenges_rejected, stats.challenges_rejected);
        if stats.undecryptable + stats.challenges_rejected > 0 {
            counters.notify();
        }
    }
}

/// One line per frame at trace level (`EMULATOR_LOG=trace`): type, sequence, payload type
/// and length, never the payload.
fn trace_frame(direction: &str, bytes: &Bytes) {
    match wire::decode_shared(bytes) {
        Ok(frame) => tracing::trace!(
            direction,
            message_type = frame.message_type.as_str(),
            seq = frame.sequence_number,
            payload_type = frame.payload_type.as_u32(),
            len = frame.payload.len(),
            "frame"
        ),
        Err(error) => tracing::trace!(direction, %error, "undecodable frame"),
    }
}

fn frame_info(bytes: &[u8]) -> Option<(MessageType, i64)> {
    wire::decode(bytes)
        .ok()
        .map(|f| (f.message_type, f.sequence_number))
}

async fn next_message(
    link: &mut Option<Link>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match link {
        Some(link) => link.stream.next().await,
        None => std::future::pending().await,
    }
}

async fn read_pty(pty: Option<&pty::PtyMaster>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pty {
        Some(pty) => pty.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_pty(pty: Option<&pty::PtyMaster>, data: Option<&Bytes>) -> std::io::Result<usize> {
    match (pty, data) {
        (Some(pty), Some(data)) => {
            let end = data.len().min(PTY_WRITE_MAX);
            pty.write(data.get(..end).unwrap_or_default()).await
        }
        _ => std::future::pending().await,
    }
}

async fn wait_child(group: Option<&mut pty::ProcessGroup>) -> i32 {
    match group {
        Some(group) => group.wait().await.unwrap_or(-1),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
