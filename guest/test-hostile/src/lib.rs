//! Test-only adapter that misbehaves on request, to prove the host's sandbox and limits.
//!
//! The behaviour is the first word of `invocation.args` (see `plan`); with no args it makes a
//! small valid plan, so the component itself loads and passes `describe()`. Built by `host/build.rs`
//! next to the default adapters but never embedded in the shipped binary: the host's tests load
//! it from its path like any third-party adapter.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "pipe-adapter" });

use exports::hoop::ecs_exec::adapter::{Alternative, Guest, Info, Invocation, Plan, StdinMode};

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Info {
        Info {
            name: "hostile".to_owned(),
            version: "0.0.0".to_owned(),
            // It also claims `python3`, a built-in adapter's program, so the tests can prove that a
            // third-party adapter wins such a tie, and that the takeover is never silent.
            // `hostile-slow` plans slowly (but within the per-call limits), for `check`'s budget.
            programs: vec![
                "hostile".to_owned(),
                "python3".to_owned(),
                "hostile-slow".to_owned(),
            ],
            // A right-to-left override and a zero-width space: the terminal must show escapes.
            summary: "misbehaves on request (test only) \u{202e}exe.txt\u{200b}".to_owned(),
        }
    }

    fn plan_run(inv: Invocation, nonce: String) -> Result<Plan, String> {
        // A plan that really runs: it prints `hostile ran` and reports status 0.
        let valid = Plan {
            command: format!("sh -c 'echo hostile ran; printf \"%s%d\\n\" \"$0\" 0' x{nonce}:"),
            stdin: StdinMode::None,
            ready_marker: None,
            exit_trailer: Some(format!("x{nonce}:")),
            stderr_tag: None,
            alternatives: Vec::new(),
        };
        if inv
            .pipe
            .as_deref()
            .is_some_and(|pipe| pipe.starts_with("hostile-slow"))
        {
            // Half the per-call wall-clock limit, spent waiting rather than computing (no fuel):
            // each plan passes on its own, and many of them add up (`adapters check --budget`).
            std::thread::sleep(std::time::Duration::from_millis(250));
            return Ok(valid);
        }
        match inv.args.first().map(String::as_str) {
            // `-a` is the argument of `adapters check`'s fixed streamed sample: behaving on the
            // samples alone must not pass the check.
            None | Some("valid") | Some("-a") => Ok(valid),
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
            // Every field contract 0.2 added, valid: the host must see each one as planned.
            Some("framed") => Ok(Plan {
                stdin: StdinMode::StreamChunks,
                ready_marker: Some(format!("r{nonce}:")),
                stderr_tag: Some(format!("e{nonce}:")),
                alternatives: vec![
                    Alternative {
                        ready_marker: format!("b{nonce}:"),
                        stdin: StdinMode::StreamBase64,
                        stderr_framed: true,
                        notice: "no dd here: input goes as base64".to_owned(),
                    },
                    Alternative {
                        ready_marker: format!("m{nonce}:"),
                        stdin: StdinMode::StreamBase64,
                        stderr_framed: false,
                        notice: "no od here: stderr is merged into stdout".to_owned(),
                    },
                ],
                ..valid
            }),
            // A 0.2 field outside the contract: a stderr tag without the nonce.
            Some("bad-tag") => Ok(Plan {
                stderr_tag: Some("stderr:".to_owned()),
                ..valid
            }),
            Some("long-error") => Err(format!("\x1b[31m{}\nsecond line", "e".repeat(100_000))),
            Some("snoop") => Err(snoop(inv.args.get(1).map(String::as_str))),
            Some("entropy") => Err(entropy()),
            Some("bidi") => {
                Err("\u{202e}gnp.exe\u{2066}x\u{2069}\u{200b} \x1b]0;owned\x07 \x1b[2J".to_owned())
            }
            Some("bidi-command") => Ok(Plan {
                command: "echo \u{202e}gnp.exe \x1b[2J\x1b]8;;http://x\x07".to_owned(),
                ..valid
            }),
            Some(other) => Err(format!("unknown behaviour {other}")),
        }
    }
}

/// What the guest can learn that might vary between calls: hash seeds (which std takes from
/// `wasi:random`), a hash map's iteration order, and the clocks.
fn entropy() -> String {
    use std::hash::BuildHasher as _;
    let seeded = std::collections::hash_map::RandomState::new().hash_one(42u64);
    let order: Vec<u32> = (0..16u32)
        .collect::<std::collections::HashSet<u32>>()
        .into_iter()
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    let float = f64::from_bits(0x7ff8_0000_0000_0001) + 1.0;
    format!(
        "seed={seeded:x} order={order:?} now={now} nan={:x}",
        float.to_bits()
    )
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
