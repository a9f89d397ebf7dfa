//! Test-only adapter built against `hoop:ecs-exec@0.1.1` (a copy of the contract with the minor
//! version bumped and one function added), so the host's tests can prove that a 0.1.0 host loads
//! and runs an adapter built against any 0.1.x, as the WIT promises. Never embedded.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "wit", world: "pipe-adapter" });

use exports::hoop::ecs_exec::adapter::{Guest, Info, Invocation, Plan, StdinMode};

struct NextMinor;

impl Guest for NextMinor {
    fn describe() -> Info {
        Info {
            name: "next-minor".to_owned(),
            version: "0.1.1".to_owned(),
            programs: vec!["next-minor".to_owned()],
            summary: "built against hoop:ecs-exec@0.1.1 (test only)".to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let mode = if inv.interactive {
            StdinMode::Raw
        } else {
            StdinMode::None
        };
        Ok(Plan {
            command: format!(
                "sh -c 'echo built-against-0.1.1; printf \"%s%d\\n\" \"$0\" 0' __next_minor_{nonce}:"
            ),
            stdin: mode,
            ready_marker: None,
            exit_trailer: Some(format!("__next_minor_{nonce}:")),
        })
    }

    fn features() -> Vec<String> {
        vec!["nothing-yet".to_owned()]
    }
}

export!(NextMinor);
