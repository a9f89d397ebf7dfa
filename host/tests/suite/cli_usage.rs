//! The `ecs-exec` binary's command-line contract: usage errors are one line on stderr with exit
//! 64 and nothing on stdout; `--help` documents flags, environment and exit codes.

use std::process::{Command, Output};

fn ecs_exec(args: &[&str]) -> Output {
    ecs_exec_emulator::testing::output(
        Command::new(env!("CARGO_BIN_EXE_ecs-exec"))
            .args(args)
            .env_clear()
            .env("HOME", env!("CARGO_TARGET_TMPDIR")),
    )
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let output = ecs_exec(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?}: stdout must stay empty");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line, got {stderr:?}"
    );
    assert!(stderr.starts_with("ecs-exec: error: "), "{stderr}");
    assert!(stderr.contains("--help"), "a hint to --help: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
}

#[test]
fn unknown_flag() {
    assert_usage_error(&["--bogus"], "--bogus");
}

#[test]
fn misspelt_flag_gets_a_suggestion() {
    assert_usage_error(&["--clustr=prod", "--service-name=web"], "--cluster");
}

#[test]
fn missing_cluster() {
    assert_usage_error(&["--service-name=web"], "CLUSTER_NAME");
}

#[test]
fn missing_service_and_task() {
    assert_usage_error(&["--cluster=prod"], "--service-name");
}

#[test]
fn flag_without_value() {
    assert_usage_error(&["--cluster=prod", "--task"], "--task");
}

#[test]
fn invalid_values() {
    assert_usage_error(
        &["--cluster=prod", "--task=t", "--endpoint-url=localhost"],
        "--endpoint-url",
    );
    assert_usage_error(&["--cluster=prod a", "--task=t"], "--cluster");
}

#[test]
fn help_lists_flags_environment_and_exit_codes() {
    for flag in ["--help", "-h"] {
        let output = ecs_exec(&[flag]);
        assert_eq!(output.status.code(), Some(0));
        assert!(output.stderr.is_empty());
        let help = String::from_utf8_lossy(&output.stdout);
        for needle in [
            "--cluster",
            "--service-name",
            "--task",
            "--container",
            "--pipe",
            "--interactive",
            "--region",
            "--profile",
            "--endpoint-url",
            "--adapter",
            "--adapter-dir",
            "CLUSTER_NAME",
            "SERVICE_NAME",
            "CONTAINER",
            "ECS_EXEC_ADAPTER_DIR",
            "CONNECTION_DEBUG",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_ENDPOINT_URL_ECS",
            "ecs:ExecuteCommand",
        ] {
            assert!(help.contains(needle), "--help lacks {needle}");
        }
        for code in ["64", "69", "70", "75", "76", "77", "78"] {
            assert!(
                help.lines().any(|line| line.trim_start().starts_with(code)),
                "--help lacks exit code {code}"
            );
        }
    }
}

#[test]
fn adapters_subcommand_is_dispatched_elsewhere() {
    // `adapters` is a grammar of its own, not an unknown word of the exec grammar.
    let output = ecs_exec(&["adapters", "list"]);
    assert_ne!(output.status.code(), Some(64));
}
