//! The command line: parse (pure), validate (pure), then hand over to the layer that acts.
//!
//! Two grammars share one binary. `ecs-exec adapters …` manages adapters and never touches AWS
//! ([`adapters`]); everything else is the `ecs-exec.sh`-compatible exec grammar ([`exec`]), whose
//! flags Hoop appends to the connection command. This module only dispatches between them and
//! turns a panic into the documented internal-error exit code (70, see [`crate::exit`]); it must
//! not talk to AWS or the network itself.

pub mod adapters;
pub mod exec;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::exit::Exit;

/// Entry point of the binary: dispatch on the first word, return the process exit code.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // The panic hook (and the terminal's, which restores the tty first) has already printed the
    // panic; what is left is to exit with the documented code instead of Rust's 101.
    std::panic::catch_unwind(|| dispatch(argv)).unwrap_or_else(|_| {
        exec::report_error("internal error (a bug in ecs-exec; please report it)");
        Exit::Software.to_exit_code()
    })
}

fn dispatch(argv: Vec<OsString>) -> ExitCode {
    if argv.get(1).is_some_and(|word| word == "doctor") {
        crate::doctor::main(argv)
    } else if argv.get(1).is_some_and(|word| word == "adapters") {
        adapters::main(argv)
    } else {
        exec::main(argv)
    }
}
