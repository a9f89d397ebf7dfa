//! The `ecs-exec.sh`-compatible grammar: parse (pure), validate (pure), then resolve and run.
//!
//! Hoop appends the user's words to the connection command, so host flags are taken anywhere,
//! also after a `--`; words the host does not take go to the adapter as `args` (a second `--`
//! passes everything after it to the adapter verbatim). A repeated flag: the last one wins, as
//! in the bash wrapper. An empty value (`--container=` from an unset variable) counts as not
//! given, as in the wrapper. A usage mistake prints one line and exits 64; everything after
//! validation is an `anyhow` chain printed as one `ecs-exec: error: …` line.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use super::{print_stdout, report_error, report_warning};
use crate::ecs::{self, AwsSettings, EcsApi, EcsError, FanoutTasks, TaskSelector, one_line};
use crate::exit::{self, Exit};
use crate::kms::KmsApi;
use crate::run::fanout::{self, FanoutOptions, SpooledInput};
use crate::run::output::{OutputFormat, ProcessOutput};
use crate::run::{self, RunRequest};
use crate::ssm::SsmApi;

/// The exec grammar as clap sees it (after [`split_words`] took the adapter's words out).
#[derive(Parser, Debug, Default, Clone, PartialEq, Eq)]
#[command(
    name = "ecs-exec",
    version,
    about = "Run one-off and interactive commands in AWS ECS containers (a drop-in for ecs-exec.sh)",
    override_usage = "ecs-exec --cluster NAME (--service-name NAME | --task ID) [--pipe COMMAND] [--interactive] [FLAGS] [-- ARGS…]\n       ecs-exec --cluster NAME (--service-name NAME --all-tasks | --tasks ID,ID) [--max-parallel N] [--output text|json] [FLAGS]\n       ecs-exec doctor --cluster NAME (--service-name NAME | --task ID) [--output text|json]\n       ecs-exec cp --cluster NAME (--service-name NAME | --task ID) SRC DST   (one of them :PATH)\n       ecs-exec adapters list|show|check …\n       ecs-exec completions bash|zsh|fish|elvish|powershell | ecs-exec man",
    args_override_self = true,
    disable_help_flag = true
)]
pub struct ExecArgs {
    /// Cluster name or ARN [env: CLUSTER_NAME]
    #[arg(long, value_name = "NAME|ARN")]
    pub cluster: Option<String>,
    /// Service whose running task to use [env: SERVICE_NAME]
    #[arg(long = "service-name", value_name = "NAME")]
    pub service_name: Option<String>,
    /// Task id or ARN to use as given (wins over --service-name)
    #[arg(long, value_name = "ID|ARN")]
    pub task: Option<String>,
    /// Container name (default: the first whose ExecuteCommandAgent runs) [env: CONTAINER]
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Program that reads stdin remotely, e.g. 'rails runner -' (default: stdin is a bash script)
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub pipe: Option<String>,
    /// Interactive session on a raw terminal instead of a one-off with stdin as input
    #[arg(long)]
    pub interactive: bool,
    /// Run the one-off on every RUNNING task of the service whose ExecuteCommandAgent runs
    #[arg(long = "all-tasks")]
    pub all_tasks: bool,
    /// Run the one-off on these tasks (ids or ARNs, comma-separated)
    #[arg(long, value_name = "ID,ID")]
    pub tasks: Option<String>,
    /// With --all-tasks/--tasks: at most N tasks at a time [default: 8]
    #[arg(long = "max-parallel", value_name = "N")]
    pub max_parallel: Option<String>,
    /// With --all-tasks/--tasks: text (lines marked [TASK]) or json (one object per line)
    #[arg(long, value_name = "text|json")]
    pub output: Option<String>,
    /// AWS region [env: AWS_REGION, AWS_DEFAULT_REGION]
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile from ~/.aws/config [env: AWS_PROFILE]
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// ECS API endpoint, e.g. http://127.0.0.1:4566 [env: AWS_ENDPOINT_URL_ECS, AWS_ENDPOINT_URL]
    #[arg(long = "endpoint-url", value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Adapter to use: an embedded adapter's name or a .wasm component file
    #[arg(long, value_name = "NAME|FILE.wasm")]
    pub adapter: Option<String>,
    /// Directory of third-party .wasm adapters [env: ECS_EXEC_ADAPTER_DIR]
    #[arg(long = "adapter-dir", value_name = "DIR")]
    pub adapter_dir: Option<PathBuf>,
    /// Print the adapter that would serve the run and its exact plan, then exit; calls no AWS API
    #[arg(long)]
    pub explain: bool,
    /// Let the adapter put a one-off's input of up to 1 KiB into the command itself: saves a
    /// round trip, but API audit logs and the container's process list can then show it
    #[arg(long = "inline-input")]
    pub inline_input: bool,
    /// Trace on stderr; -vv for more (also CONNECTION_DEBUG=1)
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
    /// Print this help
    #[arg(short = 'h', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Extra words for the adapter
    #[arg(value_name = "ARGS")]
    pub words: Vec<String>,
}

/// The environment variables the exec grammar reads (the AWS ones are aws-config's business).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecEnv {
    /// `CLUSTER_NAME`.
    pub cluster_name: Option<String>,
    /// `SERVICE_NAME`.
    pub service_name: Option<String>,
    /// `CONTAINER`.
    pub container: Option<String>,
    /// `ECS_EXEC_ADAPTER_DIR`.
    pub adapter_dir: Option<PathBuf>,
    /// `CONNECTION_DEBUG=1`.
    pub connection_debug: bool,
}

impl ExecEnv {
    /// Reads the variables from the process environment; empty ones count as unset.
    pub fn from_process() -> Result<ExecEnv, UsageError> {
        fn text(name: &str) -> Result<Option<String>, UsageError> {
            match std::env::var(name) {
                Ok(value) => Ok(non_empty(value)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(UsageError::new(format!("{name} is not valid UTF-8")))
                }
            }
        }
        Ok(ExecEnv {
            cluster_name: text("CLUSTER_NAME")?,
            service_name: text("SERVICE_NAME")?,
            container: text("CONTAINER")?,
            adapter_dir: std::env::var_os("ECS_EXEC_ADAPTER_DIR")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
            connection_debug: std::env::var_os("CONNECTION_DEBUG").is_some_and(|v| v == "1"),
        })
    }
}

/// A validated exec request: what to run, and where to find the task to run it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    /// Cluster name or ARN.
    pub cluster: String,
    /// The task or tasks to run on.
    pub targets: Targets,
    /// The container, if named.
    pub container: Option<String>,
    /// `--pipe`, `--interactive`, `--adapter`, `--adapter-dir` and the adapter's words.
    pub run: RunRequest,
    /// `--explain`: print the adapter and its plan instead of running.
    pub explain: bool,
    /// `--region`, `--profile`, `--endpoint-url`.
    pub aws: AwsSettings,
    /// 0 quiet, 1 `-v`/`CONNECTION_DEBUG=1`, 2 `-vv`.
    pub verbosity: u8,
}

/// Where a request runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// One task: as given, or picked from the service.
    One(TaskSelector),
    /// A one-off on each of several tasks (`--all-tasks`, `--tasks`).
    Each {
        tasks: FanoutTasks,
        options: FanoutOptions,
    },
}

/// `--max-parallel` when not given.
pub const DEFAULT_MAX_PARALLEL: usize = 8;
/// The most tasks run at once: each holds a websocket and a few buffers.
pub const MAX_PARALLEL_LIMIT: usize = 256;

/// A mistake on the command line: one line, exit 64.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    message: String,
}

impl UsageError {
    fn new(message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
        }
    }
}

/// What parsing produced: a request to validate, or text to print and exit 0.
#[derive(Debug)]
pub enum Parsed {
    /// Parsed flags and the adapter's words.
    Args(Box<ExecArgs>),
    /// `--help` or `--version`: print this on stdout and exit 0.
    Print(String),
}

/// Flags (long form, without `--`) that take a value; shared by [`split_words`] and clap.
const VALUE_FLAGS: [&str; 13] = [
    "cluster",
    "tasks",
    "max-parallel",
    "output",
    "service-name",
    "task",
    "container",
    "pipe",
    "region",
    "profile",
    "endpoint-url",
    "adapter",
    "adapter-dir",
];
/// Long flags without a value that are also taken after `--`.
const SWITCH_FLAGS: [&str; 6] = [
    "interactive",
    "all-tasks",
    "verbose",
    "help",
    "explain",
    "inline-input",
];

/// Splits argv (without the program name) into the words clap parses and the adapter's words.
///
/// Before the first `--` everything goes to clap (its positional words become adapter words
/// there). After it, long host flags (`--pipe X`, `--task=Y`, `--interactive`, …) still go to
/// clap, because Hoop appends the user's words to the connection command; other words go to the
/// adapter, and after a second `--` all words go to the adapter.
pub fn split_words(words: &[OsString]) -> (Vec<OsString>, Vec<OsString>) {
    let mut host = Vec::new();
    let mut adapter = Vec::new();
    let mut iter = words.iter().peekable();
    // Before the first `--`: a value flag's value is skipped over, so `--pipe -x` stays a value.
    // `--` is never a value: `--pipe --` leaves `--pipe` without one, which clap reports.
    while let Some(word) = iter.next() {
        if word == "--" {
            break;
        }
        host.push(word.clone());
        if long_flag(word)
            .is_some_and(|(name, inline)| inline.is_none() && VALUE_FLAGS.contains(&name))
            && let Some(value) = iter.next_if(|value| *value != "--")
        {
            host.push(value.clone());
        }
    }
    while let Some(word) = iter.next() {
        if word == "--" {
            adapter.extend(iter.by_ref().cloned());
            break;
        }
        match long_flag(word) {
            Some((name, inline)) if VALUE_FLAGS.contains(&name) => {
                host.push(word.clone());
                if inline.is_none()
                    && let Some(value) = iter.next_if(|value| *value != "--")
                {
                    host.push(value.clone());
                }
            }
            Some((name, None)) if SWITCH_FLAGS.contains(&name) => host.push(word.clone()),
            _ => adapter.push(word.clone()),
        }
    }
    (host, adapter)
}

/// `--name` or `--name=value` → (name, value); `None` for anything else.
fn long_flag(word: &OsString) -> Option<(&str, Option<&str>)> {
    let rest = word.to_str()?.strip_prefix("--")?;
    if rest.is_empty() {
        return None;
    }
    Some(match rest.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (rest, None),
    })
}

/// The clap command with the generated sections (environment, exit codes) appended.
pub fn command() -> clap::Command {
    ExecArgs::command().after_help(after_help())
}

fn after_help() -> String {
    // Lines stay under 100 columns so clap's wrapping leaves the layout alone.
    format!(
        "As a Hoop connection command:
  interactive: ecs-exec --interactive --cluster=$CLUSTER_NAME --service-name=$SERVICE_NAME
               then: hoop connect NAME -- --pipe /bin/bash
  one-off:     ecs-exec --cluster=$CLUSTER_NAME --service-name=$SERVICE_NAME
               then: hoop exec NAME -i 'echo hi'   or   hoop exec NAME -- --pipe python3 <<EOF

Flags may come in any order, also after `--`, as `--flag value` or `--flag=value`. The last of a
repeated flag wins; an empty value counts as not given. Other words go to the adapter, and so
does everything after a second `--`.

Environment:
  CLUSTER_NAME, SERVICE_NAME, CONTAINER    when --cluster, --service-name, --container are absent
  ECS_EXEC_ADAPTER_DIR                     directory of third-party .wasm adapters
  ECS_EXEC_ADAPTER_PINS                    SHA-256 digests of trusted third-party adapters
  ECS_EXEC_INPUT_MESSAGE_BYTES             largest data channel message for input (default 32768)
  CONNECTION_DEBUG=1                       same as -v
  AWS_REGION, AWS_DEFAULT_REGION           region (--region wins; else the profile)
  AWS_PROFILE                              profile (--profile wins)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
                                           static credentials
  AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
                                           container credentials endpoint (assume-role setups)
  AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN
                                           web identity; SSO profiles and EC2 metadata work too
  AWS_ENDPOINT_URL_ECS, AWS_ENDPOINT_URL   ECS endpoint (--endpoint-url wins)
  AWS_ENDPOINT_URL_KMS                     KMS endpoint, for clusters with a KMS key

IAM permissions: ecs:ListTasks (with --service-name), ecs:DescribeTasks, ecs:ExecuteCommand;
  kms:GenerateDataKey on the key, for clusters whose ECS Exec configuration names a KMS key.

Exit codes:
{}",
        exit::help_table()
    )
}

/// Parses the words after the program name. Pure: no environment, no IO.
pub fn parse(words: &[OsString]) -> Result<Parsed, UsageError> {
    let (host, adapter) = split_words(words);
    let argv = std::iter::once(OsString::from("ecs-exec")).chain(host);
    let matches = match command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(err) => {
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Ok(Parsed::Print(err.render().to_string()))
                }
                _ => Err(UsageError::new(one_line_clap_error(&err))),
            };
        }
    };
    let mut args = ExecArgs::from_arg_matches(&matches)
        .map_err(|err| UsageError::new(one_line_clap_error(&err)))?;
    for word in adapter {
        let word = word
            .into_string()
            .map_err(|word| UsageError::new(format!("argument {word:?} is not valid UTF-8")))?;
        args.words.push(word);
    }
    Ok(Parsed::Args(Box::new(args)))
}

/// Clap's first line (without `error: `) and its tip, if any, on one line.
fn one_line_clap_error(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    // Only "a similar argument exists" helps here; clap's "use '-- --x'" tip would hand a typo
    // to the adapter.
    if let Some(tip) = lines.find_map(|line| line.strip_prefix("tip: a similar")) {
        message.push_str(" (a similar");
        message.push_str(tip);
        message.push(')');
    }
    message
}

/// Validates parsed flags against the environment fallbacks. Pure.
pub fn validate(args: ExecArgs, env: &ExecEnv) -> Result<ExecRequest, UsageError> {
    let cluster = given(args.cluster.clone())
        .or_else(|| env.cluster_name.clone())
        .ok_or_else(|| UsageError::new("missing --cluster (or CLUSTER_NAME)"))?;
    validate_resource("--cluster", &cluster)?;
    let targets = validate_targets(&args, env)?;
    let container = given(args.container).or_else(|| env.container.clone());
    if let Some(container) = &container {
        validate_name("--container", container)?;
    }
    let region = given(args.region);
    if let Some(region) = &region
        && !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(UsageError::new(format!(
            "invalid --region {region:?}: a region looks like eu-west-1"
        )));
    }
    let endpoint_url = given(args.endpoint_url);
    if let Some(url) = &endpoint_url {
        validate_endpoint_url(url)?;
    }
    let adapter = given(args.adapter);
    if let Some(adapter) = &adapter {
        validate_adapter(adapter)?;
    }
    let adapter_dir = args
        .adapter_dir
        .filter(|dir| !dir.as_os_str().is_empty())
        .or_else(|| env.adapter_dir.clone());
    let verbosity = if env.connection_debug {
        args.verbose.max(1)
    } else {
        args.verbose
    };
    Ok(ExecRequest {
        cluster,
        targets,
        container,
        run: RunRequest {
            pipe: given(args.pipe),
            interactive: args.interactive,
            adapter,
            adapter_dir,
            adapter_args: args.words,
            inline_input: args.inline_input,
        },
        explain: args.explain,
        aws: AwsSettings {
            region,
            profile: given(args.profile),
            endpoint_url,
        },
        verbosity,
    })
}

/// `--task`, `--service-name`, and the fan-out flags `--all-tasks`, `--tasks`,
/// `--max-parallel`, `--output`.
fn validate_targets(args: &ExecArgs, env: &ExecEnv) -> Result<Targets, UsageError> {
    let task = given(args.task.clone());
    let tasks = given(args.tasks.clone());
    let service = || given(args.service_name.clone()).or_else(|| env.service_name.clone());
    let fanout = args.all_tasks || tasks.is_some();
    if !fanout {
        if args.max_parallel.is_some() || args.output.is_some() {
            return Err(UsageError::new(
                "--max-parallel and --output apply to --all-tasks and --tasks",
            ));
        }
        let selector = match task {
            Some(task) => {
                validate_resource("--task", &task)?;
                TaskSelector::Task(task)
            }
            None => {
                let service = service().ok_or_else(|| {
                    UsageError::new("missing --service-name (or SERVICE_NAME) or --task")
                })?;
                validate_resource("--service-name", &service)?;
                TaskSelector::Service(service)
            }
        };
        return Ok(Targets::One(selector));
    }
    if args.interactive {
        return Err(UsageError::new(
            "--all-tasks and --tasks run a one-off on each task; they cannot be --interactive",
        ));
    }
    if task.is_some() {
        return Err(UsageError::new(
            "--task names one task; use --tasks ID,ID for several, or --all-tasks",
        ));
    }
    let tasks = match (args.all_tasks, tasks) {
        (true, Some(_)) => {
            return Err(UsageError::new(
                "--all-tasks and --tasks both pick the tasks; give one of them",
            ));
        }
        (_, Some(list)) => {
            let ids: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect();
            if ids.is_empty() {
                return Err(UsageError::new("--tasks needs at least one task id"));
            }
            for id in &ids {
                validate_resource("--tasks", id)?;
            }
            FanoutTasks::Tasks(ids)
        }
        (_, None) => {
            let service = service().ok_or_else(|| {
                UsageError::new("--all-tasks needs --service-name (or SERVICE_NAME)")
            })?;
            validate_resource("--service-name", &service)?;
            FanoutTasks::Service(service)
        }
    };
    let max_parallel = match given(args.max_parallel.clone()) {
        None => DEFAULT_MAX_PARALLEL,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PARALLEL_LIMIT).contains(&n) => n,
            _ => {
                return Err(UsageError::new(format!(
                    "invalid --max-parallel {text:?}: a number from 1 to {MAX_PARALLEL_LIMIT}"
                )));
            }
        },
    };
    let format = match given(args.output.clone()).as_deref() {
        None | Some("text") => OutputFormat::Text,
        Some("json") => OutputFormat::Json,
        Some(other) => {
            return Err(UsageError::new(format!(
                "invalid --output {other:?}: text or json"
            )));
        }
    };
    Ok(Targets::Each {
        tasks,
        options: FanoutOptions {
            max_parallel,
            format,
        },
    })
}

/// An empty value counts as not given (the bash wrapper's `[ -z "$X" ]`).
fn given(value: Option<String>) -> Option<String> {
    value.and_then(non_empty)
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// A cluster, service or task: an ARN, or a name/id of letters, digits, `-` and `_`.
fn validate_resource(flag: &str, value: &str) -> Result<(), UsageError> {
    if value.starts_with("arn:") {
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) || !value.contains('/') {
            return Err(UsageError::new(format!(
                "invalid {flag} {value:?}: not an ECS ARN"
            )));
        }
        return Ok(());
    }
    validate_name(flag, value)
}

/// ECS names: 1 to 255 letters, digits, hyphens and underscores.
fn validate_name(flag: &str, value: &str) -> Result<(), UsageError> {
    let valid = value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "invalid {flag} {value:?}: use letters, digits, - and _ (at most 255)"
        )))
    }
}

fn validate_endpoint_url(url: &str) -> Result<(), UsageError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !url.chars().any(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(UsageError::new(format!(
            "invalid --endpoint-url {url:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        ))),
    }
}

fn validate_adapter(adapter: &str) -> Result<(), UsageError> {
    if adapter.ends_with(".wasm") {
        return Ok(());
    }
    if adapter
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "invalid --adapter {adapter:?}: give an adapter name (see `ecs-exec adapters list`) or a FILE.wasm"
        )))
    }
}

/// Installs the stderr trace for `-v`/`CONNECTION_DEBUG=1` (nothing at verbosity 0).
pub(crate) fn init_tracing(verbosity: u8) {
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let Some(filter) = log_filter(verbosity) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_ansi(false)
        .finish()
        .with(filter)
        .try_init();
}

/// What `-v` (1) and `-vv` (2) log: warnings from everything, and more of ours (the ECS and KMS
/// calls are ours too: `ecs_exec::aws_json`, which never logs a body). AWS crates are capped at
/// `debug`: their `trace` level logs whole requests and responses, which carry secrets.
fn log_filter(verbosity: u8) -> Option<tracing_subscriber::filter::Targets> {
    use tracing::level_filters::LevelFilter;
    let filter = tracing_subscriber::filter::Targets::new().with_default(LevelFilter::WARN);
    match verbosity {
        0 => None,
        1 => Some(filter.with_target("ecs_exec", LevelFilter::DEBUG)),
        _ => Some(
            filter
                .with_target("ecs_exec", LevelFilter::TRACE)
                .with_targets(
                    ["aws_config", "aws_smithy_runtime", "aws_smithy_http_client"]
                        .map(|target| (target, LevelFilter::DEBUG)),
                ),
        ),
    }
}

/// Runs the exec grammar; `argv` is the whole command line.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let words = argv.get(1..).unwrap_or_default();
    let step = parse(words).and_then(|parsed| match parsed {
        Parsed::Print(text) => Ok(Step::Print(text)),
        Parsed::Args(args) => ExecEnv::from_process()
            .and_then(|env| validate(*args, &env))
            .map(|request| Step::Run(Box::new(request))),
    });
    let request = match step {
        Ok(Step::Run(request)) => *request,
        Ok(Step::Print(text)) => {
            let newline = if text.ends_with('\n') { "" } else { "\n" };
            return print_stdout(&format!("{text}{newline}"))
                .map_or_else(|code| code, |()| ExitCode::SUCCESS);
        }
        Err(usage) => {
            report_error(&format!("{usage}; see 'ecs-exec --help'"));
            return Exit::Usage.to_exit_code();
        }
    };
    init_tracing(request.verbosity);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report_error(&format!("cannot start the async runtime: {err}"));
            return Exit::Software.to_exit_code();
        }
    };
    if request.explain {
        let outcome = runtime.block_on(explain(request));
        runtime.shutdown_background();
        return match outcome {
            Ok(lines) => print_stdout(&lines).map_or_else(|code| code, |()| ExitCode::SUCCESS),
            Err(err) => {
                report_error(&one_line(&chain_text(&err)));
                exit_for(&err).to_exit_code()
            }
        };
    }
    let outcome = runtime.block_on(plan_resolve_and_run(request));
    // A read of stdin may still be blocked in a worker thread (a terminal nobody types into);
    // waiting for it would hang the exit, and there is nothing left for it to do.
    runtime.shutdown_background();
    match outcome {
        // A status outside 0..=255 cannot come from a process; never turn it into success.
        Ok(status) => u8::try_from(status).map_or_else(
            |_| {
                report_error(&format!("the remote exit status {status} is out of range"));
                Exit::Software.to_exit_code()
            },
            ExitCode::from,
        ),
        Err(err) => {
            report_error(&one_line(&chain_text(&err)));
            exit_for(&err).to_exit_code()
        }
    }
}

/// What `main` does after parsing.
enum Step {
    Run(Box<ExecRequest>),
    Print(String),
}

/// `--explain`: the adapter that would serve the run and its plan, as lines for stdout. Plans
/// exactly as a run does (reading stdin, since the plan depends on the input) and stops there,
/// before any AWS call.
async fn explain(request: ExecRequest) -> anyhow::Result<String> {
    let prepared = run::prepare(&request.run).await?;
    if let Some(warning) = prepared.takeover_warning() {
        report_warning(warning);
    }
    let mut text = prepared.explain().join("\n");
    text.push('\n');
    Ok(text)
}

/// Plan first (local: adapters and stdin, no network), then load the AWS config, resolve the
/// target and run, so a bad adapter or a refused plan costs no AWS call.
async fn plan_resolve_and_run(request: ExecRequest) -> anyhow::Result<i32> {
    let selector = match &request.targets {
        Targets::One(selector) => selector,
        Targets::Each { tasks, options } => {
            return run_on_each_task(&request, tasks, *options).await;
        }
    };
    let prepared = run::prepare(&request.run).await?;
    if let Some(warning) = prepared.takeover_warning() {
        report_warning(warning);
    }
    let target = run::TargetRequest {
        aws: &request.aws,
        cluster: &request.cluster,
        selector,
        container: request.container.as_deref(),
    };
    run::resolve_and_execute(target, prepared, &mut ProcessOutput::default()).await
}

/// `--all-tasks` / `--tasks`: the input is read once, the adapter plans once locally (so a bad
/// adapter still costs no AWS call), then each task runs; the summary goes to stderr.
async fn run_on_each_task(
    request: &ExecRequest,
    tasks: &FanoutTasks,
    options: FanoutOptions,
) -> anyhow::Result<i32> {
    let input = SpooledInput::from_stdin().await?;
    if let Some(warning) = input.check_plan(&request.run).await? {
        report_warning(&warning);
    }
    let config = ecs::load_sdk_config(&request.aws).await;
    let api = EcsApi::new(&config)?;
    let targets = api
        .resolve_targets(&request.cluster, tasks, request.container.as_deref())
        .await?;
    tracing::debug!(tasks = targets.len(), "fan-out targets resolved");
    let ssm = SsmApi::new(&config);
    let kms = KmsApi::new(&config, &request.aws);
    let services = run::Services {
        ecs: &api,
        ssm: ssm.as_ref(),
        kms: Some(&kms),
    };
    let describe = |error: &anyhow::Error| (one_line(&chain_text(error)), exit_for(error));
    let reports =
        fanout::run_on_tasks(&services, &request.run, &input, targets, options, &describe).await;
    let _ = writeln!(
        std::io::stderr().lock(),
        "ecs-exec: {}",
        fanout::summary(&reports)
    );
    Ok(i32::from(fanout::overall_status(&reports)))
}

/// Collapses whitespace runs (line breaks included) so an error prints as one line.
/// The error and its causes, `outer: inner`, leaving out a cause whose text the message already
/// carries (our errors usually embed their source, so anyhow's `{:#}` would say it twice).
pub(crate) fn chain_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The exit code for a failure: the first typed error in the chain decides, else 70.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|cause| {
            if let Some(ecs) = cause.downcast_ref::<EcsError>() {
                Some(ecs.exit())
            } else if let Some(run) = cause.downcast_ref::<run::RunError>() {
                Some(run.exit())
            } else {
                cause.downcast_ref::<UsageError>().map(|_| Exit::Usage)
            }
        })
        .unwrap_or(Exit::Software)
}

#[cfg(test)]
mod tests {

    #[test]
    fn log_filter_levels_per_verbosity_and_never_aws_trace() {
        use tracing::Level;
        assert!(log_filter(0).is_none());
        let v = log_filter(1).unwrap();
        assert!(v.would_enable("ecs_exec::run", &Level::DEBUG));
        assert!(!v.would_enable("ecs_exec::run", &Level::TRACE));
        assert!(!v.would_enable("aws_config", &Level::INFO));
        assert!(v.would_enable("hyper", &Level::WARN));
        let vv = log_filter(2).unwrap();
        assert!(vv.would_enable("ecs_exec::channel", &Level::TRACE));
        assert!(vv.would_enable("ecs_exec::aws_json", &Level::DEBUG));
        for aws in ["aws_config::sso", "aws_smithy_runtime"] {
            assert!(vv.would_enable(aws, &Level::DEBUG), "{aws}");
            assert!(
                !vv.would_enable(aws, &Level::TRACE),
                "{aws}: trace carries the token"
            );
        }
        assert!(!vv.would_enable("hyper", &Level::INFO));
    }

    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn args(words: &[&str]) -> ExecArgs {
        match parse(&os(words)) {
            Ok(Parsed::Args(args)) => *args,
            Ok(Parsed::Print(text)) => panic!("printed instead of parsing: {text}"),
            Err(err) => panic!("usage error: {err}"),
        }
    }

    #[test]
    fn an_error_that_embeds_its_source_is_said_once() {
        use crate::channel::ChannelError;
        let err = anyhow::Error::from(run::RunError::Channel(ChannelError::RetransmitExhausted {
            sequence_number: 7,
            attempts: 60,
        }));
        assert_eq!(
            chain_text(&err),
            "data channel: message 7 was not acknowledged after 60 retransmissions"
        );
        let wrapped = anyhow::Error::from(std::io::Error::other("disk full")).context("saving");
        assert_eq!(chain_text(&wrapped), "saving: disk full");
    }

    fn usage(words: &[&str]) -> String {
        match parse(&os(words)) {
            Err(err) => err.to_string(),
            Ok(other) => panic!("expected a usage error, got {other:?}"),
        }
    }

    fn request(words: &[&str]) -> Result<ExecRequest, UsageError> {
        validate(args(words), &ExecEnv::default())
    }

    #[test]
    fn cluster_both_forms_and_last_one_wins() {
        assert_eq!(args(&["--cluster", "a"]).cluster.as_deref(), Some("a"));
        assert_eq!(args(&["--cluster=a"]).cluster.as_deref(), Some("a"));
        assert_eq!(
            args(&["--cluster=a", "--cluster", "b"]).cluster.as_deref(),
            Some("b")
        );
    }

    #[test]
    fn service_name_both_forms() {
        assert_eq!(
            args(&["--service-name", "web"]).service_name.as_deref(),
            Some("web")
        );
        assert_eq!(
            args(&["--service-name=web"]).service_name.as_deref(),
            Some("web")
        );
    }

    #[test]
    fn task_wins_over_service() {
        let req = request(&["--cluster=c", "--service-name=s", "--task", "abc"]).unwrap();
        assert_eq!(
            req.targets,
            Targets::One(TaskSelector::Task("abc".to_owned()))
        );
        let req = request(&["--cluster=c", "--service-name=s"]).unwrap();
        assert_eq!(
            req.targets,
            Targets::One(TaskSelector::Service("s".to_owned()))
        );
    }

    #[test]
    fn task_accepts_an_arn() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef";
        let req = request(&["--cluster=c", &format!("--task={arn}")]).unwrap();
        assert_eq!(
            req.targets,
            Targets::One(TaskSelector::Task(arn.to_owned()))
        );
        assert!(request(&["--cluster=c", "--task=arn:aws:ecs:bad arn/x"]).is_err());
    }

    #[test]
    fn container_flag_and_env_fallback() {
        assert_eq!(
            request(&["--cluster=c", "--task=t", "--container=app"])
                .unwrap()
                .container
                .as_deref(),
            Some("app")
        );
        let env = ExecEnv {
            container: Some("sidecar".to_owned()),
            ..ExecEnv::default()
        };
        let req = validate(args(&["--cluster=c", "--task=t"]), &env).unwrap();
        assert_eq!(req.container.as_deref(), Some("sidecar"));
        let req = validate(args(&["--cluster=c", "--task=t", "--container=app"]), &env).unwrap();
        assert_eq!(
            req.container.as_deref(),
            Some("app"),
            "the flag wins over the env"
        );
        assert!(request(&["--cluster=c", "--task=t", "--container=a b"]).is_err());
    }

    #[test]
    fn pipe_takes_words_with_spaces_and_dashes() {
        assert_eq!(
            args(&["--pipe", "rails runner -"]).pipe.as_deref(),
            Some("rails runner -")
        );
        assert_eq!(args(&["--pipe=python3"]).pipe.as_deref(), Some("python3"));
        assert_eq!(args(&["--pipe", "-x"]).pipe.as_deref(), Some("-x"));
    }

    #[test]
    fn interactive_is_a_switch() {
        assert!(args(&["--interactive"]).interactive);
        assert!(!args(&[]).interactive);
        assert!(
            args(&["--interactive", "--interactive"]).interactive,
            "repeating is allowed"
        );
    }

    #[test]
    fn inlining_input_is_an_opt_in_switch_hoop_users_can_append() {
        assert!(
            !request(&["--cluster=c", "--task=t"])
                .unwrap()
                .run
                .inline_input
        );
        assert!(
            request(&["--cluster=c", "--task=t", "--inline-input"])
                .unwrap()
                .run
                .inline_input
        );
        let (host, adapter) = split_words(&os(&["--cluster=c", "--", "--inline-input", "x"]));
        assert_eq!(host, os(&["--cluster=c", "--inline-input"]));
        assert_eq!(adapter, os(&["x"]));
    }

    #[test]
    fn region_profile_endpoint() {
        let req = request(&[
            "--cluster=c",
            "--task=t",
            "--region=eu-west-1",
            "--profile",
            "prod",
            "--endpoint-url=http://127.0.0.1:4566",
        ])
        .unwrap();
        assert_eq!(req.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(req.aws.profile.as_deref(), Some("prod"));
        assert_eq!(
            req.aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:4566")
        );
        assert!(request(&["--cluster=c", "--task=t", "--region=EU WEST"]).is_err());
        assert!(request(&["--cluster=c", "--task=t", "--endpoint-url=localhost:4566"]).is_err());
        assert!(request(&["--cluster=c", "--task=t", "--endpoint-url=http://"]).is_err());
    }

    #[test]
    fn adapter_name_or_wasm_file_and_dir_with_env_fallback() {
        let req = request(&["--cluster=c", "--task=t", "--adapter=rails"]).unwrap();
        assert_eq!(req.run.adapter.as_deref(), Some("rails"));
        let req = request(&["--cluster=c", "--task=t", "--adapter", "./my adapter.wasm"]).unwrap();
        assert_eq!(req.run.adapter.as_deref(), Some("./my adapter.wasm"));
        assert!(request(&["--cluster=c", "--task=t", "--adapter=../x"]).is_err());
        let env = ExecEnv {
            adapter_dir: Some(PathBuf::from("/env/dir")),
            ..ExecEnv::default()
        };
        let req = validate(args(&["--cluster=c", "--task=t"]), &env).unwrap();
        assert_eq!(req.run.adapter_dir, Some(PathBuf::from("/env/dir")));
        let req = validate(
            args(&["--cluster=c", "--task=t", "--adapter-dir=/flag"]),
            &env,
        )
        .unwrap();
        assert_eq!(req.run.adapter_dir, Some(PathBuf::from("/flag")));
    }

    #[test]
    fn verbose_counts_and_connection_debug() {
        assert_eq!(request(&["--cluster=c", "--task=t"]).unwrap().verbosity, 0);
        assert_eq!(
            request(&["--cluster=c", "--task=t", "-v"])
                .unwrap()
                .verbosity,
            1
        );
        assert_eq!(
            request(&["--cluster=c", "--task=t", "-vv"])
                .unwrap()
                .verbosity,
            2
        );
        let env = ExecEnv {
            connection_debug: true,
            ..ExecEnv::default()
        };
        assert_eq!(
            validate(args(&["--cluster=c", "--task=t"]), &env)
                .unwrap()
                .verbosity,
            1
        );
    }

    #[test]
    fn cluster_and_service_fall_back_to_env() {
        let env = ExecEnv {
            cluster_name: Some("envc".to_owned()),
            service_name: Some("envs".to_owned()),
            ..ExecEnv::default()
        };
        let req = validate(args(&[]), &env).unwrap();
        assert_eq!(req.cluster, "envc");
        assert_eq!(
            req.targets,
            Targets::One(TaskSelector::Service("envs".to_owned()))
        );
        let req = validate(args(&["--cluster=flagc"]), &env).unwrap();
        assert_eq!(req.cluster, "flagc");
    }

    #[test]
    fn empty_values_count_as_not_given() {
        let env = ExecEnv {
            cluster_name: Some("envc".to_owned()),
            ..ExecEnv::default()
        };
        let req = validate(
            args(&["--cluster=", "--service-name=s", "--container=", "--pipe="]),
            &env,
        )
        .unwrap();
        assert_eq!(req.cluster, "envc");
        assert_eq!(req.container, None);
        assert_eq!(req.run.pipe, None);
        let req = validate(args(&["--cluster=c", "--service-name=s", "--task="]), &env).unwrap();
        assert_eq!(
            req.targets,
            Targets::One(TaskSelector::Service("s".to_owned()))
        );
    }

    #[test]
    fn missing_cluster_or_target_is_a_usage_error() {
        let err = request(&["--service-name=s"]).unwrap_err().to_string();
        assert!(
            err.contains("--cluster") && err.contains("CLUSTER_NAME"),
            "{err}"
        );
        let err = request(&["--cluster=c"]).unwrap_err().to_string();
        assert!(
            err.contains("--service-name") && err.contains("--task"),
            "{err}"
        );
        assert!(request(&["--cluster=a/b", "--task=t"]).is_err());
    }

    #[test]
    fn unknown_flags_and_missing_values_are_one_line() {
        for words in [&["--clustr=c"][..], &["--cluster"], &["--nope"], &["-x"]] {
            let err = usage(words);
            assert!(!err.contains('\n'), "{err:?}");
            assert!(!err.starts_with("error:"), "{err:?}");
        }
        assert!(
            usage(&["--clustr=c"]).contains("--cluster"),
            "suggests the right flag"
        );
    }

    #[test]
    fn help_and_version_are_printed() {
        match parse(&os(&["--help"])) {
            Ok(Parsed::Print(text)) => {
                assert!(text.contains("--service-name"));
                assert!(text.contains("Exit codes"));
                assert!(text.contains("CONNECTION_DEBUG"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&os(&["--version"])), Ok(Parsed::Print(_))));
    }

    #[test]
    fn hoop_appended_words_parse() {
        let req = request(&[
            "--interactive",
            "--cluster=c",
            "--service-name=s",
            "--pipe",
            "/bin/bash",
        ])
        .unwrap();
        assert!(req.run.interactive);
        assert_eq!(req.run.pipe.as_deref(), Some("/bin/bash"));
        assert!(req.run.adapter_args.is_empty());
        let req = request(&["--cluster=c", "--service-name=s", "--task", "mytaskid"]).unwrap();
        assert_eq!(
            req.targets,
            Targets::One(TaskSelector::Task("mytaskid".to_owned()))
        );
    }

    #[test]
    fn words_after_double_dash_split_between_host_and_adapter() {
        let (host, adapter) = split_words(&os(&[
            "--cluster=c",
            "--",
            "--pipe",
            "rails runner",
            "--task=t",
            "script.rb",
            "--unknown",
            "--interactive",
            "--",
            "--pipe",
            "x",
        ]));
        assert_eq!(
            host,
            os(&[
                "--cluster=c",
                "--pipe",
                "rails runner",
                "--task=t",
                "--interactive"
            ])
        );
        assert_eq!(adapter, os(&["script.rb", "--unknown", "--pipe", "x"]));
    }

    #[test]
    fn double_dash_is_never_a_flag_value() {
        let (host, adapter) = split_words(&os(&["--pipe", "--", "x", "--task", "--", "y"]));
        assert_eq!(host, os(&["--pipe", "--task"]));
        assert_eq!(adapter, os(&["x", "y"]));
        assert!(usage(&["--cluster=c", "--pipe", "--", "x"]).contains("--pipe"));
        let (host, _) = split_words(&os(&["--pipe", "-x", "--", "--task", "-y"]));
        assert_eq!(host, os(&["--pipe", "-x", "--task", "-y"]));
    }

    #[test]
    fn positional_words_go_to_the_adapter() {
        let req = request(&["--cluster=c", "--task=t", "one", "--", "two", "-v"]).unwrap();
        assert_eq!(req.run.adapter_args, ["one", "two", "-v"]);
        assert_eq!(
            req.verbosity, 0,
            "a short flag after -- belongs to the adapter"
        );
    }

    #[test]
    fn exit_for_maps_typed_errors_in_the_chain() {
        let err = anyhow::Error::new(EcsError::NoRegion).context("resolving");
        assert_eq!(exit_for(&err), Exit::Config);
        assert_eq!(exit_for(&anyhow::anyhow!("something else")), Exit::Software);
    }

    fn word() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("--".to_owned()),
            Just("--cluster".to_owned()),
            Just("--pipe".to_owned()),
            Just("--interactive".to_owned()),
            Just("--task=".to_owned()),
            Just("-v".to_owned()),
            Just("-".to_owned()),
            "--[a-z-]{0,12}(=[ -~]{0,8})?",
            "[ -~]{0,12}",
            any::<String>(),
        ]
    }

    proptest::proptest! {
        #[test]
        fn parse_and_validate_never_panic(words in proptest::collection::vec(word(), 0..12)) {
            if let Ok(Parsed::Args(args)) = parse(&os(&words.iter().map(String::as_str).collect::<Vec<_>>())) {
                let _ = validate(*args, &ExecEnv::default());
            }
        }

        #[test]
        fn everything_after_a_second_double_dash_reaches_the_adapter(
            head in proptest::collection::vec(word(), 0..6),
            tail in proptest::collection::vec(word(), 0..6),
        ) {
            let mut words = vec!["--cluster=c".to_owned(), "--task=t".to_owned(), "--".to_owned()];
            words.extend(head.into_iter().filter(|w| w != "--"));
            words.push("--".to_owned());
            words.extend(tail.iter().cloned());
            let (_, adapter) = split_words(&os(&words.iter().map(String::as_str).collect::<Vec<_>>()));
            let adapter: Vec<String> = adapter.into_iter().map(|w| w.to_string_lossy().into_owned()).collect();
            proptest::prop_assert!(adapter.ends_with(&tail));
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
        // Every value flag split_words knows is a clap flag that takes a value, and vice versa.
        let cmd = command();
        for name in VALUE_FLAGS {
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(name));
            assert!(arg.is_some_and(|a| a.get_action().takes_values()), "{name}");
        }
        let value_longs = cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some() && a.get_action().takes_values())
            .count();
        assert_eq!(value_longs, VALUE_FLAGS.len());
    }
}
