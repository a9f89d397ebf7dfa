//! The `ecs-exec-emulator` binary: serve the emulator on a loopback port until SIGINT or
//! SIGTERM. Prints exactly one line on stdout, `listening on http://ADDR`, once it accepts
//! connections; everything else goes to stderr, starting with `kms listening on http://ADDR`
//! (the KMS API's own port), then the request log and errors. Never prints a secret.
//!
//! `ecs-exec-emulator exec ARGS…` is the first-run path instead: it starts the default world on
//! a free loopback port and runs `ecs-exec ARGS…` in this process against it (the real CLI, API
//! client, data channel and adapters), then stops. Its stdout is the remote output alone.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ecs_exec_emulator::{
    Config, DEFAULT_ACCESS_KEY_ID, DEFAULT_REGION, DEFAULT_SECRET_ACCESS_KEY, Emulator,
    EmulatorHandle,
};

/// A local ECS API and SSM data channel that run real commands under a PTY.
#[derive(Debug, Parser)]
#[command(name = "ecs-exec-emulator", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the KMS API; port 0 picks a free port (default: a free port on the
    /// `--listen` address).
    #[arg(long)]
    kms_listen: Option<SocketAddr>,
    /// TOML file describing clusters, credentials, agent behaviour and faults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Behave like the real agent's timing (1 s before output, 1 KiB reads).
    #[arg(long)]
    realistic: bool,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|word| word == "exec") {
        return exec_against_default_world(argv.into_iter().skip(2).collect());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(log_filter())
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ecs-exec-emulator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `EMULATOR_LOG` (default `info`). The websocket library logs whole frames at trace level,
/// which would include channel tokens, so it stays at `info` unless named explicitly.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let wanted = std::env::var("EMULATOR_LOG").unwrap_or_else(|_| "info".to_string());
    let mut directives = wanted.clone();
    if !wanted.contains("tungstenite") {
        directives.push_str(",tungstenite=info,tokio_tungstenite=info");
    }
    tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.listen = args.listen;
    if args.kms_listen.is_some() {
        config.kms.listen = args.kms_listen;
    }
    if args.realistic {
        config.agent.realistic = true;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers first: a signal sent right after the ready line must stop us cleanly.
        let stop = stop_signals()?;
        let handle = Emulator::start(config).await?;
        if !handle.local_addr().ip().is_loopback() {
            tracing::warn!(addr = %handle.local_addr(), "listening beyond loopback: anyone who can reach this address and knows the credentials can run commands here");
        }
        tracing::info!(access_key_id = handle.access_key_id(), region = handle.region(), "ready");
        // Before the stdout line, so a caller that waits for that line can read this one too.
        eprintln!("kms listening on {}", handle.kms_endpoint());
        println!("listening on {}", handle.endpoint());
        use std::io::Write;
        std::io::stdout().flush().context("cannot write to stdout")?;
        stop.await;
        tracing::info!("stopping");
        handle.shutdown();
        drop(handle);
        anyhow::Ok(())
    })?;
    // Dropping the runtime drops every session, which kills every command's process group.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the returned future ends on either.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Runs `ecs-exec ARGS…` in-process against a fresh default world on a free loopback port.
fn exec_against_default_world(ecs_exec_args: Vec<OsString>) -> ExitCode {
    // The emulator's credentials, as any AWS client finds them. Set before the emulator's and
    // ecs-exec's threads exist: nothing else reads or writes the environment concurrently.
    let aws_environment = [
        ("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_ACCESS_KEY),
        ("AWS_REGION", DEFAULT_REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    for (name, value) in aws_environment {
        // SAFETY: single-threaded at this point (see above).
        unsafe { std::env::set_var(name, value) };
    }
    // SAFETY: as above; a session token from the caller's environment would not match.
    unsafe { std::env::remove_var("AWS_SESSION_TOKEN") };
    // The KMS API's port must be in the environment before any thread starts, so pick a free
    // one now (the `secure` cluster's sessions need it).
    let mut config = Config::default();
    if let Ok(kms_addr) =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|probe| probe.local_addr())
    {
        config.kms.listen = Some(kms_addr);
        // SAFETY: still single-threaded.
        unsafe { std::env::set_var("AWS_ENDPOINT_URL_KMS", format!("http://{kms_addr}")) };
    }
    let emulator = match EmulatorHandle::spawn_in_thread(config) {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("ecs-exec-emulator: cannot start the emulator: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut argv = vec![
        OsString::from("ecs-exec"),
        OsString::from(format!("--endpoint-url={}", emulator.endpoint())),
    ];
    argv.extend(ecs_exec_args);
    let code = ecs_exec::cli::exec::main(argv);
    drop(emulator);
    code
}
