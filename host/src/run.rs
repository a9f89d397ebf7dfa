//! Wires one run together: adapter plan, ExecuteCommand, data channel, terminal, exit status.
//!
//! The CLI resolves the target and hands over a [`RunRequest`]; [`run`] asks the adapter for a
//! plan, starts the session with ExecuteCommand and drives the data channel until the remote
//! program's exit status is known. A one-off carries stdin as the plan says (inline, or streamed as
//! base64 after the ready marker) and forwards output byte for byte; an interactive run puts the
//! terminal in raw mode and forwards keystrokes and window sizes. This module holds no protocol
//! logic: the byte conventions are [`crate::plan_io`], the session is [`crate::channel`].

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::AsyncReadExt as _;

use crate::adapter::{self, AdapterError, AdapterSet, Invocation, LoadOptions, Plan, StdinMode};
use crate::channel::session::Event;
use crate::channel::transport::{
    ChannelEvents, ChannelWriter, ConnectParams, DataChannel, DataKeySource, ResumePolicy,
    ResumeTicket, Resumer,
};
use crate::channel::{ChannelError, KmsError};
use crate::ecs::{EcsApi, Target};
use crate::exit::Exit;
use crate::kms::KmsApi;
use crate::plan_io::{END_OF_INPUT, InputEncoder, OutputDecoder, OutputState};
use crate::ssm::SsmApi;
use crate::terminal::{self, RawModeGuard, ResizeEvents, Termination, TerminationSignals};

/// Everything a run needs, resolved and validated by the CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// Where the command runs (task and container already resolved).
    pub target: Target,
    /// `--pipe`: the program that reads stdin remotely; `None` means the adapter's default
    /// (stdin is a script for the shell).
    pub pipe: Option<String>,
    /// Words the host did not take, for the adapter (`args` in the WIT invocation).
    pub adapter_args: Vec<String>,
    /// `--interactive`: raw terminal session instead of a one-off with stdin as input.
    pub interactive: bool,
    /// `--adapter NAME|FILE.wasm`; `None` lets the host choose by the pipe's program.
    pub adapter: Option<String>,
    /// `--adapter-dir` / `ECS_EXEC_ADAPTER_DIR`: where third-party adapters are looked up.
    pub adapter_dir: Option<PathBuf>,
    /// 0 quiet, 1 `-v` or `CONNECTION_DEBUG=1`, 2 or more `-vv`.
    pub verbosity: u8,
}

/// Why a run failed after the target was resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error("data channel: {0}")]
    Channel(#[from] ChannelError),
    #[error(
        "data channel: {reason}; the remote command may still be running in task {task_id} \
         (container {container}): check it before running it again"
    )]
    Orphaned {
        reason: ChannelError,
        task_id: String,
        container: String,
    },
    #[error(
        "the session ended before the remote command reported its exit status{}; \
         it may have been killed, or the adapter's command did not print its trailer",
        closed_detail(.closed_output)
    )]
    NoExitStatus { closed_output: String },
    #[error("the remote command printed an unreadable exit status after its trailer")]
    MalformedExitStatus,
    #[error("the data channel stopped without saying why")]
    ChannelVanished,
    #[error("reading standard input: {0}")]
    Stdin(io::Error),
    #[error("setting up the terminal and signals: {0}")]
    Setup(io::Error),
    #[error("writing standard error: {0}")]
    Stderr(io::Error),
}

fn closed_detail(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!(" (the service said: {})", output.trim())
    }
}

impl RunError {
    /// The process exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            RunError::Adapter(_) => Exit::Config,
            RunError::Channel(ChannelError::Transport(_)) => Exit::Unavailable,
            RunError::Channel(ChannelError::Kms(kms)) => kms_exit(kms),
            RunError::Orphaned { .. } => Exit::TempFail,
            RunError::Channel(_)
            | RunError::NoExitStatus { .. }
            | RunError::MalformedExitStatus
            | RunError::ChannelVanished => Exit::Protocol,
            RunError::Stdin(_) | RunError::Stderr(_) | RunError::Setup(_) => Exit::Software,
        }
    }
}

/// The exit code of a KMS failure (README "Exit codes").
fn kms_exit(error: &KmsError) -> Exit {
    match error {
        KmsError::GenerateDataKeyDenied { .. }
        | KmsError::NoCredentials { .. }
        | KmsError::AgentEndedHandshake { .. } => Exit::NoPerm,
        KmsError::KeyNotFound { .. } | KmsError::KeyDisabled { .. } => Exit::Config,
        KmsError::Unavailable { .. } => Exit::TempFail,
        KmsError::NoRuntimeId { .. } => Exit::Unavailable,
        KmsError::HandshakeTimeout { .. } | KmsError::Crypto(_) | KmsError::Protocol { .. } => {
            Exit::Protocol
        }
        KmsError::Rejected { .. } | KmsError::NoKeySource { .. } => Exit::Software,
    }
}

/// The terminal size sent when there is no terminal to ask (a one-off under Hoop).
const DEFAULT_SIZE: (u32, u32) = (80, 24);
/// How long an interactive run waits for the agent's first message before it forwards keys
/// anyway (a program that prints nothing until it reads input must still get it).
const KEYS_GRACE: Duration = Duration::from_secs(1);
/// How much stdin is read per chunk when streaming.
const STDIN_CHUNK: usize = 64 * 1024;
/// After the exit status is known, how long to wait for the service to close the session.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Status for a run that stopped because its stdout was closed (as a process killed by SIGPIPE).
const BROKEN_PIPE_STATUS: i32 = 128 + libc::SIGPIPE;

/// Runs the command and returns the remote exit status. With `ssm`, a data channel that drops
/// mid-session is resumed (SSM ResumeSession) instead of ending the run; with `kms`, a session
/// the agent wants encrypted gets its data key (without it, such a session fails).
pub async fn run(
    api: &EcsApi,
    ssm: Option<&SsmApi>,
    kms: Option<&KmsApi>,
    req: RunRequest,
) -> anyhow::Result<i32> {
    let mut adapters = AdapterSet::load(&LoadOptions {
        adapter_dir: req.adapter_dir.clone(),
        ..LoadOptions::default()
    })
    .map_err(RunError::from)?;
    let adapter = adapters
        .select(req.pipe.as_deref(), req.adapter.as_deref())
        .map_err(RunError::from)?;

    let (invocation, stdin_prefix) = if req.interactive {
        (
            Invocation::interactive(req.pipe.clone(), req.adapter_args.clone()),
            Vec::new(),
        )
    } else {
        read_invocation_input(&req).await?
    };
    let nonce = adapter::new_nonce();
    let plan = adapter.plan(&invocation, &nonce).map_err(RunError::from)?;
    tracing::debug!(
        adapter = %adapter.info().name,
        stdin = %plan.stdin,
        command_bytes = plan.command.len(),
        "plan ready"
    );

    let session = api
        .execute_command(&req.target, &plan.command, true)
        .await?;
    tracing::debug!(session_id = %session.session_id, "session started");
    let mut params = ConnectParams::new(&session.stream_url, session.token.expose());
    params.resume = ssm.map(|ssm| {
        ResumePolicy::new(Arc::new(SsmResumer {
            ssm: ssm.clone(),
            session_id: session.session_id.clone(),
        }))
    });
    params.data_keys = kms.map(|kms| {
        let keys: Arc<dyn DataKeySource> = kms.session_keys(&session.session_id, &req.target);
        keys
    });
    let (writer, events) = DataChannel::connect(params).await.map_err(RunError::from)?;

    let outcome = if req.interactive {
        drive_interactive(&plan, writer, events).await
    } else {
        drive_one_off(&plan, stdin_prefix, writer, events).await
    };
    match outcome {
        Ok(status) => Ok(status),
        Err(RunError::Channel(reason @ ChannelError::ResumeFailed { .. })) => {
            Err(RunError::Orphaned {
                reason,
                task_id: req.target.task_id.clone(),
                container: req.target.container_name.clone(),
            }
            .into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Resumes the run's session through SSM.
struct SsmResumer {
    ssm: SsmApi,
    session_id: String,
}

impl Resumer for SsmResumer {
    fn resume(&self) -> BoxFuture<'_, Result<ResumeTicket, String>> {
        Box::pin(async move {
            let resumed = self
                .ssm
                .resume_session(&self.session_id)
                .await
                .map_err(|error| error.to_string())?;
            Ok(ResumeTicket {
                stream_url: resumed.stream_url,
                token: resumed.token.expose().to_owned(),
            })
        })
    }
}

/// Reads the start of stdin to tell a small input (inlinable, length known) from a stream.
async fn read_invocation_input(req: &RunRequest) -> Result<(Invocation, Vec<u8>), RunError> {
    let limit = adapter::MAX_INLINE_INPUT + 1;
    let mut prefix = Vec::with_capacity(limit);
    let mut stdin = tokio::io::stdin();
    while prefix.len() < limit {
        let mut chunk = vec![0; limit - prefix.len()];
        let read = stdin.read(&mut chunk).await.map_err(RunError::Stdin)?;
        if read == 0 {
            let invocation =
                Invocation::one_off_with_input(req.pipe.clone(), req.adapter_args.clone(), &prefix);
            return Ok((invocation, prefix));
        }
        prefix.extend_from_slice(&chunk[..read]);
    }
    let invocation = Invocation::one_off_streamed(
        req.pipe.clone(),
        req.adapter_args.clone(),
        stdin_file_len(prefix.len() as u64),
    );
    Ok((invocation, prefix))
}

/// When stdin is a regular file, its length: the bytes already read are part of it.
fn stdin_file_len(already_read: u64) -> Option<u64> {
    let metadata = std::fs::metadata("/dev/stdin").ok()?;
    metadata.is_file().then(|| metadata.len().max(already_read))
}

/// Where output goes and what the run has learnt so far.
struct OutputSink {
    decoder: OutputDecoder,
    buffer: Vec<u8>,
    stdout: io::Stdout,
    stdout_closed: bool,
}

impl OutputSink {
    fn new(plan: &Plan) -> Self {
        Self {
            decoder: OutputDecoder::new(plan.ready_marker.as_deref(), plan.exit_trailer.as_deref()),
            buffer: Vec::with_capacity(STDIN_CHUNK),
            stdout: io::stdout(),
            stdout_closed: false,
        }
    }

    /// Decodes remote output and writes the program's bytes to stdout.
    fn output(&mut self, data: &[u8]) {
        self.buffer.clear();
        self.decoder.push(data, &mut self.buffer);
        self.write_buffer();
    }

    /// The output ended: what was held back as a possible trailer start is output after all.
    fn finish(&mut self) {
        self.buffer.clear();
        self.decoder.finish(&mut self.buffer);
        self.write_buffer();
    }

    fn write_buffer(&mut self) {
        if self.buffer.is_empty() || self.stdout_closed {
            return;
        }
        let mut stdout = self.stdout.lock();
        if let Err(error) = stdout.write_all(&self.buffer).and_then(|()| stdout.flush()) {
            // A closed stdout (`| head -1`) ends the run quietly; anything else too, since
            // there is nowhere left to put the output.
            tracing::debug!(%error, "stdout closed");
            self.stdout_closed = true;
        }
    }
}

fn write_stderr(data: &[u8]) -> Result<(), RunError> {
    let mut stderr = io::stderr().lock();
    stderr
        .write_all(data)
        .and_then(|()| stderr.flush())
        .map_err(RunError::Stderr)
}

/// What ended the event loop of a run.
enum Ending {
    /// The remote program's status is known.
    Status(i32),
    /// The session closed; `output` is the service's reason text.
    Closed { output: String },
    /// Our stdout was closed.
    StdoutClosed,
    /// A termination signal arrived.
    Signal(Termination),
}

async fn drive_one_off(
    plan: &Plan,
    stdin_prefix: Vec<u8>,
    writer: ChannelWriter,
    mut events: ChannelEvents,
) -> Result<i32, RunError> {
    let mut signals = TerminationSignals::new().map_err(RunError::Setup)?;
    let (cols, rows) = terminal::window_size()
        .map(|size| (u32::from(size.cols), u32::from(size.rows)))
        .unwrap_or(DEFAULT_SIZE);
    writer.send_resize(cols, rows)?;

    let mut sink = OutputSink::new(plan);
    let mut input_pump: Option<tokio::task::JoinHandle<Result<(), RunError>>> = None;
    let mut stdin_prefix = Some(stdin_prefix);
    let mut exit_code_event: Option<i32> = None;
    let streams_input = plan.stdin == StdinMode::StreamBase64;

    let ending = loop {
        if let Some(status) = sink.decoder.exit_status() {
            break Ending::Status(status);
        }
        if sink.decoder.state() == OutputState::MalformedStatus {
            abort(input_pump);
            return Err(RunError::MalformedExitStatus);
        }
        if streams_input
            && input_pump.is_none()
            && sink.decoder.state() == OutputState::Running
            && let Some(prefix) = stdin_prefix.take()
        {
            input_pump = Some(tokio::spawn(pump_base64_input(prefix, writer.clone())));
        }
        if sink.stdout_closed {
            break Ending::StdoutClosed;
        }
        let event = tokio::select! {
            event = events.next() => event,
            signal = signals.recv() => break Ending::Signal(signal),
        };
        match event {
            Some(Event::Output(data)) => sink.output(&data),
            Some(Event::Stderr(data)) => write_stderr(&data)?,
            Some(Event::ExitCode(code)) => exit_code_event = Some(code),
            Some(Event::Closed { output }) => break Ending::Closed { output },
            Some(Event::LocallyClosed { .. }) | None => {
                break Ending::Closed {
                    output: String::new(),
                };
            }
            Some(Event::Lost { reason }) => {
                abort(input_pump);
                return Err(reason.into());
            }
            Some(other) => tracing::debug!(?other, "session event"),
        }
    };
    abort(input_pump);

    match ending {
        Ending::Status(status) => {
            finish_session(&writer, &mut events).await;
            Ok(status)
        }
        Ending::Closed { output } => {
            sink.finish();
            if let Some(status) = sink.decoder.exit_status() {
                return Ok(status);
            }
            match (plan.exit_trailer.as_ref(), exit_code_event) {
                (_, Some(code)) => Ok(code),
                (None, None) => Ok(0),
                (Some(_), None) => Err(RunError::NoExitStatus {
                    closed_output: output,
                }),
            }
        }
        Ending::StdoutClosed => {
            interrupt_remote(&writer).await;
            finish_session(&writer, &mut events).await;
            Ok(BROKEN_PIPE_STATUS)
        }
        Ending::Signal(signal) => {
            interrupt_remote(&writer).await;
            finish_session(&writer, &mut events).await;
            Ok(signal.exit_status())
        }
    }
}

/// Streams stdin as base64 lines, the bytes already read first, then end-of-input.
async fn pump_base64_input(prefix: Vec<u8>, writer: ChannelWriter) -> Result<(), RunError> {
    let mut encoder = InputEncoder::new();
    let mut encoded = Vec::with_capacity(STDIN_CHUNK * 4 / 3 + 64);
    encoder.push(&prefix, &mut encoded);
    let mut stdin = tokio::io::stdin();
    let mut chunk = vec![0; STDIN_CHUNK];
    loop {
        if !encoded.is_empty() {
            writer
                .send_input(Bytes::from(std::mem::take(&mut encoded)))
                .await?;
            encoded.reserve(STDIN_CHUNK * 4 / 3 + 64);
        }
        let read = stdin.read(&mut chunk).await.map_err(RunError::Stdin)?;
        if read == 0 {
            break;
        }
        encoder.push(&chunk[..read], &mut encoded);
    }
    encoder.finish(&mut encoded);
    writer.send_input(Bytes::from(encoded)).await?;
    tracing::debug!("input sent");
    Ok(())
}

fn abort(task: Option<tokio::task::JoinHandle<Result<(), RunError>>>) {
    if let Some(task) = task {
        task.abort();
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

async fn drive_interactive(
    plan: &Plan,
    writer: ChannelWriter,
    mut events: ChannelEvents,
) -> Result<i32, RunError> {
    let raw_mode = RawModeGuard::enter().map_err(RunError::Setup)?;
    let mut signals = TerminationSignals::new().map_err(RunError::Setup)?;
    let mut resizes = ResizeEvents::new().map_err(RunError::Setup)?;
    let (cols, rows) = resizes
        .initial()
        .map(|size| (u32::from(size.cols), u32::from(size.rows)))
        .unwrap_or(DEFAULT_SIZE);
    writer.send_resize(cols, rows)?;

    let forwards_keys = plan.stdin == StdinMode::Raw;
    // Keys wait for the agent's first message (or KEYS_GRACE): input sent before a KMS
    // HandshakeRequest would go out unencrypted, and the agent would never accept it.
    let mut keys = None;
    let keys_deadline = tokio::time::Instant::now() + KEYS_GRACE;
    let mut agent_spoke = false;
    let mut sink = OutputSink::new(plan);
    let mut exit_code_event = None;

    let ending = loop {
        if let Some(status) = sink.decoder.exit_status() {
            break Ending::Status(status);
        }
        if forwards_keys
            && keys.is_none()
            && (agent_spoke || tokio::time::Instant::now() >= keys_deadline)
        {
            keys = Some(tokio::spawn(pump_keystrokes(
                writer.clone(),
                raw_mode.is_some(),
            )));
        }
        if sink.stdout_closed {
            break Ending::StdoutClosed;
        }
        tokio::select! {
            () = tokio::time::sleep_until(keys_deadline), if forwards_keys && keys.is_none() => {}
            event = events.next() => {
                agent_spoke = true;
                match event {
                    Some(Event::Output(data)) => sink.output(&data),
                    Some(Event::Stderr(data)) => write_stderr(&data)?,
                    Some(Event::ExitCode(code)) => exit_code_event = Some(code),
                    Some(Event::Closed { output }) => break Ending::Closed { output },
                    Some(Event::LocallyClosed { .. }) | None => {
                        break Ending::Closed { output: String::new() }
                    }
                    Some(Event::Lost { reason }) => {
                        abort(keys);
                        drop(raw_mode);
                        return Err(reason.into());
                    }
                    Some(other) => tracing::debug!(?other, "session event"),
                }
            }
            Some(size) = resizes.next() => {
                writer.send_resize(u32::from(size.cols), u32::from(size.rows))?;
            }
            signal = signals.recv() => break Ending::Signal(signal),
        }
    };
    abort(keys);
    let status = match ending {
        Ending::Status(status) => {
            finish_session(&writer, &mut events).await;
            Ok(status)
        }
        Ending::Closed { .. } => {
            sink.finish();
            Ok(sink.decoder.exit_status().or(exit_code_event).unwrap_or(0))
        }
        Ending::StdoutClosed => {
            finish_session(&writer, &mut events).await;
            Ok(BROKEN_PIPE_STATUS)
        }
        Ending::Signal(signal) => {
            finish_session(&writer, &mut events).await;
            Ok(signal.exit_status())
        }
    };
    drop(raw_mode);
    status
}

/// Forwards stdin as typed. Without a terminal (a pipe), end of input becomes Ctrl-D so the
/// remote program sees end of file too, and the session carries on until it ends remotely.
async fn pump_keystrokes(writer: ChannelWriter, is_terminal: bool) -> Result<(), RunError> {
    let mut stdin = tokio::io::stdin();
    let mut chunk = vec![0; 4096];
    loop {
        let read = stdin.read(&mut chunk).await.map_err(RunError::Stdin)?;
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
