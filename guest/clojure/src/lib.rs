//! The built-in `clojure` adapter: `clojure`, `clj`, `clojure -M -`, `clojure script.clj`, ….
//!
//! Two launchers answer to `clojure`: the Clojure CLI tools (a script that understands `-M`, and
//! wants `clojure -M -` to read a program from stdin) and Debian's plain `java … clojure.main "$@"`
//! launcher (where `clojure -` reads stdin and `-M` is an error). For a bare `clojure`/`clj` in a
//! one-off run the plan runs the launcher through a small `sh -c` that inserts `-M` before `-`
//! when the launcher found on the remote PATH is the CLI tools' script (it mentions `-Sdeps`).
//! Explicit arguments in the pipe are used as given. Pure computation: it reads nothing from its
//! sandbox.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use ecs_exec_guest_kit as kit;
use exports::hoop::ecs_exec::adapter::{Alternative, Guest, Info, Invocation, Plan, StdinMode};

struct Clojure;

/// `sh -c` script run remotely as `sh -c SCRIPT clojure LAUNCHER - ARGS…`: if the launcher is the
/// CLI tools' script, insert `-M` after it, then exec. Reads the launcher with the shell's own
/// `read` (no grep assumed on the remote side).
const DETECT_CLI_TOOLS: &str = r#"if p=$(command -v "$1") && [ -f "$p" ]; then while IFS= read -r l || [ -n "$l" ]; do case $l in *-Sdeps*) p=$1; shift; set -- "$p" -M "$@"; break;; esac; done < "$p"; fi; exec "$@""#;

impl Guest for Clojure {
    fn describe() -> Info {
        Info {
            name: "clojure".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            programs: ["clojure", "clj"].map(String::from).to_vec(),
            summary: "clojure/clj reading the program from stdin (CLI tools `-M -` or Debian's `clojure -`)".to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let pipe = inv.pipe.as_deref().unwrap_or("clojure");
        let mut argv = kit::split_words(pipe)?;
        let launcher_at = kit::program_index(&argv);
        if !argv
            .get(launcher_at)
            .is_some_and(|word| matches!(kit::basename(word), "clojure" | "clj"))
        {
            return Err(format!("the pipe `{pipe}` does not run clojure"));
        }
        let is_bare = argv.len() == launcher_at + 1;
        if is_bare && !inv.interactive {
            let detect = ["sh", "-c", DETECT_CLI_TOOLS, "clojure"].map(String::from);
            argv.splice(launcher_at..launcher_at, detect);
            argv.push("-".to_owned());
        }
        argv.extend(inv.args);
        kit::wrap_plan!(argv, inv, nonce)
    }
}

export!(Clojure);
