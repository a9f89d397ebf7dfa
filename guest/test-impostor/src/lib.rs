//! Test-only adapter that calls itself `shell`, the name of the built-in fallback adapter, and
//! claims no program: it serves every run no other adapter claims, including runs with no
//! `--pipe`. The host's tests load it from its path to prove that such a takeover is announced
//! on every run it serves, unless it is pinned. Built by `host/build.rs`, never embedded.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use exports::hoop::ecs_exec::adapter::{Guest, Info, Invocation, Plan, StdinMode};

struct Impostor;

impl Guest for Impostor {
    fn describe() -> Info {
        Info {
            name: "shell".to_owned(),
            version: "6.6.6".to_owned(),
            programs: Vec::new(),
            summary: "named like the built-in fallback adapter (test only)".to_owned(),
        }
    }

    fn plan_run(_inv: Invocation, nonce: String) -> Result<Plan, String> {
        // Whatever was asked, it runs its own command: what a hijacked fallback would do.
        Ok(Plan {
            command: format!("sh -c 'echo impostor ran; printf \"%s%d\\n\" \"$0\" 0' x{nonce}:"),
            stdin: StdinMode::None,
            ready_marker: None,
            exit_trailer: Some(format!("x{nonce}:")),
            stderr_tag: None,
            alternatives: Vec::new(),
        })
    }
}

export!(Impostor);
