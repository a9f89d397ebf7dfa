//! The send side of a session: every stream message we send is numbered and kept until the
//! agent acknowledges it ([`SendBuffer`]); it is sent again on the retransmission timeout
//! (`docs/protocol.md` §8.4: RTT estimate, Karn's rule, exponential backoff, [`RttEstimator`]),
//! or at once when the agent acknowledges well past it. What the buffer holds is the window
//! that `Session::can_send` reports.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Session;
use super::timers::Timer;
use crate::frame::{Frame, MessageType, PayloadType};
use crate::payload::Acknowledge;
use crate::{ChannelError, KmsError};

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

/// One stream message we sent (or will send) and that is not acknowledged yet.
#[derive(Debug)]
pub(super) struct Unacked {
    wire: Bytes,
    payload_len: usize,
    first_sent: Option<Instant>,
    pub(super) last_sent: Option<Instant>,
    retransmits: u32,
    /// Already in `retransmit_queue` (keeps the queue free of repeats without a scan).
    pub(super) queued_for_retransmit: bool,
}

/// The unacked messages, indexed by sequence number (acks remove entries out of order).
#[derive(Debug, Default)]
pub(super) struct SendBuffer {
    first_seq: i64,
    entries: VecDeque<Option<Unacked>>,
    pub(super) payload_bytes: usize,
    pub(super) live: usize,
}

impl SendBuffer {
    fn slot(&mut self, seq: i64) -> Option<&mut Option<Unacked>> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.entries.get_mut(index)
    }

    pub(super) fn get_mut(&mut self, seq: i64) -> Option<&mut Unacked> {
        self.slot(seq)?.as_mut()
    }

    pub(super) fn push(&mut self, seq: i64, entry: Unacked) {
        if self.entries.is_empty() {
            self.first_seq = seq;
        }
        self.payload_bytes += entry.payload_len;
        self.live += 1;
        self.entries.push_back(Some(entry));
    }

    pub(super) fn remove(&mut self, seq: i64) -> Option<Unacked> {
        let entry = self.slot(seq)?.take()?;
        self.payload_bytes -= entry.payload_len;
        self.live -= 1;
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.first_seq += 1;
        }
        Some(entry)
    }

    pub(super) fn oldest(&self) -> Option<(i64, &Unacked)> {
        let entry = self.entries.front()?.as_ref()?;
        Some((self.first_seq, entry))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Unacked)> {
        (self.first_seq..)
            .zip(self.entries.iter())
            .filter_map(|(seq, entry)| Some((seq, entry.as_ref()?)))
    }
}

/// Round-trip estimation and the retransmission timeout (§8.4), plus exponential backoff.
#[derive(Debug)]
pub(super) struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
    backoff: u32,
}

impl RttEstimator {
    pub(super) fn new() -> Self {
        Self {
            srtt: INITIAL_SRTT,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            backoff: 0,
        }
    }

    pub(super) fn sample(&mut self, rtt: Duration) {
        let deviation = self.srtt.abs_diff(rtt);
        self.rttvar = self.rttvar.mul_f64(0.75) + deviation.mul_f64(0.25);
        self.srtt = self.srtt.mul_f64(0.875) + rtt.mul_f64(0.125);
        self.rto = MAX_RTO.min(self.srtt + CLOCK_GRANULARITY.max(self.rttvar * 4));
    }

    /// The timeout in force: the RTO doubled once per consecutive expiry, capped.
    pub(super) fn current(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(16);
        MAX_BACKED_OFF_RTO.min(self.rto.saturating_mul(factor))
    }
}

impl Session {
    /// Splits `data` into input messages, sealing each when the session is encrypted.
    pub(super) fn queue_input(&mut self, data: Bytes) -> Result<(), ChannelError> {
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

    /// Assigns the next sequence number and buffers the frame before it can be written
    /// (the plugin's send-then-buffer race, §14 #3, cannot happen). The encoded bytes are
    /// kept and every retransmission sends exactly them: an encrypted payload is sealed once,
    /// so a resend repeats one message under its one nonce, and a nonce never covers two
    /// different plaintexts.
    pub(super) fn queue_stream(&mut self, payload_type: PayloadType, payload: Bytes) {
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
    pub(super) fn mark_sent(&mut self, seq: i64, now: Instant) -> Option<Bytes> {
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

    pub(super) fn on_retransmit_timeout(&mut self, now: Instant) {
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

    pub(super) fn handle_ack(&mut self, now: Instant, frame: &Frame) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testing::*;
    use crate::session::*;

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
}
