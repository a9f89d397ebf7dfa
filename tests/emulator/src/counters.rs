//! Counters that tests read to see what the emulator did: sessions, processes, frames and the
//! faults it injected. Plain atomics, shared by every task; reading a [`CountersSnapshot`]
//! never blocks the emulator. Nothing here decides anything.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between the server and the agent tasks.
#[derive(Debug)]
pub struct Counters {
    /// Bumped whenever a session ends, so waiters can re-check without polling.
    changes: tokio::sync::watch::Sender<u64>,
    pub(crate) api_requests: AtomicU64,
    pub(crate) api_errors: AtomicU64,
    pub(crate) signature_failures: AtomicU64,
    pub(crate) sessions_created: AtomicU64,
    pub(crate) sessions_started: AtomicU64,
    pub(crate) sessions_finished: AtomicU64,
    pub(crate) sessions_closed_cleanly: AtomicU64,
    pub(crate) tokens_rejected: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) processes_spawned: AtomicU64,
    pub(crate) processes_running: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) frames_invalid: AtomicU64,
    pub(crate) output_retransmits: AtomicU64,
    pub(crate) duplicate_inputs: AtomicU64,
    pub(crate) input_bytes: AtomicU64,
    pub(crate) output_bytes: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) frames_duplicated: AtomicU64,
    pub(crate) frames_reordered: AtomicU64,
    pub(crate) frames_delayed: AtomicU64,
    pub(crate) disconnects_injected: AtomicU64,
    pub(crate) kms_requests: AtomicU64,
    pub(crate) kms_handshakes_completed: AtomicU64,
    pub(crate) kms_handshakes_failed: AtomicU64,
    pub(crate) kms_challenges_rejected: AtomicU64,
    pub(crate) kms_inputs_undecryptable: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CountersSnapshot {
    /// API requests received (any outcome).
    pub api_requests: u64,
    /// API requests answered with an error.
    pub api_errors: u64,
    /// API requests refused by SigV4 verification.
    pub signature_failures: u64,
    /// Sessions created by ExecuteCommand.
    pub sessions_created: u64,
    /// Sessions whose websocket presented a valid token and started.
    pub sessions_started: u64,
    /// Sessions that ended, for any reason.
    pub sessions_finished: u64,
    /// Sessions that ended with `channel_closed` after all output was acknowledged.
    pub sessions_closed_cleanly: u64,
    /// OpenDataChannel frames refused (bad, reused or expired token, unknown session).
    pub tokens_rejected: u64,
    /// Websockets re-attached to a running session after ResumeSession.
    pub reconnects: u64,
    /// Commands started under a PTY.
    pub processes_spawned: u64,
    /// Commands (process groups) still running.
    pub processes_running: u64,
    /// Binary frames written to websockets (after fault injection).
    pub frames_sent: u64,
    /// Binary frames read from websockets (before fault injection).
    pub frames_received: u64,
    /// Frames that could not be decoded.
    pub frames_invalid: u64,
    /// Output frames sent again because no ack came in time.
    pub output_retransmits: u64,
    /// Input frames received again (and re-acked).
    pub duplicate_inputs: u64,
    /// Input bytes written to PTYs.
    pub input_bytes: u64,
    /// Output bytes read from PTYs.
    pub output_bytes: u64,
    /// Frames dropped by fault injection.
    pub frames_dropped: u64,
    /// Extra copies made by fault injection.
    pub frames_duplicated: u64,
    /// Frames that fault injection delivered out of order.
    pub frames_reordered: u64,
    /// Frames held back by an injected delay.
    pub frames_delayed: u64,
    /// Websockets dropped on purpose (`disconnect_after_frames`).
    pub disconnects_injected: u64,
    /// KMS API requests received (any outcome).
    pub kms_requests: u64,
    /// KMS sessions whose handshake completed (challenge answered, HandshakeComplete sent).
    pub kms_handshakes_completed: u64,
    /// KMS sessions the agent ended during the handshake (refusal, Decrypt error, timeout).
    pub kms_handshakes_failed: u64,
    /// Challenge answers (payload type 9) that were wrong or did not decrypt; not acked.
    pub kms_challenges_rejected: u64,
    /// Encrypted input frames that did not decrypt; neither acked nor used.
    pub kms_inputs_undecryptable: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            changes: tokio::sync::watch::Sender::new(0),
            api_requests: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            signature_failures: AtomicU64::new(0),
            sessions_created: AtomicU64::new(0),
            sessions_started: AtomicU64::new(0),
            sessions_finished: AtomicU64::new(0),
            sessions_closed_cleanly: AtomicU64::new(0),
            tokens_rejected: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            processes_spawned: AtomicU64::new(0),
            processes_running: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            frames_invalid: AtomicU64::new(0),
            output_retransmits: AtomicU64::new(0),
            duplicate_inputs: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            output_bytes: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            frames_duplicated: AtomicU64::new(0),
            frames_reordered: AtomicU64::new(0),
            frames_delayed: AtomicU64::new(0),
            disconnects_injected: AtomicU64::new(0),
            kms_requests: AtomicU64::new(0),
            kms_handshakes_completed: AtomicU64::new(0),
            kms_handshakes_failed: AtomicU64::new(0),
            kms_challenges_rejected: AtomicU64::new(0),
            kms_inputs_undecryptable: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Wakes everyone waiting in [`Counters::wait_until`].
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until `condition` holds for a snapshot. Re-checked after every session end and
    /// every process exit, so no polling or sleeping is involved.
    pub async fn wait_until(
        &self,
        condition: impl Fn(&CountersSnapshot) -> bool,
    ) -> CountersSnapshot {
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let snapshot = self.snapshot();
            if condition(&snapshot) {
                return snapshot;
            }
            if changes.changed().await.is_err() {
                return self.snapshot();
            }
        }
    }

    /// Adds one to a counter.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes one away, never below zero.
    pub(crate) fn drop_one(counter: &AtomicU64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            api_requests: get(&self.api_requests),
            api_errors: get(&self.api_errors),
            signature_failures: get(&self.signature_failures),
            sessions_created: get(&self.sessions_created),
            sessions_started: get(&self.sessions_started),
            sessions_finished: get(&self.sessions_finished),
            sessions_closed_cleanly: get(&self.sessions_closed_cleanly),
            tokens_rejected: get(&self.tokens_rejected),
            reconnects: get(&self.reconnects),
            processes_spawned: get(&self.processes_spawned),
            processes_running: get(&self.processes_running),
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            frames_invalid: get(&self.frames_invalid),
            output_retransmits: get(&self.output_retransmits),
            duplicate_inputs: get(&self.duplicate_inputs),
            input_bytes: get(&self.input_bytes),
            output_bytes: get(&self.output_bytes),
            frames_dropped: get(&self.frames_dropped),
            frames_duplicated: get(&self.frames_duplicated),
            frames_reordered: get(&self.frames_reordered),
            frames_delayed: get(&self.frames_delayed),
            disconnects_injected: get(&self.disconnects_injected),
            kms_requests: get(&self.kms_requests),
            kms_handshakes_completed: get(&self.kms_handshakes_completed),
            kms_handshakes_failed: get(&self.kms_handshakes_failed),
            kms_challenges_rejected: get(&self.kms_challenges_rejected),
            kms_inputs_undecryptable: get(&self.kms_inputs_undecryptable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_notify() {
        let counters = std::sync::Arc::new(Counters::default());
        let waiter = {
            let counters = std::sync::Arc::clone(&counters);
            tokio::spawn(async move { counters.wait_until(|s| s.sessions_finished == 1).await })
        };
        Counters::bump(&counters.sessions_finished);
        counters.notify();
        assert_eq!(waiter.await.unwrap().sessions_finished, 1);
    }

    #[test]
    fn counters_count_and_never_underflow() {
        let counters = Counters::default();
        Counters::bump(&counters.processes_running);
        Counters::add(&counters.output_bytes, 10);
        Counters::drop_one(&counters.processes_running);
        Counters::drop_one(&counters.processes_running);
        let snap = counters.snapshot();
        assert_eq!(snap.processes_running, 0);
        assert_eq!(snap.output_bytes, 10);
    }
}
