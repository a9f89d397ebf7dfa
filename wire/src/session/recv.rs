//! The receive side of a session: the agent's stream messages are acknowledged, delivered in
//! sequence order (a bounded reorder buffer holds what arrives early; a duplicate is acked
//! again) and routed by payload type to events or to the handshake.

use bytes::BytesMut;

use super::{Event, Session, State};
use crate::frame::{Frame, PayloadType};
use crate::payload::{self, Acknowledge};

impl Session {
    fn send_ack(&mut self, frame: &Frame) {
        let ack = Acknowledge::frame_for(frame, self.clock.unix_millis(), self.ids.next_id());
        let mut wire = BytesMut::with_capacity(ack.encoded_len());
        ack.encode(&mut wire);
        self.control_queue.push_back(wire.freeze());
        self.stats.acks_sent += 1;
    }

    pub(super) fn handle_stream(&mut self, frame: Frame) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testing::*;
    use crate::session::*;

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
}
