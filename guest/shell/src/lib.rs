//! The built-in `shell` adapter: the default when there is no `--pipe`, and for sh/bash pipes.
//!
//! Without a pipe the input is a script for `/bin/bash` (`bash -s -- ARGS`); with a pipe such as
//! `sh`, `/bin/bash -x` or any program no other adapter claims, the pipe's words are the program
//! and the input is its stdin. The `sh -c` bootstrap (in `ecs-exec-guest-kit`) carries the input
//! byte-exact and reports the exit status. Pure computation: it reads nothing from its sandbox.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use ecs_exec_guest_kit as kit;
use exports::hoop::ecs_exec::adapter::{Alternative, Guest, Info, Invocation, Plan, StdinMode};

struct Shell;

impl Guest for Shell {
    fn describe() -> Info {
        Info {
            name: "shell".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            programs: ["sh", "bash", "dash", "ash", "ksh", "zsh", "busybox sh"].map(String::from).to_vec(),
            summary: "stdin is a script for /bin/bash (no --pipe), or the stdin of a shell or any other program"
                .to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let mut argv = match inv.pipe.as_deref() {
            None if inv.interactive && inv.args.is_empty() => vec!["/bin/bash".to_owned()],
            None => ["/bin/bash", "-s", "--"].map(String::from).to_vec(),
            Some(pipe) => kit::split_words(pipe)?,
        };
        if argv.is_empty() {
            return Err("the pipe is empty".to_owned());
        }
        argv.extend(inv.args);
        kit::wrap_plan!(argv, inv, nonce)
    }
}

export!(Shell);
