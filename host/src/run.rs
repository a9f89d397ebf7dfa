//! Wires one run together: adapter plan, ExecuteCommand, data channel, terminal, exit status.
//!
//! The CLI resolves the target and hands over a [`RunRequest`]; [`run`] returns the remote exit
//! status, or an error the CLI prints as one line and maps to an exit code.
//! PLACEHOLDER: only the boundary (the request type and the signature of [`run`]) is defined
//! here; the lead replaces the body of [`run`] once the adapter and channel branches land.

use std::path::PathBuf;

use crate::ecs::{EcsApi, Target};

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

/// Runs the command and returns the remote exit status.
pub async fn run(api: &EcsApi, req: RunRequest) -> anyhow::Result<i32> {
    // The lead replaces this body when the channel and adapter branches are merged: plan with
    // the adapter, `api.execute_command(&req.target, &plan.command, …)`, drive the channel.
    let _ = (api, &req);
    anyhow::bail!(
        "the data channel is not wired yet (target resolved: task {} container {})",
        req.target.task_id,
        req.target.container_name
    )
}
