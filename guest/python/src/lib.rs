//! The built-in `python` adapter: `python`, `python3`, `python3 -`, `python3 script.py`, ….
//!
//! It inserts `-u` after the interpreter so output is unbuffered (the host sees it as it comes),
//! and in a one-off run without a script, `-c` or `-m` it appends `-` so the input is the program.
//! Interactive runs get the plain REPL. The `sh -c` bootstrap (in `ecs-exec-guest-kit`) carries the
//! input byte-exact and reports the exit status. Pure computation: it reads nothing from its sandbox.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use ecs_exec_guest_kit as kit;
use exports::hoop::ecs_exec::adapter::{Alternative, Guest, Info, Invocation, Plan, StdinMode};

struct Python;

/// Interpreter options that take the next word as their value.
const OPTIONS_WITH_VALUE: [&str; 3] = ["-W", "-X", "-Q"];

impl Guest for Python {
    fn describe() -> Info {
        Info {
            name: "python".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            programs: ["python", "python3", "python2"].map(String::from).to_vec(),
            summary: "python with unbuffered output; stdin is the program (python3 -u -)"
                .to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let pipe = inv.pipe.as_deref().unwrap_or("python3");
        let mut argv = kit::split_words(pipe)?;
        let interpreter_at = kit::program_index(&argv);
        if !argv
            .get(interpreter_at)
            .is_some_and(|word| kit::basename(word).starts_with("python"))
        {
            return Err(format!("the pipe `{pipe}` does not run python"));
        }
        let mut has_program = false;
        let mut index = interpreter_at + 1;
        while let Some(word) = argv.get(index) {
            if word == "-" || word == "-c" || word == "-m" || !word.starts_with('-') {
                has_program = true;
                break;
            }
            index += if OPTIONS_WITH_VALUE.contains(&word.as_str()) {
                2
            } else {
                1
            };
        }
        let options = argv
            .get(interpreter_at + 1..index.min(argv.len()))
            .unwrap_or(&[]);
        if !options.iter().any(|word| word == "-u") {
            argv.insert(interpreter_at + 1, "-u".to_owned());
        }
        if !has_program && !inv.interactive {
            argv.push("-".to_owned());
        }
        argv.extend(inv.args);
        kit::wrap_plan!(argv, inv, nonce)
    }
}

export!(Python);
