//! One event loop for every run, one-off or interactive: remote output to stdout and stderr,
//! input to the remote side, window sizes, termination signals. It does what the pure
//! [`RunState`] decides: the state says when the run is over, with which status or error, and
//! what the session is still owed (Ctrl-C, a close); this loop only carries bytes and waits.

use std::future;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt as _;
use tokio::task::JoinHandle;

use futures_util::FutureExt as _;

use crate::adapter::{MAX_STREAM_CHUNK, StdinMode, Way};
use crate::channel::session::Event;
use crate::channel::transport::{ChannelEvents, ChannelWriter};
use crate::plan_io::{END_OF_INPUT, InputFraming, READ_OFFSET};
use crate::terminal::{self, RawModeGuard, ResizeEvents, TerminationSignals, WindowSize};

use super::output::RunOutput;
use super::state::{Mode, RunState, Teardown};
use super::{AfterInput, InputSource, PreparedRun, RunError};

/// The terminal size sent when there is no terminal to ask (a one-off under Hoop).
const DEFAULT_SIZE: (u32, u32) = (80, 24);
/// The most input read (and framed, as one chunk in `stream-chunks`) at a time when streaming:
/// the contract's largest chunk, because the remote decoder starts one `dd` per chunk, and on a
/// small machine each start holds the terminal up for milliseconds. The bytes are read in place
/// and never copied, so the chunks in flight (one being read, the session's send window) keep
/// the peak RSS of a 1 GiB input under 32 MiB.
const INPUT_CHUNK: usize = MAX_STREAM_CHUNK;
/// How much is read per keystroke read in an interactive session.
const KEYS_CHUNK: usize = 4096;
/// After the result is known, how long to wait for the service to close the session.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Drives the session until the state says the run is over, then tears it down as told.
pub(super) async fn drive(
    prepared: PreparedRun,
    writer: ChannelWriter,
    mut events: ChannelEvents,
    sink: &mut dyn RunOutput,
) -> Result<i32, RunError> {
    let PreparedRun {
        plan,
        mode,
        input_prefix,
        input_len,
        input,
        after_input,
        ..
    } = prepared;
    // Held until the end: dropping it restores the terminal on every way out.
    let raw_mode = match mode {
        Mode::Interactive => RawModeGuard::enter().map_err(RunError::Setup)?,
        Mode::OneOff => None,
    };
    let mut signals = TerminationSignals::new().map_err(RunError::Setup)?;
    let mut resizes = match mode {
        Mode::Interactive => Some(ResizeEvents::new().map_err(RunError::Setup)?),
        Mode::OneOff => None,
    };
    let initial_size = match &resizes {
        Some(resizes) => resizes.initial(),
        None => terminal::window_size(),
    };
    let mut state = RunState::new(mode, &plan);
    let (cols, rows) = initial_size.map_or(DEFAULT_SIZE, cols_rows);
    if let Err(refused) = writer.send_resize(cols, rows) {
        state.on_send_failed(refused);
    }

    let mut input =
        match (mode, plan.stdin) {
            (Mode::Interactive, StdinMode::Raw) => InputPump::Running(tokio::spawn(
                pump_keystrokes(input, writer.clone(), raw_mode.is_some()),
            )),
            (Mode::OneOff, _) => InputPump::Waiting {
                prefix: input_prefix,
                input_len,
                input,
                after_input,
            },
            _ => InputPump::Done,
        };
    let mut output = Vec::with_capacity(64 * 1024);
    let mut stderr_frames = Vec::new();

    while state.outcome().is_none() {
        if let Some(way) = state.way_taken().filter(|_| input.is_waiting()).cloned() {
            tracing::debug!(stdin = %way.stdin, stderr_apart = way.stderr_tag.is_some(), "the remote command is ready");
            input.start(&way, &writer);
        }
        tokio::select! {
            event = events.next() => {
                output.clear();
                stderr_frames.clear();
                match event {
                    Some(Event::Output(data)) => {
                        state.on_output(&data, &mut output, &mut stderr_frames);
                    }
                    Some(Event::Stderr(data)) => {
                        if let Err(error) = sink.stderr(&data) {
                            state.on_local_failure(RunError::Stderr(error));
                        }
                    }
                    Some(Event::ExitCode(code)) => state.on_exit_code(code),
                    Some(Event::Closed { output: said }) => state.on_closed(said, &mut output),
                    Some(Event::LocallyClosed { .. }) | None => {
                        state.on_closed(String::new(), &mut output);
                    }
                    Some(Event::Lost { reason }) => state.on_lost(reason),
                    Some(other) => tracing::debug!(?other, "session event"),
                }
                if let Some(notice) = state.take_notice()
                    && let Err(error) = sink.note(&notice)
                {
                    state.on_local_failure(RunError::Stderr(error));
                }
                if !stderr_frames.is_empty()
                    && let Err(error) = sink.stderr(&stderr_frames)
                {
                    state.on_local_failure(RunError::Stderr(error));
                }
                if !sink.stdout(&output) {
                    state.on_stdout_closed();
                }
            }
            Some(size) = next_resize(&mut resizes) => {
                let (cols, rows) = cols_rows(size);
                if let Err(reason) = writer.send_resize(cols, rows) {
                    state.on_send_failed(reason);
                }
            }
            signal = signals.recv() => state.on_signal(signal),
            result = input.finished() => match result {
                Ok(()) => {}
                Err(RunError::Channel(refused)) => state.on_send_failed(refused),
                Err(error) => state.on_local_failure(error),
            }
        }
    }
    input.stop();
    if let Err(error) = sink.finish() {
        tracing::debug!(%error, "writing the last output");
    }

    let Some(outcome) = state.into_outcome() else {
        return Err(RunError::ChannelVanished);
    };
    match outcome.teardown {
        Teardown::Nothing => {}
        Teardown::Close => finish_session(&writer, &mut events).await,
        Teardown::InterruptThenClose => {
            interrupt_remote(&writer).await;
            finish_session(&writer, &mut events).await;
        }
    }
    drop(raw_mode);
    outcome.result
}

fn cols_rows(size: WindowSize) -> (u32, u32) {
    (u32::from(size.cols), u32::from(size.rows))
}

/// The next window size, or never when the run has no terminal to watch.
async fn next_resize(resizes: &mut Option<ResizeEvents>) -> Option<WindowSize> {
    match resizes {
        Some(resizes) => resizes.next().await,
        None => future::pending().await,
    }
}

/// The task that sends input, from before it starts to after it is done. Its result is
/// awaited by the loop, so a failed read ends the run instead of leaving the remote side
/// waiting for the rest of its input.
enum InputPump {
    /// A one-off waits for the remote side to say which way it took (its ready marker).
    Waiting {
        prefix: Vec<u8>,
        input_len: Option<u64>,
        input: InputSource,
        after_input: Option<AfterInput>,
    },
    Running(JoinHandle<Result<(), RunError>>),
    /// Sent, or nothing to send.
    Done,
}

impl InputPump {
    fn is_waiting(&self) -> bool {
        matches!(self, InputPump::Waiting { .. })
    }

    /// The remote command took `way`: stream the input as it says, if it streams any.
    fn start(&mut self, way: &Way, writer: &ChannelWriter) {
        let InputPump::Waiting {
            prefix,
            input_len,
            input,
            after_input,
        } = std::mem::replace(self, InputPump::Done)
        else {
            return;
        };
        if let Some(framing) = InputFraming::new(way.stdin, input_len) {
            *self = InputPump::Running(tokio::spawn(pump_streamed_input(
                prefix,
                input,
                framing,
                after_input,
                writer.clone(),
            )));
        }
    }

    /// Resolves when a running pump ends; never while there is none. Cancel-safe: the join
    /// handle keeps the result until it is awaited again.
    async fn finished(&mut self) -> Result<(), RunError> {
        let InputPump::Running(task) = self else {
            return future::pending().await;
        };
        let result = task.await;
        *self = InputPump::Done;
        result?
    }

    /// The run is over: stop reading input.
    fn stop(self) {
        if let InputPump::Running(task) = self {
            task.abort();
        }
    }
}

/// Streams the input framed as the way taken says, the bytes already read first, then its
/// end, then what `after_input` makes.
///
/// Reading goes on while a send waits for room in the session's window, into the next buffer, up
/// to [`INPUT_CHUNK`]: input that comes faster than the agent takes it goes out in the largest
/// chunks (a pipe holds only 64 KiB, so reading only between sends would cut the input into
/// chunks of that size, each costing the remote decoder a `dd`), while input that comes slowly
/// goes out as soon as it is read.
async fn pump_streamed_input(
    prefix: Vec<u8>,
    input: InputSource,
    mut framing: InputFraming,
    after_input: Option<AfterInput>,
    writer: ChannelWriter,
) -> Result<(), RunError> {
    let mut reader = GreedyReader {
        input,
        ended: false,
        failed: None,
    };
    let mut wire = Vec::new();
    framing.push(&prefix, &mut wire)?;
    let mut sending = Some(Box::pin(
        writer.send_input(Bytes::from(std::mem::take(&mut wire))),
    ));
    let mut next = ReadBuffer::new();
    loop {
        tokio::select! {
            sent = async {
                match sending.as_mut() {
                    Some(send) => send.await,
                    None => future::pending().await,
                }
            }, if sending.is_some() => {
                sent?;
                sending = None;
            }
            read = reader.read(next.room()), if !reader.ended && !next.is_full() => {
                next.filled(read.map_err(RunError::Stdin)?);
            }
        }
        if sending.is_none() {
            if !next.is_empty() {
                let framed = framing
                    .frame_read(std::mem::replace(&mut next, ReadBuffer::new()).into_read())?;
                sending = Some(Box::pin(writer.send_input(framed)));
            } else if reader.ended {
                break;
            }
        }
    }
    framing.finish(&mut wire)?;
    if let Some(after_input) = after_input {
        wire.extend(after_input());
    }
    writer.send_input(Bytes::from(wire)).await?;
    tracing::debug!("input sent");
    Ok(())
}

/// Input being read for the next send: room for a chunk header (`READ_OFFSET`), then up to
/// [`INPUT_CHUNK`] bytes.
struct ReadBuffer {
    bytes: Vec<u8>,
    len: usize,
}

impl ReadBuffer {
    fn new() -> Self {
        Self {
            bytes: vec![0; READ_OFFSET + INPUT_CHUNK],
            len: 0,
        }
    }

    fn room(&mut self) -> &mut [u8] {
        &mut self.bytes[READ_OFFSET + self.len..]
    }

    fn filled(&mut self, read: usize) {
        self.len += read;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len == INPUT_CHUNK
    }

    /// The header room and the bytes read, as [`InputFraming::frame_read`] takes them.
    fn into_read(mut self) -> Vec<u8> {
        self.bytes.truncate(READ_OFFSET + self.len);
        self.bytes
    }
}

/// Reads as much as is there at once: it waits for the first bytes, then takes whatever more is
/// ready without waiting, so input arriving fast (a pipe) goes out in large chunks and input
/// arriving slowly (a person, `tail -f`) goes out as soon as it comes.
struct GreedyReader {
    input: InputSource,
    ended: bool,
    /// A read error met after some bytes were already read, returned by the next call.
    failed: Option<std::io::Error>,
}

impl GreedyReader {
    async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        if self.ended {
            return Ok(0);
        }
        let mut filled = self.input.read(buffer).await?;
        if filled == 0 {
            self.ended = true;
        }
        while !self.ended && filled < buffer.len() {
            // Dropping a pending read loses nothing: tokio's stdin and files keep what a
            // background read brings in for the next call.
            match self.input.read(&mut buffer[filled..]).now_or_never() {
                Some(Ok(0)) => self.ended = true,
                Some(Ok(read)) => filled += read,
                Some(Err(error)) => {
                    self.failed = Some(error);
                    break;
                }
                None => break,
            }
        }
        Ok(filled)
    }
}

/// Forwards keys as typed. Without a terminal (a pipe), end of input becomes Ctrl-D so the
/// remote program sees end of file too, and the session carries on until it ends remotely.
async fn pump_keystrokes(
    mut input: InputSource,
    writer: ChannelWriter,
    is_terminal: bool,
) -> Result<(), RunError> {
    let mut chunk = vec![0; KEYS_CHUNK];
    loop {
        let read = input.read(&mut chunk).await.map_err(RunError::Stdin)?;
        if read == 0 {
            if !is_terminal {
                writer
                    .send_input(Bytes::from_static(&[END_OF_INPUT]))
                    .await?;
            }
            return Ok(());
        }
        writer
            .send_input(Bytes::copy_from_slice(&chunk[..read]))
            .await?;
    }
}

/// Ctrl-C for the remote terminal: the remote line discipline turns it into SIGINT. Bounded:
/// with the send window full (a stalled agent) the byte could wait forever, and a user who
/// pressed Ctrl-C must not.
async fn interrupt_remote(writer: &ChannelWriter) {
    let _ = tokio::time::timeout(CLOSE_GRACE, writer.send_input(Bytes::from_static(&[0x03]))).await;
}

/// Closes our side and waits, bounded, for the session to end so the remote side is clean.
async fn finish_session(writer: &ChannelWriter, events: &mut ChannelEvents) {
    let _ = writer.close();
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(event) = events.next().await {
            if matches!(
                event,
                Event::Closed { .. } | Event::LocallyClosed { .. } | Event::Lost { .. }
            ) {
                break;
            }
        }
    })
    .await;
}
