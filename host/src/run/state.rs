//! The rules that end a run and decide its exit status, as a pure state machine.
//!
//! The driver ([`super::driver`]) feeds it what happened: remote output, the session's end, a
//! closed stdout, a termination signal, a failed input. It hands back the program's own bytes
//! for stdout and, once the run is over, an [`Outcome`]: the exit status or the error, and what
//! the driver still owes the session on the way out. No IO, no clock, no tokio: every rule
//! here is a unit test.

use crate::adapter::{Plan, Way};
use crate::channel::ChannelError;
use crate::plan_io::{OutputDecoder, OutputState};
use crate::terminal::Termination;

use super::RunError;

/// Status for a run that stopped because its stdout was closed (as a process killed by SIGPIPE).
pub(crate) const BROKEN_PIPE_STATUS: i32 = 128 + libc::SIGPIPE;

/// The two kinds of run; they differ only in the rules below and in how input is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// stdin is the input, stdout exactly the program's output, the status its exit status.
    OneOff,
    /// A raw terminal: keystrokes go to the remote terminal as typed.
    Interactive,
}

/// What the driver still does with the session once the run's result is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Teardown {
    /// Nothing: the session is already over.
    Nothing,
    /// Close our side and wait, bounded, for the service to end the session.
    Close,
    /// Send Ctrl-C to the remote terminal first (the program may still be running), then close.
    InterruptThenClose,
}

/// How a run ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub result: Result<i32, RunError>,
    pub teardown: Teardown,
}

/// The run as far as the remote output and the local events tell it.
#[derive(Debug)]
pub(crate) struct RunState {
    mode: Mode,
    decoder: OutputDecoder,
    /// The plan asked for a trailer, so a session that closes without one lost the status.
    expects_trailer: bool,
    /// The plan's own way, then its alternatives: the decoder says which one the command took.
    ways: Vec<Way>,
    /// The taken way's notice was handed out (it is shown once, even when the run ends in the
    /// same output as the marker).
    notice_taken: bool,
    /// Payload type 12 (an agent that reports the status itself).
    exit_code_event: Option<i32>,
    outcome: Option<Outcome>,
}

impl RunState {
    pub(crate) fn new(mode: Mode, plan: &Plan) -> Self {
        Self {
            mode,
            decoder: OutputDecoder::for_plan(plan),
            expects_trailer: plan.exit_trailer.is_some(),
            ways: std::iter::once(plan.own_way())
                .chain((0..plan.alternatives.len()).filter_map(|index| plan.alternative_way(index)))
                .collect(),
            notice_taken: false,
            exit_code_event: None,
            outcome: None,
        }
    }

    /// The run is over; the driver stops and carries out [`Outcome::teardown`].
    pub(crate) fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    pub(crate) fn into_outcome(self) -> Option<Outcome> {
        self.outcome
    }

    /// The way the remote command took, once its ready marker is in (at once for a plan without
    /// one) and while the run goes on: a one-off's input may be sent as this way says.
    pub(crate) fn way_taken(&self) -> Option<&Way> {
        if self.outcome.is_some() || self.mode != Mode::OneOff {
            return None;
        }
        self.ways.get(self.decoder.way()?)
    }

    /// The notice of the way the command took, the first time it is asked for once the way is
    /// known: an alternative says why the run is slower or merges stderr.
    pub(crate) fn take_notice(&mut self) -> Option<String> {
        if self.notice_taken || self.mode != Mode::OneOff {
            return None;
        }
        let way = self.ways.get(self.decoder.way()?)?;
        self.notice_taken = true;
        // A way with nothing to say (a host-made plan's refusal) prints nothing.
        way.notice.clone().filter(|notice| !notice.is_empty())
    }

    /// Remote output: the program's own bytes are appended to `stdout`, what its stderr frames
    /// carry to `stderr`.
    pub(crate) fn on_output(&mut self, data: &[u8], stdout: &mut Vec<u8>, stderr: &mut Vec<u8>) {
        if self.outcome.is_some() {
            return;
        }
        self.decoder.push(data, stdout, stderr);
        match self.decoder.state() {
            OutputState::Exited(status) => self.end(Ok(status), Teardown::Close),
            OutputState::MalformedStatus => {
                self.end(Err(RunError::MalformedExitStatus), Teardown::Close);
            }
            _ => {}
        }
    }

    /// Payload type 12: kept in case the session closes without a trailer.
    pub(crate) fn on_exit_code(&mut self, code: i32) {
        self.exit_code_event = Some(code);
    }

    /// The session ended (channel_closed, or our close finished). What the decoder held back as
    /// a possible trailer start is output after all.
    pub(crate) fn on_closed(&mut self, closed_output: String, stdout: &mut Vec<u8>) {
        if self.outcome.is_some() {
            return;
        }
        self.decoder.finish(stdout);
        let result = match (self.decoder.exit_status(), self.exit_code_event) {
            (Some(status), _) | (None, Some(status)) => Ok(status),
            // Interactive sessions end with the user's `exit`; a plan without a trailer never
            // promised a status.
            (None, None) if self.mode == Mode::Interactive || !self.expects_trailer => Ok(0),
            (None, None) => Err(RunError::NoExitStatus { closed_output }),
        };
        self.end(result, Teardown::Nothing);
    }

    /// The data channel failed for good (resume included).
    pub(crate) fn on_lost(&mut self, reason: ChannelError) {
        self.end(Err(reason.into()), Teardown::Nothing);
    }

    /// Sending input or a window size failed. A send refused because the session has already
    /// ended says nothing about why it ended: the session's own event (closed, or lost with its
    /// reason) is on its way and decides the result, whichever of the two the loop sees first.
    pub(crate) fn on_send_failed(&mut self, error: ChannelError) {
        if error == ChannelError::SessionClosed {
            return;
        }
        self.end(Err(error.into()), Teardown::Nothing);
    }

    /// Our stdout is gone (`| head -1`): stop quietly with the status of a SIGPIPE death.
    pub(crate) fn on_stdout_closed(&mut self) {
        let teardown = self.interrupt_if_one_off();
        self.end(Ok(BROKEN_PIPE_STATUS), teardown);
    }

    /// SIGINT, SIGTERM or SIGHUP reached us.
    pub(crate) fn on_signal(&mut self, signal: Termination) {
        let teardown = self.interrupt_if_one_off();
        self.end(Ok(signal.exit_status()), teardown);
    }

    /// Reading or sending the input, or writing stderr, failed. A one-off's program would wait
    /// for the rest of its input for ever, so it is interrupted and the run ends with the error.
    pub(crate) fn on_local_failure(&mut self, error: RunError) {
        self.end(Err(error), Teardown::InterruptThenClose);
    }

    /// A one-off's program may still be running: it gets Ctrl-C. In an interactive session the
    /// user's own keys already reached it, and a shell would only print a new prompt.
    fn interrupt_if_one_off(&self) -> Teardown {
        match self.mode {
            Mode::OneOff => Teardown::InterruptThenClose,
            Mode::Interactive => Teardown::Close,
        }
    }

    /// The first ending wins: what happens while tearing down does not change the result.
    fn end(&mut self, result: Result<i32, RunError>, teardown: Teardown) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome { result, teardown });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::StdinMode;
    use crate::channel::{HandshakeError, InvalidHandshakeRequest, ResumeError};

    const TRAILER: &str = "__END_n0nce__";
    const MARKER: &str = "__READY_n0nce__";

    fn plan(stdin: StdinMode, marker: Option<&str>, trailer: Option<&str>) -> Plan {
        Plan {
            command: "sh -c true".to_owned(),
            stdin,
            ready_marker: marker.map(str::to_owned),
            exit_trailer: trailer.map(str::to_owned),
            stderr_tag: None,
            alternatives: Vec::new(),
        }
    }

    fn one_off() -> RunState {
        RunState::new(Mode::OneOff, &plan(StdinMode::Inline, None, Some(TRAILER)))
    }

    fn status(state: &RunState) -> Option<i32> {
        state
            .outcome()
            .and_then(|o| o.result.as_ref().ok().copied())
    }

    fn teardown(state: &RunState) -> Option<Teardown> {
        state.outcome().map(|o| o.teardown)
    }

    #[test]
    fn the_trailer_gives_the_status_and_the_session_is_closed() {
        let mut state = one_off();
        let mut out = Vec::new();
        state.on_output(
            format!("hello\n{TRAILER}3\n").as_bytes(),
            &mut out,
            &mut Vec::new(),
        );
        assert_eq!(out, b"hello\n");
        assert_eq!(status(&state), Some(3));
        assert_eq!(teardown(&state), Some(Teardown::Close));
    }

    #[test]
    fn a_trailer_split_across_frames_still_ends_the_run() {
        let mut state = one_off();
        let mut out = Vec::new();
        state.on_output(b"x__END_n0", &mut out, &mut Vec::new());
        assert!(state.outcome().is_none());
        state.on_output(b"nce__4", &mut out, &mut Vec::new());
        assert!(state.outcome().is_none(), "the status runs to its newline");
        state.on_output(b"2\n", &mut out, &mut Vec::new());
        assert_eq!(out, b"x");
        assert_eq!(status(&state), Some(42));
    }

    #[test]
    fn a_malformed_status_is_an_error() {
        let mut state = one_off();
        state.on_output(
            format!("{TRAILER}oops\n").as_bytes(),
            &mut Vec::new(),
            &mut Vec::new(),
        );
        let outcome = state.into_outcome().expect("ended");
        assert!(matches!(outcome.result, Err(RunError::MalformedExitStatus)));
    }

    #[test]
    fn closing_without_the_promised_trailer_is_an_error_that_quotes_the_service() {
        let mut state = one_off();
        state.on_closed("Command exited".to_owned(), &mut Vec::new());
        let outcome = state.into_outcome().expect("ended");
        assert_eq!(outcome.teardown, Teardown::Nothing);
        let error = outcome.result.expect_err("no status");
        assert!(error.to_string().contains("Command exited"), "{error}");
    }

    #[test]
    fn closing_flushes_what_was_held_back_as_a_possible_trailer() {
        let mut state = RunState::new(Mode::OneOff, &plan(StdinMode::Inline, None, None));
        let mut out = Vec::new();
        state.on_output(b"almost __END_", &mut out, &mut Vec::new());
        state.on_closed(String::new(), &mut out);
        assert_eq!(out, b"almost __END_");
        assert_eq!(status(&state), Some(0), "no trailer was promised");
    }

    #[test]
    fn an_exit_code_message_stands_in_for_a_missing_trailer() {
        let mut state = one_off();
        state.on_exit_code(7);
        state.on_closed(String::new(), &mut Vec::new());
        assert_eq!(status(&state), Some(7));
    }

    #[test]
    fn an_interactive_session_that_closes_exits_zero_or_with_what_it_learnt() {
        let interactive = plan(StdinMode::Raw, None, Some(TRAILER));
        let mut state = RunState::new(Mode::Interactive, &interactive);
        state.on_closed(String::new(), &mut Vec::new());
        assert_eq!(status(&state), Some(0));

        let mut state = RunState::new(Mode::Interactive, &interactive);
        state.on_output(
            format!("{TRAILER}5\n").as_bytes(),
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert_eq!(status(&state), Some(5));
    }

    #[test]
    fn a_closed_stdout_and_signals_interrupt_a_one_off_but_not_an_interactive_session() {
        let mut state = one_off();
        state.on_stdout_closed();
        assert_eq!(status(&state), Some(BROKEN_PIPE_STATUS));
        assert_eq!(teardown(&state), Some(Teardown::InterruptThenClose));

        let mut state = one_off();
        state.on_signal(Termination::Terminate);
        assert_eq!(status(&state), Some(143));
        assert_eq!(teardown(&state), Some(Teardown::InterruptThenClose));

        let mut state = RunState::new(Mode::Interactive, &plan(StdinMode::Raw, None, None));
        state.on_signal(Termination::Interrupt);
        assert_eq!(status(&state), Some(130));
        assert_eq!(teardown(&state), Some(Teardown::Close));
    }

    #[test]
    fn a_failed_input_ends_the_run_with_its_error_and_interrupts_the_program() {
        let mut state = RunState::new(
            Mode::OneOff,
            &plan(StdinMode::StreamBase64, Some(MARKER), Some(TRAILER)),
        );
        let error = std::io::Error::other("device gone");
        state.on_local_failure(RunError::Stdin(error));
        let outcome = state.into_outcome().expect("ended");
        assert_eq!(outcome.teardown, Teardown::InterruptThenClose);
        let error = outcome.result.expect_err("an input error is an error");
        assert!(error.to_string().contains("device gone"), "{error}");
    }

    #[test]
    fn streamed_input_waits_for_the_ready_marker() {
        let mut state = RunState::new(
            Mode::OneOff,
            &plan(StdinMode::StreamBase64, Some(MARKER), Some(TRAILER)),
        );
        assert_eq!(state.way_taken(), None);
        state.on_output(b"motd noise\n", &mut Vec::new(), &mut Vec::new());
        assert_eq!(state.way_taken(), None);
        state.on_output(MARKER.as_bytes(), &mut Vec::new(), &mut Vec::new());
        assert_eq!(
            state.way_taken().map(|way| way.stdin),
            Some(StdinMode::StreamBase64)
        );
        assert_eq!(
            one_off().way_taken().map(|way| way.stdin),
            Some(StdinMode::Inline),
            "inline input is in the command: nothing to wait for"
        );
    }

    #[test]
    fn an_alternative_way_brings_its_stdin_mode_its_notice_and_merged_stderr() {
        let plan = Plan {
            stderr_tag: Some("__ERR_n0nce__".to_owned()),
            alternatives: vec![crate::adapter::Alternative {
                ready_marker: "__B64_n0nce__".to_owned(),
                stdin: StdinMode::StreamBase64,
                stderr_framed: false,
                notice: "no dd in the container".to_owned(),
            }],
            ..plan(StdinMode::StreamChunks, Some(MARKER), Some(TRAILER))
        };
        let mut state = RunState::new(Mode::OneOff, &plan);
        state.on_output(b"__B64_n0nce__", &mut Vec::new(), &mut Vec::new());
        let way = state.way_taken().expect("the alternative's marker arrived");
        assert_eq!(way.stdin, StdinMode::StreamBase64);
        assert_eq!(way.stderr_tag, None);
        assert_eq!(way.notice.as_deref(), Some("no dd in the container"));

        assert_eq!(
            state.take_notice().as_deref(),
            Some("no dd in the container")
        );
        assert_eq!(state.take_notice(), None, "once");

        // The marker and the status in one piece of output: the run is over at once, and the
        // notice is still there to be shown.
        let mut state = RunState::new(Mode::OneOff, &plan);
        state.on_output(
            format!("__B64_n0nce__{TRAILER}0\n").as_bytes(),
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert_eq!(status(&state), Some(0));
        assert_eq!(state.way_taken(), None, "nothing to stream any more");
        assert!(state.take_notice().is_some());

        let mut state = RunState::new(Mode::OneOff, &plan);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        state.on_output(
            format!("{MARKER}out__ERR_n0nce__ 68 69\n{TRAILER}0\n").as_bytes(),
            &mut out,
            &mut err,
        );
        assert_eq!((out.as_slice(), err.as_slice()), (&b"out"[..], &b"hi"[..]));
        assert_eq!(status(&state), Some(0));
        assert_eq!(state.way_taken(), None, "the run is over");
    }

    #[test]
    fn an_interactive_session_takes_no_way() {
        let state = RunState::new(Mode::Interactive, &plan(StdinMode::Raw, None, None));
        assert_eq!(state.way_taken(), None, "keystrokes are not streamed input");
    }

    #[test]
    fn the_first_ending_wins() {
        let mut state = one_off();
        state.on_signal(Termination::Interrupt);
        state.on_lost(HandshakeError::InvalidRequest(InvalidHandshakeRequest::KmsTwice).into());
        state.on_output(
            format!("{TRAILER}9\n").as_bytes(),
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert_eq!(status(&state), Some(130));
    }

    #[test]
    fn a_send_refused_by_an_ended_session_leaves_the_verdict_to_the_sessions_own_event() {
        let mut state = one_off();
        state.on_send_failed(ChannelError::SessionClosed);
        assert!(
            state.outcome().is_none(),
            "the closed session's event decides"
        );
        state.on_lost(ChannelError::ResumeFailed {
            attempts: 1,
            last: ResumeError::ResumeCall {
                message: "gone".to_owned(),
            },
        });
        let outcome = state.into_outcome().expect("ended");
        let error = outcome.result.expect_err("a lost channel is an error");
        assert!(
            error.to_string().contains("could not be resumed"),
            "{error}"
        );

        let mut state = one_off();
        state.on_send_failed(ChannelError::SessionClosed);
        state.on_closed(String::new(), &mut Vec::new());
        assert!(
            matches!(
                state.into_outcome().expect("ended").result,
                Err(RunError::NoExitStatus { .. })
            ),
            "a close without the trailer is still reported as such"
        );
    }

    #[test]
    fn a_send_that_fails_for_another_reason_ends_the_run_with_it() {
        let mut state = one_off();
        state.on_send_failed(ChannelError::PongTimeout {
            timeout: std::time::Duration::from_secs(1),
        });
        assert!(matches!(
            state.into_outcome().expect("ended").result,
            Err(RunError::Channel(ChannelError::PongTimeout { .. }))
        ));
    }

    #[test]
    fn a_lost_channel_is_an_error_with_nothing_left_to_close() {
        let mut state = one_off();
        state.on_lost(HandshakeError::InvalidRequest(InvalidHandshakeRequest::KmsTwice).into());
        let outcome = state.into_outcome().expect("ended");
        assert_eq!(outcome.teardown, Teardown::Nothing);
        assert!(matches!(outcome.result, Err(RunError::Channel(_))));
    }
}
