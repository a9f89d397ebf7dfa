//! The command line: parse (pure), validate (pure), then hand over to the layer that acts.
//!
//! Two grammars share one binary. `ecs-exec adapters …` manages adapters and never touches AWS
//! ([`adapters`]); everything else is the `ecs-exec.sh`-compatible exec grammar ([`exec`]), whose
//! flags Hoop appends to the connection command. This module dispatches between them, holds what
//! both share (the one-line error and warning format, `-v` tracing, stdout that ends quietly when
//! its reader goes away) and turns a panic into the documented internal-error exit code (70, see
//! [`crate::exit`]); it must not talk to AWS or the network itself.

pub mod adapters;
pub mod completions;
pub mod exec;
pub mod target_flags;

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;

use crate::exit::Exit;

/// Entry point of the binary: dispatch on the first word, return the process exit code.
pub fn main() -> ExitCode {
    tune_allocator();
    let argv: Vec<OsString> = std::env::args_os().collect();
    // The panic hook (and the terminal's, which restores the tty first) has already printed the
    // panic; what is left is to exit with the documented code instead of Rust's 101.
    std::panic::catch_unwind(|| dispatch(argv)).unwrap_or_else(|_| {
        report_error("internal error (a bug in ecs-exec; please report it)");
        Exit::Software.to_exit_code()
    })
}

/// Keeps memory flat over long transfers, where glibc's defaults let the peak RSS grow with the
/// size (measured, release build: 1 GiB out of a container peaked at 25.5 MiB against 16.2 MiB
/// for 8 MiB; with these settings 17.5 MiB). Two settings matter:
/// - the mmap threshold: glibc raises it each time a large block is freed, after which large
///   buffers (the websocket's, the input chunks) come from the heap and fragment it; a fixed
///   threshold keeps them mapped, and given back when freed;
/// - the arenas: glibc gives each allocating thread its own, up to eight per core, and keeps
///   what each grew to; output and input are allocated on one runtime thread and freed on
///   another. Two are plenty for this program's few threads.
///
/// Called before any thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn dispatch(argv: Vec<OsString>) -> ExitCode {
    if argv.get(1).is_some_and(|word| word == "doctor") {
        crate::doctor::main(argv)
    } else if argv.get(1).is_some_and(|word| word == "cp") {
        crate::cp::main(argv)
    } else if let Some((globals, rest)) = split_global_flags(&argv) {
        adapters::main(globals, rest)
    } else if argv.get(1).is_some_and(completions::handles) {
        completions::main(argv)
    } else {
        exec::main(argv)
    }
}

/// Flags both grammars take that may come before the `adapters` subcommand (with their values).
const GLOBAL_VALUE_FLAGS: [&str; 1] = ["--adapter-dir"];
const GLOBAL_SWITCHES: [&str; 1] = ["--verbose"];

/// `Some((global flags, words after `adapters`))` when the first word that is not a global flag
/// is `adapters`, so `ecs-exec --adapter-dir D adapters list` works like
/// `ecs-exec adapters list --adapter-dir D`; `None` for the exec grammar.
fn split_global_flags(argv: &[OsString]) -> Option<(Vec<OsString>, Vec<OsString>)> {
    let mut globals = Vec::new();
    let mut words = argv.get(1..)?.iter();
    while let Some(word) = words.next() {
        let text = word.to_str()?;
        if text == "adapters" {
            return Some((globals, words.cloned().collect()));
        }
        let is_short_verbose =
            text.len() > 1 && text.starts_with('-') && text[1..].bytes().all(|byte| byte == b'v');
        if GLOBAL_SWITCHES.contains(&text) || is_short_verbose {
            globals.push(word.clone());
        } else if GLOBAL_VALUE_FLAGS.contains(&text) {
            globals.push(word.clone());
            globals.push(words.next()?.clone());
        } else if GLOBAL_VALUE_FLAGS
            .iter()
            .any(|flag| text.starts_with(&format!("{flag}=")))
        {
            globals.push(word.clone());
        } else {
            return None;
        }
    }
    None
}

/// Prints `ecs-exec: error: <message>` as one terminal-safe line on stderr; a closed stderr is
/// ignored (the `eprintln` macro would panic).
pub fn report_error(message: &str) {
    report("error", message);
}

/// Prints `ecs-exec: warning: <message>` the same way.
pub fn report_warning(message: &str) {
    report("warning", message);
}

fn report(level: &str, message: &str) {
    let line = crate::adapter::terminal_safe(message);
    let _ = writeln!(std::io::stderr().lock(), "ecs-exec: {level}: {line}");
}

/// The exit status of a process killed by SIGPIPE, used when stdout's reader went away.
pub const CLOSED_STDOUT_STATUS: u8 = 128 + libc::SIGPIPE as u8;

/// Writes `text` to stdout and flushes it. A closed stdout (`| head -1`) is `Err` with the
/// quiet exit status [`CLOSED_STDOUT_STATUS`]; another write error is reported as an error.
pub fn print_stdout(text: &str) -> Result<(), ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(ExitCode::from(CLOSED_STDOUT_STATUS))
        }
        Err(error) => {
            report_error(&format!("writing standard output: {error}"));
            Err(Exit::Software.to_exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn global_flags_may_come_before_the_subcommand() {
        let (globals, rest) = split_global_flags(&os(&[
            "ecs-exec",
            "--adapter-dir",
            "d",
            "-v",
            "adapters",
            "list",
        ]))
        .unwrap();
        assert_eq!(globals, os(&["--adapter-dir", "d", "-v"]));
        assert_eq!(rest, os(&["list"]));
        let (globals, _) =
            split_global_flags(&os(&["ecs-exec", "--adapter-dir=d", "adapters"])).unwrap();
        assert_eq!(globals, os(&["--adapter-dir=d"]));
    }

    #[test]
    fn anything_else_is_the_exec_grammar() {
        for argv in [
            &["ecs-exec", "--cluster", "adapters"][..],
            &["ecs-exec", "--adapter-dir"],
            &["ecs-exec", "--pipe", "x", "adapters"],
            &["ecs-exec"],
        ] {
            assert_eq!(split_global_flags(&os(argv)), None, "{argv:?}");
        }
    }
}
