//! The README's first command, as a newcomer runs it: a one-off through the whole stack
//! against a fresh emulator, with the remote output on stdout and the remote exit status.

use std::process::Command;

use ecs_exec_emulator::testing::{PROCESS_DEADLINE, output_within, tail};

#[test]
fn the_readme_first_run_prints_the_remote_output_and_exits_with_its_status() {
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_ecs-exec-demo"))
            .args(["--cluster", "demo", "--service-name", "web"])
            .env_remove("AWS_PROFILE"),
        br#"echo "hello from $(hostname) in $PWD"; exit 3"#,
        PROCESS_DEADLINE,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "stdout {stdout:?}, stderr {}",
        tail(&output.stderr)
    );
    assert!(
        stdout.starts_with("hello from ") && stdout.contains(" in /"),
        "stdout {stdout:?}, stderr {}",
        tail(&output.stderr)
    );
}
