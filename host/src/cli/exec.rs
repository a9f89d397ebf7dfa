//! The `ecs-exec.sh`-compatible grammar: `--cluster`, `--service-name`, `--task`, `--pipe`, …

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the exec grammar; `argv` is the whole command line.
pub fn main(_argv: Vec<OsString>) -> ExitCode {
    eprintln!("ecs-exec: error: running commands is not built yet");
    ExitCode::from(70)
}
