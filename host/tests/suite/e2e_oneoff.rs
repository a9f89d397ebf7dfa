//! One-off runs through the whole stack against the emulator: bytes in and out exactly, the remote
//! exit status, and the failures a user meets before anything runs.

use crate::e2e_support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use e2e_support::{World, pseudo_random_bytes};
use sha2::{Digest, Sha256};

#[test]
fn exit_status_passes_through() {
    let world = World::start();
    let outcome = world.run(world.ecs_exec(), b"echo before; exit 7");
    assert_eq!(outcome.code(), 7, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout_text(), "before\n");
}

#[test]
fn streamed_input_with_every_byte_value_comes_back_exactly() {
    let world = World::start();
    let input = pseudo_random_bytes(3 * 1024 * 1024 + 17);
    let mut command = world.ecs_exec();
    command.args(["--pipe", "cat"]);
    let outcome = world.run(command, &input);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout.len(), input.len());
    assert!(outcome.stdout == input, "output differs from input");
}

#[test]
fn sixty_four_mib_through_cat_and_sha256sum() {
    let world = World::start();
    let input = pseudo_random_bytes(64 * 1024 * 1024);

    let mut cat = world.ecs_exec();
    cat.args(["--pipe", "cat"]);
    let outcome = world.run(cat, &input);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    assert!(outcome.stdout == input, "cat output differs from input");

    let mut sha = world.ecs_exec();
    sha.args(["--pipe", "sha256sum"]);
    let outcome = world.run(sha, &input);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    let expected = format!("{}  -\n", hex::encode(Sha256::digest(&input)));
    assert_eq!(outcome.stdout_text(), expected);
}

#[test]
fn small_input_with_quotes_and_control_bytes_comes_back_exactly_streamed_or_inlined() {
    let world = World::start();
    let input = b"-n 'it''s' \"$HOME\" `date` \\ \r\n\x00\xff\xfe end".to_vec();
    for inline in [false, true] {
        let mut command = world.ecs_exec();
        command.args(["--pipe", "cat"]);
        if inline {
            command.arg("--inline-input");
        }
        let outcome = world.run(command, &input);
        assert_eq!(outcome.code(), 0, "inline {inline}: {}", outcome.stderr);
        assert_eq!(outcome.stdout, input, "inline {inline}");
    }
}

#[test]
fn input_stays_out_of_the_command_unless_inlining_is_asked_for() {
    // The command string is an ExecuteCommand parameter: CloudTrail may record it, and the
    // container's process list shows it. A piped script can hold a password.
    let world = World::start();
    let script = b"PGPASSWORD=s3cr3t-hunter2 psql -c 'select 1'\n";
    let encoded = BASE64.encode(script);
    let mut command = world.ecs_exec();
    command.args(["--pipe", "cat"]);
    let outcome = world.run(command, script);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, script);

    let mut command = world.ecs_exec();
    command.args(["--pipe", "cat", "--inline-input"]);
    let outcome = world.run(command, script);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, script);

    let commands = world.emulator.executed_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    for command in &commands {
        assert!(!command.contains("s3cr3t"), "{command}");
    }
    assert!(
        !commands[0].contains(&encoded),
        "by default the input is streamed, not in the command: {}",
        commands[0]
    );
    assert!(
        commands[1].contains(&encoded),
        "--inline-input puts it there (which is what this test could see): {}",
        commands[1]
    );
}

#[test]
fn empty_input_runs_and_prints_nothing() {
    let world = World::start();
    let mut command = world.ecs_exec();
    command.args(["--pipe", "cat"]);
    let outcome = world.run(command, b"");
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    assert!(outcome.stdout.is_empty());
}

#[test]
fn output_has_no_carriage_returns_added() {
    let world = World::start();
    let outcome = world.run(world.ecs_exec(), b"printf 'a\\nb\\n'");
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout, b"a\nb\n");
}

#[test]
fn a_service_without_a_running_agent_is_one_clear_line() {
    let world = World::start();
    let mut command = world.bare_command();
    command.args(["--cluster", "demo", "--service-name", "no-agent"]);
    let outcome = world.run(command, b"echo hi");
    assert_eq!(outcome.code(), 69, "stderr: {}", outcome.stderr);
    assert!(outcome.stdout.is_empty());
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {}", outcome.stderr);
    assert!(lines[0].starts_with("ecs-exec: error: "), "{}", lines[0]);
    assert!(lines[0].contains("enableExecuteCommand"), "{}", lines[0]);
}

#[test]
fn a_missing_program_reports_a_failure_status() {
    let world = World::start();
    let mut command = world.ecs_exec();
    command.args(["--pipe", "no-such-program-here"]);
    let outcome = world.run(command, b"");
    assert_ne!(outcome.code(), 0, "stdout: {:?}", outcome.stdout_text());
}
