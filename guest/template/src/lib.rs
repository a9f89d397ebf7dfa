//! A minimal ecs-exec pipe adapter: copy this crate to write your own.
//!
//! It serves the made-up program `template-example` and, for any pipe, runs the pipe's words as
//! the remote program with the one-off input streamed to its stdin and the exit status reported
//! back. Read `wit/adapter.wit` for the contract; every rule it states is followed below, and the
//! comments say why. The built-in adapters (`guest/shell`, …) do the same with more care (input
//! inlined when small, `sh -c` fallbacks); this one stays short on purpose.
// Build only for wasm: on the build machine the crate is empty, so workspace-wide `cargo check`
// and `clippy` never try to link a component for the wrong target.
#![cfg(target_arch = "wasm32")]

// Generates Rust types for the WIT records (`Invocation`, `Plan`, …) and the `Guest` trait, from
// the contract `hoop:ecs-exec@0.2.0` in `wit/adapter.wit`. (An adapter built against 0.1, in
// `wit/0.1/`, still loads; see "Migrating an adapter from 0.1 to 0.2" in the README.)
wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use exports::hoop::ecs_exec::adapter::{Guest, Info, Invocation, Plan, StdinMode};

struct Template;

impl Guest for Template {
    fn describe() -> Info {
        Info {
            // `--adapter template` selects it by this name; errors name it too.
            name: "template".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // Pipes whose first word is `template-example` (or `/any/path/template-example`) pick
            // this adapter without `--adapter`. Claiming a built-in program (say `python3`)
            // replaces the built-in adapter for it.
            programs: vec!["template-example".to_owned()],
            summary: "minimal example adapter: runs the pipe with stdin streamed as base64"
                .to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        // Your adapter decides what the pipe means; here its words are taken as the program.
        // (A real adapter should split the pipe shell-style, honouring quotes.)
        let mut argv: Vec<String> = inv
            .pipe
            .as_deref()
            .unwrap_or("cat")
            .split_whitespace()
            .map(String::from)
            .collect();
        argv.extend(inv.args);
        if argv.iter().any(|word| word.contains('\0')) {
            // Errors are one short line; the host prefixes them with the adapter's name.
            return Err("an argument contains NUL".to_owned());
        }
        // The nonce is fresh for every run, so program output cannot fake these two strings.
        let trailer = format!("__template_exit_{nonce}:");
        let marker = format!("__template_ready_{nonce}:");
        // The agent splits the command shell-style and executes it WITHOUT a shell, so we start a
        // shell ourselves. Positional words: $1 = trailer, $2 = marker, then the program's argv.
        let script = if inv.interactive {
            // Keystrokes go to the program as typed. `trap : INT` keeps this wrapper alive on
            // Ctrl-C so it can still print the exit status when the program ends.
            r#"t=$1; shift 2; trap : INT; "$@"; s=$?; printf "%s%d\n" "$t" "$s""#
        } else {
            // Echo off (the host's input must not come back as output) and no `\n` -> `\r\n`
            // rewriting; announce readiness; decode the streamed base64 into the program; report.
            r#"t=$1 m=$2; shift 2; stty -echo -opost; printf %s "$m"; base64 -d | "$@"; s=$?; printf "%s%d\n" "$t" "$s""#
        };
        let mut words = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            quote(script),
            "template".to_owned(),
        ];
        words.extend([quote(&trailer), quote(&marker)]);
        words.extend(argv.iter().map(|word| quote(word)));
        Ok(Plan {
            command: words.join(" "),
            stdin: if inv.interactive {
                StdinMode::Raw
            } else {
                StdinMode::StreamBase64
            },
            // Required with stream-base64: the host sends input only after seeing it.
            ready_marker: if inv.interactive { None } else { Some(marker) },
            exit_trailer: Some(trailer),
            // New in 0.2, both for one-off runs only. This example keeps stderr merged into the
            // output (as every 0.1 adapter does) and has one way only.
            //
            // `stderr_tag: Some(format!("__template_err_{nonce}:"))` would promise that the
            // command frames the program's fd 2 as lines `<tag><hex>\n` (what `od -An -v -tx1`
            // prints, each line prefixed by `sed`), which the host decodes onto its own stderr,
            // byte-exact; `stderr-tag` in the WIT says what makes that exact.
            //
            // An `Alternative { ready_marker, stdin, stderr_framed, notice }` is another way the
            // command may take in a container that lacks a tool: a plan that streams raw bytes
            // (`StdinMode::StreamBytes` when `inv.input_len` is known, `StreamChunks` otherwise,
            // after `stty raw -echo`) would offer a `StreamBase64` alternative for a container
            // without `dd`, and the script would print that alternative's marker instead of
            // `marker` when `command -v dd` fails. The host prints its `notice` once.
            stderr_tag: None,
            alternatives: Vec::new(),
        })
    }
}

/// Single-quotes a word for the agent's splitter; a `'` inside becomes `'\''`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

// Exports `Template` as the component's implementation of `hoop:ecs-exec/adapter`.
export!(Template);
