//! Wires one run together: adapter plan, ExecuteCommand, data channel, terminal, exit status.
//!
//! A run has two steps, in this order. [`prepare`] is local: it loads the adapters, reads the
//! start of stdin and asks the adapter for a plan, so that a bad `--adapter` or a refused plan
//! costs no AWS call. [`execute`] then starts the session with ExecuteCommand on the target the
//! CLI resolved and hands the data channel to the driver ([`driver`]), one loop for one-off and
//! interactive runs, whose ending and exit-status rules live in the pure [`state`] machine. This
//! module holds no protocol logic: the byte conventions are [`crate::plan_io`], the session is
//! [`crate::channel`].

mod driver;
pub mod fanout;
pub mod output;
mod state;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::adapter::{self, AdapterError, AdapterSet, Invocation, LoadOptions, Plan};
use crate::channel::transport::{
    ConnectParams, DataChannel, DataKeySource, ResumePolicy, ResumeTicket, Resumer,
};
use crate::channel::{ChannelError, KmsError};
use crate::ecs::{self, AwsSettings, EcsApi, Target, TaskSelector};
use crate::exit::Exit;
use crate::kms::KmsApi;
use crate::ssm::SsmApi;

use output::RunOutput;
pub(crate) use state::Mode;

/// What to run, as the user asked for it; where it runs is resolved separately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunRequest {
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
    /// `--inline-input`: offer a small one-off input to the adapter, which may put it into the
    /// command. Off by default: the command string is an API request parameter that audit logs
    /// record, and the remote process list shows it, so input is streamed unless asked.
    pub inline_input: bool,
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
    #[error(
        "reading standard input failed: {0}; the remote command was interrupted, \
         since the rest of its input cannot be sent"
    )]
    Stdin(io::Error),
    #[error("{0}; the remote command was interrupted, since it reads exactly the announced length")]
    InputLength(#[from] crate::plan_io::InputLengthChanged),
    #[error("the task that sends the input stopped: {0}")]
    InputTask(#[from] tokio::task::JoinError),
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
            RunError::Stdin(_) | RunError::Stderr(_) | RunError::InputLength(_) => Exit::IoError,
            RunError::InputTask(_) | RunError::Setup(_) => Exit::Software,
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
        KmsError::HandshakeTimeout { .. } | KmsError::Crypto(_) | KmsError::Protocol(_) => {
            Exit::Protocol
        }
        KmsError::Rejected { .. } | KmsError::NoKeySource { .. } => Exit::Software,
    }
}

/// The AWS services a run talks to once its plan is ready.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    /// ExecuteCommand.
    pub ecs: &'a EcsApi,
    /// ResumeSession, to resume a dropped data channel; without it a drop ends the run.
    pub ssm: Option<&'a SsmApi>,
    /// GenerateDataKey, for a session the agent wants KMS-encrypted; without it such a
    /// session fails.
    pub kms: Option<&'a KmsApi>,
}

/// Where a one-off's input comes from: the process's stdin, or a reader a test supplies.
pub type InputSource = Box<dyn AsyncRead + Send + Unpin>;

/// Makes the bytes sent after a streamed input's end (its Ctrl-D), once all of it is sent: for
/// a line the remote side reads next, such as the digest of what it just received.
pub type AfterInput = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// A run whose adapter has planned. Everything local is done; nothing has called AWS yet.
pub struct PreparedRun {
    plan: Plan,
    /// The adapter and its plan as `--explain` prints them (also logged at `-v`).
    explain: Vec<String>,
    /// Set when an unpinned third-party adapter serves this run in place of a built-in one.
    takeover_warning: Option<String>,
    mode: Mode,
    /// The start of stdin, already read to size the input (empty for interactive runs).
    input_prefix: Vec<u8>,
    /// The input's whole length (prefix included) as the plan was told it, when known.
    input_len: Option<u64>,
    input: InputSource,
    after_input: Option<AfterInput>,
}

impl PreparedRun {
    /// A one-off whose plan the host made itself (`ecs-exec cp`), with no adapter: `input`, of
    /// `input_len` bytes when known, is streamed as the plan says, then `after_input`'s bytes
    /// follow its end.
    pub(crate) fn host_planned(
        plan: Plan,
        input: InputSource,
        input_len: Option<u64>,
        after_input: Option<AfterInput>,
    ) -> PreparedRun {
        let explain = vec![
            "adapter: (none: planned by ecs-exec itself)".to_owned(),
            format!("command: {}", adapter::terminal_safe(&plan.command)),
            format!("stdin: {}", plan.stdin),
        ];
        // Logged at -v as an adapter's plan is, so the exact remote command can be reviewed.
        for line in &explain {
            tracing::debug!("{line}");
        }
        PreparedRun {
            plan,
            explain,
            takeover_warning: None,
            mode: Mode::OneOff,
            input_prefix: Vec::new(),
            input_len,
            input,
            after_input,
        }
    }

    /// The command string ExecuteCommand will carry.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Which adapter serves the run (name, version, source, SHA-256) and its exact plan.
    pub fn explain(&self) -> &[String] {
        &self.explain
    }

    /// The one line to show when a third-party adapter takes over what a built-in serves.
    pub fn takeover_warning(&self) -> Option<&str> {
        self.takeover_warning.as_deref()
    }
}

/// Loads the adapters, reads the start of stdin (one-off) and asks the adapter for its plan.
pub async fn prepare(req: &RunRequest) -> Result<PreparedRun, RunError> {
    prepare_with_input(req, Box::new(tokio::io::stdin()), stdin_file_len()).await
}

/// [`prepare`] with the input read from `input` instead of stdin; `input_len` is its length
/// when known (a file), so an adapter can size a stream.
pub async fn prepare_with_input(
    req: &RunRequest,
    mut input: InputSource,
    input_len: Option<u64>,
) -> Result<PreparedRun, RunError> {
    let mut adapters = AdapterSet::load(&LoadOptions {
        adapter_dir: req.adapter_dir.clone(),
        ..LoadOptions::default()
    })?;
    let selection = adapters.select_run(req.pipe.as_deref(), req.adapter.as_deref())?;
    let adapter = selection.adapter;

    let (mode, invocation, input_prefix) = if req.interactive {
        let invocation = Invocation::interactive(req.pipe.clone(), req.adapter_args.clone());
        (Mode::Interactive, invocation, Vec::new())
    } else {
        let (invocation, prefix) = read_invocation_input(req, &mut input, input_len).await?;
        (Mode::OneOff, invocation, prefix)
    };
    let nonce = adapter::new_nonce();
    let plan = adapter.plan(&invocation, &nonce)?;
    let explain = selection.explain(&plan);
    for line in &explain {
        tracing::debug!("{line}");
    }
    Ok(PreparedRun {
        takeover_warning: selection.warning(),
        explain,
        plan,
        mode,
        input_prefix,
        input_len: invocation.input_len,
        input,
        after_input: None,
    })
}

/// Where one run goes, as the command line named it: resolved in AWS only after the local work.
#[derive(Debug, Clone, Copy)]
pub struct TargetRequest<'a> {
    pub aws: &'a AwsSettings,
    pub cluster: &'a str,
    pub selector: &'a TaskSelector,
    pub container: Option<&'a str>,
}

/// Loads the AWS configuration, resolves the one task `target` names and runs `prepared` there:
/// what exec and `cp` share once their local work is done.
pub async fn resolve_and_execute(
    target: TargetRequest<'_>,
    prepared: PreparedRun,
    output: &mut dyn RunOutput,
) -> anyhow::Result<i32> {
    tracing::debug!(cluster = %target.cluster, selector = ?target.selector, container = ?target.container, "resolving target");
    let config = ecs::load_sdk_config(target.aws).await;
    let api = EcsApi::new(&config)?;
    tracing::debug!(region = %api.region(), endpoint = ?config.endpoint_url(), "AWS config loaded");
    let resolved = api
        .resolve_target(target.cluster, target.selector, target.container)
        .await?;
    tracing::debug!(task = %resolved.task_id, container = %resolved.container_name, "target resolved");
    let ssm = SsmApi::new(&config);
    let kms = KmsApi::new(&config, target.aws);
    let services = Services {
        ecs: &api,
        ssm: ssm.as_ref(),
        kms: Some(&kms),
    };
    execute(&services, prepared, &resolved, output).await
}

/// Starts the session on `target` and drives it until the remote program's exit status is
/// known, writing its output to `output`.
pub async fn execute(
    services: &Services<'_>,
    prepared: PreparedRun,
    target: &Target,
    output: &mut dyn RunOutput,
) -> anyhow::Result<i32> {
    let session = services
        .ecs
        .execute_command(target, &prepared.plan.command, true)
        .await?;
    tracing::debug!(session_id = %session.session_id, "session started");
    let mut params = ConnectParams::new(&session.stream_url, session.token.expose());
    params.session.max_input_payload = input_message_bytes();
    params.resume = services.ssm.map(|ssm| {
        ResumePolicy::new(Arc::new(SsmResumer {
            ssm: ssm.clone(),
            session_id: session.session_id.clone(),
        }))
    });
    params.data_keys = services.kms.map(|kms| {
        let keys: Arc<dyn DataKeySource> = kms.session_keys(&session.session_id, target);
        keys
    });
    let (writer, events) = DataChannel::connect(params).await.map_err(RunError::from)?;

    match driver::drive(prepared, writer, events, output).await {
        Ok(status) => Ok(status),
        Err(RunError::Channel(reason @ ChannelError::ResumeFailed { .. })) => {
            Err(RunError::Orphaned {
                reason,
                task_id: target.task_id.clone(),
                container: target.container_name.clone(),
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

/// The largest input message. A streamed input is sent in messages this large (keystrokes and
/// small pipes still go as they come): the per-message cost (a SHA-256, a header, an
/// acknowledgement) is what limits bulk input, and the agent writes any payload to the terminal
/// as it is. AWS's plugin sends at most 1 KiB per message; `ECS_EXEC_INPUT_MESSAGE_BYTES` sets
/// another size (README "Flags and environment").
fn input_message_bytes() -> usize {
    std::env::var(INPUT_MESSAGE_BYTES_ENV)
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .map_or(DEFAULT_INPUT_MESSAGE_BYTES, |bytes| {
            bytes.clamp(1, MAX_INPUT_MESSAGE_BYTES)
        })
}

/// The variable that overrides [`DEFAULT_INPUT_MESSAGE_BYTES`].
pub const INPUT_MESSAGE_BYTES_ENV: &str = "ECS_EXEC_INPUT_MESSAGE_BYTES";
const DEFAULT_INPUT_MESSAGE_BYTES: usize = 32 * 1024;
const MAX_INPUT_MESSAGE_BYTES: usize = 1024 * 1024;

/// Reads the start of the input to tell a small input (inlinable, length known) from a stream.
async fn read_invocation_input(
    req: &RunRequest,
    input: &mut InputSource,
    input_len: Option<u64>,
) -> Result<(Invocation, Vec<u8>), RunError> {
    let limit = adapter::MAX_INLINE_INPUT + 1;
    let mut prefix = vec![0; limit];
    let mut filled = 0;
    while filled < limit {
        let read = input
            .read(&mut prefix[filled..])
            .await
            .map_err(RunError::Stdin)?;
        if read == 0 {
            prefix.truncate(filled);
            let (pipe, args) = (req.pipe.clone(), req.adapter_args.clone());
            let invocation = if req.inline_input {
                Invocation::one_off_with_input(pipe, args, &prefix)
            } else {
                // The whole length is known, the bytes are not offered: nothing can be inlined.
                Invocation::one_off_streamed(pipe, args, Some(prefix.len() as u64))
            };
            return Ok((invocation, prefix));
        }
        filled += read;
    }
    let invocation = Invocation::one_off_streamed(
        req.pipe.clone(),
        req.adapter_args.clone(),
        input_len.map(|len| len.max(prefix.len() as u64)),
    );
    Ok((invocation, prefix))
}

/// When stdin is a regular file, the length left to read from where its offset stands (a
/// script may have read part of it before starting us: `{ read header; ecs-exec ...; } < f`).
fn stdin_file_len() -> Option<u64> {
    let stdin = std::io::stdin();
    let metadata = rustix::fs::fstat(&stdin).ok()?;
    if !rustix::fs::FileType::from_raw_mode(metadata.st_mode).is_file() {
        return None;
    }
    let offset = rustix::fs::seek(&stdin, rustix::fs::SeekFrom::Current(0)).ok()?;
    u64::try_from(metadata.st_size).ok()?.checked_sub(offset)
}
