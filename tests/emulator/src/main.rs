//! The `ecs-exec-emulator` binary: serve the emulator on a loopback port until SIGINT or
//! SIGTERM. Prints exactly one line on stdout, `listening on http://ADDR`, once it accepts
//! connections; everything else goes to stderr, starting with `kms listening on http://ADDR`
//! (the KMS API's own port), then the request log and errors. Never prints a secret.
//!
//! The README's first run (`ecs-exec` in one process with a fresh emulator) is the
//! `ecs-exec-demo` crate, so that this crate does not depend on the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ecs_exec_emulator::{Config, Emulator};

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
