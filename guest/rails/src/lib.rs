//! The built-in `rails` adapter: `rails runner -`, `rails runner FILE`, `rails console`.
//!
//! It serves `rails` and `bin/rails`, also behind `bundle exec` and `env NAME=value`. A bare
//! `rails` becomes `rails runner -` in a one-off run (the input is the Ruby script) and
//! `rails console` in an interactive one; `rails runner` without a file reads the script from
//! stdin. The `sh -c` bootstrap (in `ecs-exec-guest-kit`) carries the input byte-exact and reports
//! the exit status. Pure computation: it reads nothing from its sandbox.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use ecs_exec_guest_kit as kit;
use exports::hoop::ecs_exec::adapter::{Alternative, Guest, Info, Invocation, Plan, StdinMode};

struct Rails;

impl Guest for Rails {
    fn describe() -> Info {
        Info {
            name: "rails".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            programs: [
                "rails",
                "bin/rails",
                "bundle exec rails",
                "bundle exec bin/rails",
            ]
            .map(String::from)
            .to_vec(),
            summary:
                "rails runner (stdin is the Ruby script) and rails console, also behind bundle exec"
                    .to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let pipe = inv.pipe.as_deref().unwrap_or("bundle exec rails");
        let mut argv = kit::split_words(pipe)?;
        let rails_at = kit::program_index(&argv);
        if argv.get(rails_at).map(|word| kit::basename(word)) != Some("rails") {
            return Err(format!("the pipe `{pipe}` does not run rails"));
        }
        let subcommand = argv.get(rails_at + 1).cloned();
        match subcommand.as_deref() {
            None if inv.interactive => argv.push("console".to_owned()),
            None => argv.extend(["runner".to_owned(), "-".to_owned()]),
            // `rails runner` with no code or file: the script is the input.
            Some("runner" | "r") if argv.len() == rails_at + 2 && !inv.interactive => {
                argv.push("-".to_owned())
            }
            Some(_) => {}
        }
        argv.extend(inv.args);
        kit::wrap_plan!(argv, inv, nonce)
    }
}

export!(Rails);
