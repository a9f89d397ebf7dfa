//! Test-only adapter built against `hoop:ecs-exec@0.3.0` (a copy of the 0.1 contract with the
//! version bumped), so the host's tests can prove that a version it does not speak is refused
//! with a clear one-line error rather than misread. Never embedded in the shipped binary.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "wit", world: "pipe-adapter" });

use exports::hoop::ecs_exec::adapter::{Guest, Info, Invocation, Plan, StdinMode};

struct OtherWit;

impl Guest for OtherWit {
    fn describe() -> Info {
        Info {
            name: "other-wit".to_owned(),
            version: "0.3.0".to_owned(),
            programs: vec!["other-wit".to_owned()],
            summary: "built against a contract version the host does not speak (test only)"
                .to_owned(),
        }
    }

    fn plan_run(_inv: Invocation, nonce: String) -> Result<Plan, String> {
        Ok(Plan {
            command: "true".to_owned(),
            stdin: StdinMode::None,
            ready_marker: None,
            exit_trailer: Some(nonce),
        })
    }
}

export!(OtherWit);
