//! `ecs-exec adapters list|show|check`: inspect the adapters without touching AWS.

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs `ecs-exec adapters …`; `argv` is the whole command line, `argv[1] == "adapters"`.
pub fn main(_argv: Vec<OsString>) -> ExitCode {
    eprintln!("ecs-exec: error: `adapters` is not built yet");
    ExitCode::from(70)
}
