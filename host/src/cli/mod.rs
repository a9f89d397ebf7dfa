//! The command line: parse (pure), validate (pure), then hand over to the layer that acts.
//!
//! Two grammars share one binary. `ecs-exec adapters …` manages adapters and never touches AWS
//! ([`adapters`]); everything else is the `ecs-exec.sh`-compatible exec grammar ([`exec`]), whose
//! flags Hoop appends to the connection command. This module only dispatches between them and owns
//! the process exit codes; it must not talk to AWS or the network itself.

pub mod adapters;
pub mod exec;

use std::ffi::OsString;
use std::process::ExitCode;

/// Entry point of the binary: dispatch on the first word, return the process exit code.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|word| word == "adapters") {
        adapters::main(argv)
    } else {
        exec::main(argv)
    }
}
