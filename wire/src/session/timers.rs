//! The session's deadlines: one slot per [`Timer`], so arming a timer again replaces its
//! deadline, and the next deadline (`Session::poll_timeout`) is the earliest slot set.

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
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
pub(super) struct TimerTable([Option<Instant>; TIMER_COUNT]);

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, deadline: Instant) {
        self.0[timer.index()] = Some(deadline);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer.index()]
    }

    pub(super) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|deadline| deadline <= now)
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_next_deadline_is_the_earliest_armed_one() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        assert_eq!(timers.next(), None);
        timers.set(Timer::Keepalive, now + Duration::from_secs(5));
        timers.set(Timer::Retransmit, now + Duration::from_secs(1));
        assert_eq!(timers.next(), Some(now + Duration::from_secs(1)));
        timers.stop(Timer::Retransmit);
        assert_eq!(timers.next(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn arming_again_replaces_the_deadline_and_expiry_is_inclusive() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        timers.set(Timer::PongDeadline, now + Duration::from_secs(10));
        timers.set(Timer::PongDeadline, now + Duration::from_secs(2));
        assert_eq!(
            timers.get(Timer::PongDeadline),
            Some(now + Duration::from_secs(2))
        );
        assert!(!timers.is_expired(Timer::PongDeadline, now + Duration::from_secs(1)));
        assert!(timers.is_expired(Timer::PongDeadline, now + Duration::from_secs(2)));
        assert!(!timers.is_expired(Timer::CloseLinger, now + Duration::from_secs(60)));
    }
}
