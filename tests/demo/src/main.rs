//! `ecs-exec-demo ARGS…`: the README's first run. Starts the emulator's default world on a free
//! loopback port and runs `ecs-exec ARGS…` in this process against it (the real CLI, API
//! client, data channel and adapters), then stops. Its stdout is the remote output alone and its
//! exit status is `ecs-exec`'s.
//!
//! It lives in its own crate so the emulator does not depend on the host: the emulator speaks
//! the protocol through `ecs-exec-wire` only.

use std::ffi::OsString;
use std::process::ExitCode;

use ecs_exec_emulator::{
    Config, DEFAULT_ACCESS_KEY_ID, DEFAULT_REGION, DEFAULT_SECRET_ACCESS_KEY, EmulatorHandle,
};

fn main() -> ExitCode {
    exec_against_default_world(std::env::args_os().skip(1).collect())
}

/// Runs `ecs-exec ARGS…` in-process against a fresh default world on a free loopback port.
fn exec_against_default_world(ecs_exec_args: Vec<OsString>) -> ExitCode {
    // The emulator's credentials, as any AWS client finds them. Set before the emulator's and
    // ecs-exec's threads exist: nothing else reads or writes the environment concurrently.
    let aws_environment = [
        ("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_ACCESS_KEY),
        ("AWS_REGION", DEFAULT_REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    for (name, value) in aws_environment {
        // SAFETY: single-threaded at this point (see above).
        unsafe { std::env::set_var(name, value) };
    }
    // SAFETY: as above; a session token from the caller's environment would not match.
    unsafe { std::env::remove_var("AWS_SESSION_TOKEN") };
    // The KMS API's port must be in the environment before any thread starts, so pick a free
    // one now (the `secure` cluster's sessions need it).
    let mut config = Config::default();
    if let Ok(kms_addr) =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|probe| probe.local_addr())
    {
        config.kms.listen = Some(kms_addr);
        // SAFETY: still single-threaded.
        unsafe { std::env::set_var("AWS_ENDPOINT_URL_KMS", format!("http://{kms_addr}")) };
    }
    let emulator = match EmulatorHandle::spawn_in_thread(config) {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("ecs-exec-demo: cannot start the emulator: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut argv = vec![
        OsString::from("ecs-exec"),
        OsString::from(format!("--endpoint-url={}", emulator.endpoint())),
    ];
    argv.extend(ecs_exec_args);
    let code = ecs_exec::cli::exec::main(argv);
    drop(emulator);
    code
}
