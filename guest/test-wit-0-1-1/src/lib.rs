//! Test-only adapter built against `hoop:ecs-exec@0.1.1` (a copy of the 0.1 contract with the
//! patch version bumped and one function added), so the host's tests can prove that a host whose
//! bindings are 0.1.0 (beside 0.2) loads and runs an adapter built against any 0.1.x, as the WIT
//! promises. Never embedded.
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

    /// One-off: the input is a script for `sh`, streamed as base64 (the 0.1 way), and its exit
    /// status comes back; so the host's tests see a 0.1 plan carry input and status end to end.
    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let trailer = format!("__next_minor_{nonce}:");
        let marker = format!("__next_minor_ready_{nonce}:");
        let report = r#"s=$?; printf "%s%d\n" "$t" "$s""#;
        let (stdin, ready_marker, script) = if inv.interactive {
            let script = format!(r#"t=$1; echo built-against-0.1.1; sh; {report}"#);
            (StdinMode::Raw, None, script)
        } else if inv.input_len == Some(0) {
            let script = format!(
                r#"t=$1; stty -echo -opost; echo built-against-0.1.1; sh </dev/null; {report}"#
            );
            (StdinMode::None, None, script)
        } else {
            let script = format!(
                r#"t=$1 m=$2; stty -echo -opost; printf %s "$m"; echo built-against-0.1.1; base64 -d | sh; {report}"#
            );
            (StdinMode::StreamBase64, Some(marker.clone()), script)
        };
        Ok(Plan {
            command: format!("sh -c '{script}' next-minor '{trailer}' '{marker}'"),
            stdin,
            ready_marker,
            exit_trailer: Some(trailer),
        })
    }

    fn features() -> Vec<String> {
        vec!["nothing-yet".to_owned()]
    }
}

export!(NextMinor);
