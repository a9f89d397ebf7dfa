//! Fault injection for one direction of a data channel: drop, duplicate, reorder and delay
//! frames following a schedule drawn from a seeded PRNG, plus targeted rules.
//!
//! [`FaultLine`] is sans-IO (quinn style): `push(now, frame)` in, `poll(now)` out,
//! `poll_timeout()` for the driver's timer. It reads no clock and owns no socket, so a seed
//! and a sequence of frames always give the same result. Frames not subject to faults (e.g.
//! `channel_closed`) keep their place in line but are never dropped, copied or shuffled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{Direction, FaultAction, FaultRates, FaultRule};
use crate::counters::Counters;

/// How long a partly filled reorder window waits for more frames before it is released.
const REORDER_FLUSH: Duration = Duration::from_millis(5);

/// SplitMix64: tiny, fast, and the same on every platform and crate version.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator with that seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (always false for 0, always true for 1).
    pub fn chance(&mut self, p: f64) -> bool {
        p >= 1.0 || (p > 0.0 && self.next_f64() < p)
    }

    /// A uniform index in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

/// What a rule needs to know about a frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo<'a> {
    /// Its message type.
    pub message_type: &'a str,
    /// Its sequence number.
    pub sequence_number: i64,
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    remaining: u32,
}

/// Faults for one direction of one session.
#[derive(Debug)]
pub struct FaultLine {
    rates: FaultRates,
    rng: Prng,
    rules: Vec<ActiveRule>,
    /// Frames waiting to be shuffled (reorder window).
    window: Vec<Bytes>,
    window_deadline: Option<Instant>,
    /// Frames with the time they may leave, in order.
    ready: VecDeque<(Instant, Bytes)>,
    counters: Arc<Counters>,
}

impl FaultLine {
    /// A line for `direction` with those rates and the rules of that direction.
    pub fn new(
        direction: Direction,
        rates: &FaultRates,
        rules: &[FaultRule],
        seed: u64,
        counters: Arc<Counters>,
    ) -> Self {
        let salt = match direction {
            Direction::Outbound => 0x6f75_7462,
            Direction::Inbound => 0x696e_626f,
        };
        Self {
            rates: rates.clone(),
            rng: Prng::new(seed ^ salt),
            rules: rules
                .iter()
                .filter(|r| r.direction == direction)
                .map(|r| ActiveRule {
                    rule: r.clone(),
                    remaining: r.times,
                })
                .collect(),
            window: Vec::new(),
            window_deadline: None,
            ready: VecDeque::new(),
            counters,
        }
    }

    /// Whether this line changes anything at all (a fast path for the common case).
    pub fn is_transparent(&self) -> bool {
        self.rates.drop <= 0.0
            && self.rates.duplicate <= 0.0
            && self.rates.reorder_window <= 1
            && self.rates.delay_ms == 0
            && self.rules.is_empty()
    }

    /// Takes a frame. `info` is `None` for frames that must not be faulted.
    pub fn push(&mut self, now: Instant, frame: Bytes, info: Option<FrameInfo<'_>>) {
        let Some(info) = info else {
            // Keep order: whatever waits in the window leaves first.
            self.flush_window(now);
            self.enqueue(now, frame);
            return;
        };
        let mut copies = 1;
        if let Some(action) = self.matching_rule(info) {
            match action {
                FaultAction::Drop => copies = 0,
                FaultAction::Duplicate => copies = 2,
            }
        } else if self.rng.chance(self.rates.drop) {
            copies = 0;
        } else if self.rng.chance(self.rates.duplicate) {
            copies = 2;
        }
        if copies == 0 {
            Counters::bump(&self.counters.frames_dropped);
            return;
        }
        if copies == 2 {
            Counters::bump(&self.counters.frames_duplicated);
        }
        for _ in 0..copies {
            if self.rates.reorder_window > 1 {
                if self.window.is_empty() {
                    self.window_deadline = Some(now + REORDER_FLUSH);
                }
                self.window.push(frame.clone());
                if self.window.len() >= self.rates.reorder_window {
                    self.flush_window(now);
                }
            } else {
                self.enqueue(now, frame.clone());
            }
        }
    }

    fn matching_rule(&mut self, info: FrameInfo<'_>) -> Option<FaultAction> {
        let rule = self.rules.iter_mut().find(|r| {
            r.remaining > 0
                && r.rule.message_type == info.message_type
                && r.rule
                    .sequence_number
                    .is_none_or(|s| s == info.sequence_number)
        })?;
        rule.remaining -= 1;
        Some(rule.rule.action)
    }

    fn flush_window(&mut self, now: Instant) {
        if self.window.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.window);
        // Fisher-Yates over positions, with the seeded generator.
        let mut order: Vec<usize> = (0..frames.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i + 1);
            order.swap(i, j);
        }
        let moved = order
            .iter()
            .enumerate()
            .filter(|(pos, from)| pos != *from)
            .count();
        Counters::add(&self.counters.frames_reordered, moved as u64);
        let mut slots: Vec<Option<Bytes>> = frames.into_iter().map(Some).collect();
        for from in order {
            if let Some(frame) = slots.get_mut(from).and_then(Option::take) {
                self.enqueue(now, frame);
            }
        }
        self.window_deadline = None;
    }

    fn enqueue(&mut self, now: Instant, frame: Bytes) {
        let delay = Duration::from_millis(self.rates.delay_ms);
        if !delay.is_zero() {
            Counters::bump(&self.counters.frames_delayed);
        }
        self.ready.push_back((now + delay, frame));
    }

    /// The next frame that may leave now.
    pub fn poll(&mut self, now: Instant) -> Option<Bytes> {
        if self.window_deadline.is_some_and(|d| d <= now) {
            self.flush_window(now);
        }
        match self.ready.front() {
            Some((at, _)) if *at <= now => self.ready.pop_front().map(|(_, f)| f),
            _ => None,
        }
    }

    /// Everything still held, in the order it would have left, without waiting for delays.
    pub fn drain_all(&mut self, now: Instant) -> Vec<Bytes> {
        self.flush_window(now);
        self.ready.drain(..).map(|(_, frame)| frame).collect()
    }

    /// Forgets every held frame, as a dead connection loses what was in flight on it.
    pub fn clear(&mut self) {
        self.window.clear();
        self.window_deadline = None;
        self.ready.clear();
    }

    /// When `poll` will next have something (if anything waits).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ready = self.ready.front().map(|(at, _)| *at);
        match (ready, self.window_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether frames are still held back.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.window.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(seq: i64) -> Option<FrameInfo<'static>> {
        Some(FrameInfo {
            message_type: "output_stream_data",
            sequence_number: seq,
        })
    }

    fn drain(line: &mut FaultLine, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(f) = line.poll(now) {
            out.push(f[0]);
        }
        out
    }

    fn line(rates: FaultRates, rules: &[FaultRule], seed: u64) -> (FaultLine, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (
            FaultLine::new(
                Direction::Outbound,
                &rates,
                rules,
                seed,
                Arc::clone(&counters),
            ),
            counters,
        )
    }

    #[test]
    fn prng_is_deterministic_and_in_range() {
        let mut a = Prng::new(1);
        let mut b = Prng::new(1);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            let f = a.next_f64();
            assert_eq!(f, b.next_f64());
            assert!((0.0..1.0).contains(&f));
            let i = a.below(7);
            assert_eq!(i, b.below(7));
            assert!(i < 7);
        }
        assert!(Prng::new(2).next_u64() != Prng::new(3).next_u64());
    }

    fn reordering_and_delaying() -> FaultRates {
        FaultRates {
            reorder_window: 10,
            delay_ms: 50,
            ..Default::default()
        }
    }

    /// The cut of a websocket used to drain this line by polling it at a far-future instant:
    /// frames still in the reorder window were then re-queued *after* that instant, and every
    /// later frame (all the agent's acks) waited behind them for ever.
    #[test]
    fn a_cleared_line_holds_nothing_back() {
        let (mut l, _) = line(reordering_and_delaying(), &[], 3);
        let now = Instant::now();
        for i in 0..3u8 {
            l.push(now, Bytes::from(vec![i]), info(i64::from(i)));
        }
        l.clear();
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
        l.push(now, Bytes::from_static(&[7]), None);
        assert_eq!(drain(&mut l, now + Duration::from_millis(50)), vec![7]);
    }

    #[test]
    fn drain_all_skips_the_delay_and_keeps_the_order() {
        let (mut l, _) = line(reordering_and_delaying(), &[], 3);
        let now = Instant::now();
        l.push(now, Bytes::from_static(&[1]), None);
        l.push(now, Bytes::from_static(&[2]), info(2));
        l.push(now, Bytes::from_static(&[3]), info(3));
        let drained: Vec<u8> = l.drain_all(now).iter().map(|f| f[0]).collect();
        assert_eq!(drained.first(), Some(&1), "{drained:?}");
        let mut sorted = drained.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 2, 3]);
        assert!(l.is_empty());
    }

    #[test]
    fn transparent_line_passes_everything_in_order() {
        let (mut l, _) = line(FaultRates::default(), &[], 0);
        assert!(l.is_transparent());
        let now = Instant::now();
        for i in 0..5u8 {
            l.push(now, Bytes::from(vec![i]), info(i64::from(i)));
        }
        assert_eq!(drain(&mut l, now), vec![0, 1, 2, 3, 4]);
        assert!(l.poll_timeout().is_none());
    }

    #[test]
    fn drop_all_and_duplicate_all() {
        let now = Instant::now();
        let (mut l, counters) = line(
            FaultRates {
                drop: 1.0,
                ..Default::default()
            },
            &[],
            0,
        );
        l.push(now, Bytes::from_static(&[1]), info(0));
        l.push(now, Bytes::from_static(&[9]), None);
        assert_eq!(drain(&mut l, now), vec![9]);
        assert_eq!(counters.snapshot().frames_dropped, 1);

        let (mut l, counters) = line(
            FaultRates {
                duplicate: 1.0,
                ..Default::default()
            },
            &[],
            0,
        );
        l.push(now, Bytes::from_static(&[1]), info(0));
        assert_eq!(drain(&mut l, now), vec![1, 1]);
        assert_eq!(counters.snapshot().frames_duplicated, 1);
    }

    #[test]
    fn delay_holds_frames_until_due() {
        let now = Instant::now();
        let (mut l, _) = line(
            FaultRates {
                delay_ms: 50,
                ..Default::default()
            },
            &[],
            0,
        );
        l.push(now, Bytes::from_static(&[1]), info(0));
        assert!(l.poll(now).is_none());
        assert_eq!(l.poll_timeout(), Some(now + Duration::from_millis(50)));
        assert_eq!(drain(&mut l, now + Duration::from_millis(50)), vec![1]);
    }

    #[test]
    fn reorder_shuffles_within_the_window_deterministically() {
        let now = Instant::now();
        let run = |seed| {
            let (mut l, _) = line(
                FaultRates {
                    reorder_window: 8,
                    ..Default::default()
                },
                &[],
                seed,
            );
            for i in 0..16u8 {
                l.push(now, Bytes::from(vec![i]), info(i64::from(i)));
            }
            drain(&mut l, now)
        };
        let a = run(5);
        assert_eq!(a, run(5));
        assert_ne!(a, (0..16).collect::<Vec<u8>>());
        let mut first: Vec<u8> = a[..8].to_vec();
        first.sort();
        assert_eq!(
            first,
            (0..8).collect::<Vec<u8>>(),
            "stays within its window"
        );
        // A partial window is released after the flush delay.
        let (mut l, _) = line(
            FaultRates {
                reorder_window: 8,
                ..Default::default()
            },
            &[],
            5,
        );
        l.push(now, Bytes::from_static(&[7]), info(0));
        assert!(l.poll(now).is_none());
        let due = l.poll_timeout().unwrap();
        assert_eq!(drain(&mut l, due), vec![7]);
    }

    #[test]
    fn rules_hit_exactly_the_matching_frames() {
        let now = Instant::now();
        let rules = [FaultRule {
            direction: Direction::Outbound,
            message_type: "output_stream_data".into(),
            sequence_number: Some(1),
            action: FaultAction::Drop,
            times: 1,
        }];
        let (mut l, _) = line(FaultRates::default(), &rules, 0);
        for seq in [0, 1, 2, 1] {
            l.push(now, Bytes::from(vec![seq as u8]), info(seq));
        }
        assert_eq!(drain(&mut l, now), vec![0, 2, 1]);
        // Rules of the other direction are ignored.
        let counters = Arc::new(Counters::default());
        let inbound = FaultLine::new(
            Direction::Inbound,
            &FaultRates::default(),
            &rules,
            0,
            counters,
        );
        assert!(inbound.is_transparent());
    }
}
