//! Test-only adapter that misbehaves on request, to prove the host's sandbox and limits.
//!
//! The behaviour is the first word of `invocation.args` (see `plan`); with no args it makes a
//! small valid plan, so the component itself loads and passes `describe()`. Built by `host/build.rs`
//! next to the default adapters but never embedded in the shipped binary: the host's tests load
//! it from its path like any third-party adapter.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use exports::hoop::ecs_exec::adapter::{Guest, Info, Invocation, Plan, StdinMode};

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Info {
        Info {
            name: "hostile".to_owned(),
            version: "0.0.0".to_owned(),
            // It also claims `python3`, a built-in adapter's program, so the tests can prove that a
            // third-party adapter wins such a tie.
            programs: vec!["hostile".to_owned(), "python3".to_owned()],
            summary: "misbehaves on request (test only)".to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        let valid = Plan {
            command: "true".to_owned(),
            stdin: StdinMode::None,
            ready_marker: None,
            exit_trailer: Some(format!("x{nonce}:")),
        };
        match inv.args.first().map(String::as_str) {
            None | Some("valid") => Ok(valid),
            Some("loop") => loop {
                std::hint::black_box(&nonce);
            },
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("trap") => core::arch::wasm32::unreachable(),
            Some("panic") => panic!("hostile guest panics on purpose"),
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(valid)
            }
            Some("oversized") => Ok(Plan {
                command: "x".repeat(4 << 20),
                ..valid
            }),
            Some("nul") => Ok(Plan {
                command: "echo \0".to_owned(),
                ..valid
            }),
            Some("empty") => Ok(Plan {
                command: String::new(),
                ..valid
            }),
            Some("no-marker") => Ok(Plan {
                stdin: StdinMode::StreamBase64,
                ..valid
            }),
            Some("bad-trailer") => Ok(Plan {
                exit_trailer: Some("\x1b[2J".to_owned()),
                ..valid
            }),
            Some("long-error") => Err(format!("\x1b[31m{}\nsecond line", "e".repeat(100_000))),
            Some("snoop") => Err(snoop(inv.args.get(1).map(String::as_str))),
            Some(other) => Err(format!("unknown behaviour {other}")),
        }
    }
}

/// Reports what the sandbox lets the guest see: environment, arguments, files, clocks, network.
fn snoop(tcp_target: Option<&str>) -> String {
    let env: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let passwd = std::fs::read("/etc/passwd")
        .map(|bytes| bytes.len())
        .map_err(|error| error.kind());
    let cwd_entries = std::fs::read_dir(".")
        .map(|entries| entries.count())
        .map_err(|error| error.kind());
    let root_entries = std::fs::read_dir("/")
        .map(|entries| entries.count())
        .map_err(|error| error.kind());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(u64::MAX);
    let tcp = tcp_target.map(|target| {
        std::net::TcpStream::connect(target)
            .map(|_| ())
            .map_err(|error| error.kind())
    });
    format!(
        "env={env:?} args={args:?} passwd={passwd:?} cwd={cwd_entries:?} root={root_entries:?} now={now} tcp={tcp:?}"
    )
}

export!(Hostile);
