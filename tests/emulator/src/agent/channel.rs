//! The agent's side of the data channel reliability layer (the "Agent" column of section 8 of
//! the protocol brief), written independently of the client's `Session` so the two cannot share
//! a bug: output sequence numbers from 0 (SYN on the first), an unacked buffer filled before a
//! frame is handed out, RTO from section 8.4, a selective ack for every input message
//! including duplicates, a bounded reorder buffer, and pause/start publication. In a KMS
//! session an [`InputGate`] decides before the ack: input that does not decrypt, and a wrong
//! challenge answer, are neither acked nor delivered.
//!
//! Sans-IO: `handle_*` take `now` and bytes; `poll_transmit`, `poll_delivered` and
//! `poll_timeout` give frames, in-order input and the next deadline. No socket, no clock.
//! Call order: after any `handle_*` or `send_*`, drain `poll_transmit` and `poll_delivered`,
//! then re-arm the timer from `poll_timeout`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::kms::{InputGate, Refusal};
use super::wire::{self, Frame, MessageType};

/// Initial RTO, SRTT and the RTO ceiling (section 8.4).
const INITIAL_RTO: Duration = Duration::from_millis(200);
const INITIAL_SRTT: Duration = Duration::from_millis(100);
const MAX_RTO: Duration = Duration::from_secs(1);
const CLOCK_GRANULARITY: Duration = Duration::from_millis(10);
/// The real agent's resend scheduler tick (realistic mode).
const RESEND_TICK: Duration = Duration::from_millis(100);

/// Flags of the first output message.
const FLAG_SYN: u64 = 1;

/// One in-order input message for the session to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Payload type (1 output/keystrokes, 3 size, 6 handshake response, …).
    pub payload_type: u32,
    /// The payload.
    pub payload: Bytes,
}

/// Limits and policy.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// Largest number of out-of-order input frames kept.
    pub reorder_capacity: usize,
    /// Largest number of out-of-order input bytes kept.
    pub reorder_max_bytes: usize,
    /// Resend like the real agent (oldest message only, on a 100 ms tick) instead of every
    /// overdue message as soon as it is due.
    pub realistic: bool,
}

#[derive(Debug)]
struct Unacked {
    frame: Bytes,
    payload_len: usize,
    /// `None` while paused before the first send.
    last_sent: Option<Instant>,
}

#[derive(Debug)]
struct Rtt {
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
}

impl Rtt {
    fn new() -> Self {
        Self {
            srtt: INITIAL_SRTT,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
        }
    }

    fn sample(&mut self, r: Duration) {
        let diff = self.srtt.abs_diff(r);
        self.rttvar = self.rttvar * 3 / 4 + diff / 4;
        self.srtt = self.srtt * 7 / 8 + r / 8;
        self.rto = (self.srtt + CLOCK_GRANULARITY.max(self.rttvar * 4)).min(MAX_RTO);
    }
}

/// What the agent's reliability layer counted, for the shared counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChannelStats {
    /// Output frames resent.
    pub retransmits: u64,
    /// Input frames seen again.
    pub duplicates: u64,
    /// Frames that failed to decode.
    pub invalid: u64,
    /// Encrypted input frames refused because they did not decrypt.
    pub undecryptable: u64,
    /// Challenge answers refused.
    pub challenges_rejected: u64,
}

/// Agent-side channel state.
#[derive(Debug)]
pub struct AgentChannel {
    settings: ChannelSettings,
    next_seq: i64,
    unacked: BTreeMap<i64, Unacked>,
    unacked_bytes: usize,
    expected_seq: i64,
    reorder: BTreeMap<i64, Delivered>,
    reorder_bytes: usize,
    rtt: Rtt,
    paused: bool,
    next_tick: Option<Instant>,
    transmit: VecDeque<Bytes>,
    delivered: VecDeque<Delivered>,
    stats: ChannelStats,
    clock_ms: fn() -> u64,
    gate: InputGate,
}

impl AgentChannel {
    /// A fresh channel; `clock_ms` stamps CreatedDate (milliseconds since the epoch).
    pub fn new(settings: ChannelSettings, clock_ms: fn() -> u64) -> Self {
        Self {
            settings,
            next_seq: 0,
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            expected_seq: 0,
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            rtt: Rtt::new(),
            paused: false,
            next_tick: None,
            transmit: VecDeque::new(),
            delivered: VecDeque::new(),
            stats: ChannelStats::default(),
            clock_ms,
            gate: InputGate::Open,
        }
    }

    /// Sets what input may pass (see [`InputGate`]); decides for frames received from now on.
    pub fn set_input_gate(&mut self, gate: InputGate) {
        self.gate = gate;
    }

    /// Queues one output message (`output_stream_data`) and returns its sequence number. It is
    /// in the unacked buffer before the frame is handed out, so an early ack always matches.
    pub fn send_output(&mut self, now: Instant, payload_type: u32, payload: &[u8]) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let flags = if seq == 0 { FLAG_SYN } else { 0 };
        let frame = wire::encode(
            MessageType::OutputStreamData,
            seq,
            flags,
            payload_type,
            payload,
            (self.clock_ms)(),
        );
        let last_sent = if self.paused {
            None
        } else {
            self.transmit.push_back(frame.clone());
            Some(now)
        };
        self.unacked_bytes += payload.len();
        self.unacked.insert(
            seq,
            Unacked {
                frame,
                payload_len: payload.len(),
                last_sent,
            },
        );
        if self.settings.realistic && self.next_tick.is_none() {
            self.next_tick = Some(now + RESEND_TICK);
        }
        seq
    }

    /// A `channel_closed` frame (not sequenced, not buffered), queued after everything else.
    pub fn send_channel_closed(&mut self, session_id: &str, target: &str, output: &str) {
        let payload = wire::channel_closed_payload(session_id, target, output, (self.clock_ms)());
        let frame = wire::encode(
            MessageType::ChannelClosed,
            0,
            3,
            0,
            &payload,
            (self.clock_ms)(),
        );
        self.transmit.push_back(frame);
    }

    /// Takes one frame from the client. `accept_input` false means the session cannot take more
    /// input right now: the next in-order message is then neither acked nor consumed (the client
    /// will resend it), as the real agent does while its handler is not ready.
    pub fn handle_frame(&mut self, now: Instant, bytes: &Bytes, accept_input: bool) {
        let frame = match wire::decode_shared(bytes) {
            Ok(frame) => frame,
            Err(_) => {
                self.stats.invalid += 1;
                return;
            }
        };
        match frame.message_type {
            MessageType::Acknowledge => {
                self.unpause(now);
                if let Some(seq) = wire::acked_sequence_number(&frame.payload) {
                    self.handle_ack(now, seq);
                }
            }
            MessageType::InputStreamData => {
                self.unpause(now);
                self.handle_input(frame, accept_input);
            }
            MessageType::PausePublication => self.paused = true,
            MessageType::StartPublication => self.unpause(now),
            // Nothing else is meaningful from a client; ignore like the agent does.
            _ => {}
        }
    }

    fn handle_ack(&mut self, now: Instant, seq: i64) {
        if let Some(entry) = self.unacked.remove(&seq) {
            self.unacked_bytes -= entry.payload_len;
            if let Some(sent) = entry.last_sent {
                self.rtt.sample(now.saturating_duration_since(sent));
            }
        }
    }

    fn handle_input(&mut self, frame: Frame, accept_input: bool) {
        let seq = frame.sequence_number;
        let ack = || wire::encode_ack(&frame, (self.clock_ms)());
        if seq < self.expected_seq {
            self.stats.duplicates += 1;
            self.transmit.push_back(ack());
            return;
        }
        if seq == self.expected_seq && !accept_input {
            return;
        }
        let payload = match self.gate.admit(frame.payload_type, &frame.payload) {
            Ok(payload) => payload,
            Err(refusal) => {
                match refusal {
                    Refusal::Undecryptable => self.stats.undecryptable += 1,
                    Refusal::WrongChallenge => self.stats.challenges_rejected += 1,
                }
                return;
            }
        };
        let delivered = Delivered {
            payload_type: frame.payload_type.as_u32(),
            payload,
        };
        if seq == self.expected_seq {
            self.transmit.push_back(ack());
            self.delivered.push_back(delivered);
            self.expected_seq += 1;
            // Buffered successors go out in order (acked when they arrived).
            while let Some(next) = self.reorder.remove(&self.expected_seq) {
                self.reorder_bytes -= next.payload.len();
                self.delivered.push_back(next);
                self.expected_seq += 1;
            }
            return;
        }
        // Ahead of the expected one: stash if there is room, else drop without an ack.
        if let Some(previous) = self.reorder.get(&seq) {
            self.stats.duplicates += 1;
            let previous_len = previous.payload.len();
            self.reorder_bytes -= previous_len;
        } else if self.reorder.len() >= self.settings.reorder_capacity
            || self.reorder_bytes + delivered.payload.len() > self.settings.reorder_max_bytes
        {
            return;
        }
        self.reorder_bytes += delivered.payload.len();
        self.reorder.insert(seq, delivered);
        self.transmit.push_back(ack());
    }

    fn unpause(&mut self, now: Instant) {
        if !self.paused {
            return;
        }
        self.paused = false;
        // Messages produced while paused go out now (the real agent trickles them one per
        // tick; that only slows things down and changes nothing on the wire).
        for entry in self.unacked.values_mut() {
            if entry.last_sent.is_none() {
                entry.last_sent = Some(now);
                self.transmit.push_back(entry.frame.clone());
            }
        }
    }

    /// Resends overdue output.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paused {
            return;
        }
        let rto = self.rtt.rto;
        if self.settings.realistic {
            let Some(tick) = self.next_tick else { return };
            if now < tick {
                return;
            }
            self.next_tick = if self.unacked.is_empty() {
                None
            } else {
                Some(now + RESEND_TICK)
            };
            if let Some(entry) = self.unacked.values_mut().next()
                && entry
                    .last_sent
                    .is_some_and(|sent| now.saturating_duration_since(sent) > rto)
            {
                entry.last_sent = Some(now);
                self.transmit.push_back(entry.frame.clone());
                self.stats.retransmits += 1;
            }
            return;
        }
        for entry in self.unacked.values_mut() {
            if entry
                .last_sent
                .is_some_and(|sent| now.saturating_duration_since(sent) >= rto)
            {
                entry.last_sent = Some(now);
                self.transmit.push_back(entry.frame.clone());
                self.stats.retransmits += 1;
            }
        }
    }

    /// After a reconnect: everything unacked goes out again at once.
    pub fn resend_all(&mut self, now: Instant) {
        self.paused = false;
        for entry in self.unacked.values_mut() {
            entry.last_sent = Some(now);
            self.transmit.push_back(entry.frame.clone());
        }
    }

    /// Drops frames waiting to be written (their socket is gone; unacked ones stay buffered).
    pub fn discard_transmit_queue(&mut self) {
        self.transmit.clear();
    }

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// The next in-order input message.
    pub fn poll_delivered(&mut self) -> Option<Delivered> {
        self.delivered.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.paused || self.unacked.is_empty() {
            return None;
        }
        if self.settings.realistic {
            return self.next_tick;
        }
        self.unacked
            .values()
            .filter_map(|e| e.last_sent)
            .min()
            .map(|sent| sent + self.rtt.rto)
    }

    /// Output bytes sent but not yet acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Whether every output message has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Whether the client asked us to stop sending.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rtt.rto
    }

    /// Takes the counts gathered since the last call.
    pub fn take_stats(&mut self) -> ChannelStats {
        std::mem::take(&mut self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> u64 {
        1_700_000_000_000
    }

    fn channel(realistic: bool) -> AgentChannel {
        AgentChannel::new(
            ChannelSettings {
                reorder_capacity: 4,
                reorder_max_bytes: 1024,
                realistic,
            },
            clock,
        )
    }

    fn input(seq: i64, payload: &[u8]) -> Bytes {
        wire::encode(MessageType::InputStreamData, seq, 0, 1, payload, clock())
    }

    fn ack_for(frame: &Bytes) -> Bytes {
        let decoded = wire::decode(frame).unwrap();
        wire::encode_ack(&decoded, clock())
    }

    fn drain(ch: &mut AgentChannel) -> Vec<Frame> {
        std::iter::from_fn(|| ch.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect()
    }

    #[test]
    fn first_output_has_seq_zero_and_syn() {
        let mut ch = channel(false);
        let now = Instant::now();
        assert_eq!(ch.send_output(now, 1, b"hi"), 0);
        assert_eq!(ch.send_output(now, 1, b"there"), 1);
        let frames = drain(&mut ch);
        assert_eq!(frames[0].message_type, MessageType::OutputStreamData);
        assert_eq!((frames[0].sequence_number, frames[0].flags), (0, 1));
        assert_eq!((frames[1].sequence_number, frames[1].flags), (1, 0));
        assert_eq!(ch.unacked_bytes(), 7);
    }

    #[test]
    fn acks_clear_the_buffer_and_update_rto() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.send_output(now, 1, b"hi");
        let sent = ch.poll_transmit().unwrap();
        ch.handle_frame(now + Duration::from_millis(20), &ack_for(&sent), true);
        assert!(ch.all_acked());
        assert_eq!(ch.unacked_bytes(), 0);
        // SRTT 100 → 90, RTTVAR 0 → 20: RTO = 90 + 80 = 170 ms.
        assert_eq!(ch.rto(), Duration::from_millis(170));
        assert!(ch.poll_timeout().is_none());
    }

    #[test]
    fn unacked_output_is_resent_after_the_rto() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.send_output(now, 1, b"hi");
        let first = ch.poll_transmit().unwrap();
        let due = ch.poll_timeout().unwrap();
        assert_eq!(due, now + INITIAL_RTO);
        ch.handle_timeout(due - Duration::from_millis(1));
        assert!(ch.poll_transmit().is_none());
        ch.handle_timeout(due);
        assert_eq!(ch.poll_transmit().unwrap(), first);
        assert_eq!(ch.take_stats().retransmits, 1);
        assert_eq!(ch.poll_timeout(), Some(due + INITIAL_RTO));
    }

    #[test]
    fn realistic_mode_resends_only_the_oldest_per_tick() {
        let mut ch = channel(true);
        let now = Instant::now();
        ch.send_output(now, 1, b"a");
        ch.send_output(now, 1, b"b");
        drain(&mut ch);
        ch.handle_timeout(now + RESEND_TICK); // 100 ms: not past the 200 ms RTO yet
        assert!(ch.poll_transmit().is_none());
        ch.handle_timeout(now + RESEND_TICK * 2 + Duration::from_millis(1));
        ch.handle_timeout(now + RESEND_TICK * 3 + Duration::from_millis(1));
        let frames = drain(&mut ch);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].sequence_number, 0);
    }

    #[test]
    fn every_input_is_acked_including_duplicates() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.handle_frame(now, &input(0, b"a"), true);
        ch.handle_frame(now, &input(0, b"a"), true);
        let acks = drain(&mut ch);
        assert_eq!(acks.len(), 2);
        for ack in &acks {
            assert_eq!(ack.message_type, MessageType::Acknowledge);
            assert_eq!(wire::acked_sequence_number(&ack.payload), Some(0));
        }
        assert_eq!(
            ch.poll_delivered().unwrap().payload,
            Bytes::from_static(b"a")
        );
        assert!(ch.poll_delivered().is_none());
        assert_eq!(ch.take_stats().duplicates, 1);
    }

    #[test]
    fn out_of_order_input_is_buffered_and_delivered_in_order() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.handle_frame(now, &input(2, b"c"), true);
        ch.handle_frame(now, &input(1, b"b"), true);
        assert!(ch.poll_delivered().is_none());
        ch.handle_frame(now, &input(0, b"a"), true);
        let got: Vec<_> = std::iter::from_fn(|| ch.poll_delivered())
            .map(|d| d.payload)
            .collect();
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c")
            ]
        );
        assert_eq!(drain(&mut ch).len(), 3);
    }

    #[test]
    fn reorder_buffer_is_bounded() {
        let mut ch = channel(false);
        let now = Instant::now();
        for seq in 1..=10 {
            ch.handle_frame(now, &input(seq, b"x"), true);
        }
        // Capacity 4: only four were acked; the rest must be resent by the client.
        assert_eq!(drain(&mut ch).len(), 4);
        ch.handle_frame(now, &input(100, &[0u8; 2000]), true);
        assert!(drain(&mut ch).is_empty(), "over the byte limit");
    }

    #[test]
    fn input_is_refused_unacked_while_the_session_is_full() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.handle_frame(now, &input(0, b"a"), false);
        assert!(drain(&mut ch).is_empty());
        assert!(ch.poll_delivered().is_none());
        ch.handle_frame(now, &input(0, b"a"), true);
        assert_eq!(drain(&mut ch).len(), 1);
        assert!(ch.poll_delivered().is_some());
    }

    #[test]
    fn pause_holds_output_until_start() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.handle_frame(
            now,
            &wire::encode(MessageType::PausePublication, 0, 0, 0, b"", clock()),
            true,
        );
        assert!(ch.is_paused());
        ch.send_output(now, 1, b"held");
        assert!(ch.poll_transmit().is_none());
        assert!(ch.poll_timeout().is_none());
        ch.handle_frame(
            now,
            &wire::encode(MessageType::StartPublication, 0, 0, 0, b"", clock()),
            true,
        );
        let frames = drain(&mut ch);
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0].payload[..], b"held");
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut ch = channel(false);
        ch.handle_frame(Instant::now(), &Bytes::from_static(b"\x00\x00"), true);
        ch.handle_frame(Instant::now(), &Bytes::from(vec![0xff; 200]), true);
        assert_eq!(ch.take_stats().invalid, 2);
        assert!(ch.poll_transmit().is_none());
    }

    #[test]
    fn the_gate_decides_before_the_ack() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.set_input_gate(InputGate::AwaitingKeys);
        ch.handle_frame(now, &input(0, b"typed too early"), true);
        ch.handle_frame(now, &input(1, b"ahead, unreadable"), true);
        assert!(drain(&mut ch).is_empty(), "refused input is not acked");
        assert!(ch.poll_delivered().is_none());
        let size = wire::encode(MessageType::InputStreamData, 0, 0, 3, b"{}", clock());
        ch.handle_frame(now, &size, true);
        assert_eq!(drain(&mut ch).len(), 1, "unencrypted types pass");
        assert_eq!(ch.poll_delivered().unwrap().payload_type, 3);
        let stats = ch.take_stats();
        assert_eq!((stats.undecryptable, stats.challenges_rejected), (2, 0));
    }

    #[test]
    fn channel_closed_goes_out_last() {
        let mut ch = channel(false);
        let now = Instant::now();
        ch.send_output(now, 1, b"bye");
        ch.send_channel_closed("sid", "ecs:a_b_c", "");
        let frames = drain(&mut ch);
        assert_eq!(frames[1].message_type, MessageType::ChannelClosed);
        let json: serde_json::Value = serde_json::from_slice(&frames[1].payload).unwrap();
        assert_eq!(json["SessionId"], "sid");
        assert_eq!(json["MessageType"], "channel_closed");
        assert_eq!(json["SchemaVersion"], 1);
    }
}
