//! One-offs of adapter contract 0.2 end to end, on a GNU userland and on one whose PATH holds
//! only busybox applets: raw binary input (exactly N bytes when stdin is a file, `<len>` chunks
//! when it is a pipe), the program's stderr apart from its stdout byte for byte, and the ways a
//! container without the tools falls back to, each announced by one notice.

use sha2::{Digest as _, Sha256};

use crate::e2e_support::{
    Outcome, World, busybox_world, busybox_world_with_a_dd_that_cannot_count_bytes,
    pseudo_random_bytes,
};

/// The worlds to run each case in: GNU coreutils, then busybox alone (skipped outside CI when
/// busybox is missing). The guard keeps the busybox applet directory alive.
fn userlands() -> Vec<(&'static str, World, Option<tempfile::TempDir>)> {
    let mut worlds = vec![("GNU", World::start(), None)];
    if ecs_exec_emulator::require_tool("busybox") {
        let (world, guard) = busybox_world(&[]);
        worlds.push(("busybox", world, Some(guard)));
    }
    worlds
}

fn notes(outcome: &Outcome) -> Vec<&str> {
    outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("ecs-exec: note:"))
        .collect()
}

/// Runs `command` with `input` on stdin: a file (its length known) when `from_file`, else a pipe.
fn run_fed(
    world: &World,
    command: std::process::Command,
    input: &[u8],
    from_file: bool,
) -> Outcome {
    if from_file {
        world.run_from_file(command, input)
    } else {
        world.run(command, input)
    }
}

fn sha256_line(data: &[u8]) -> String {
    format!("{}  -\n", hex::encode(Sha256::digest(data)))
}

#[test]
fn raw_input_of_every_byte_value_arrives_exactly_from_a_file_and_from_a_pipe() {
    let input = pseudo_random_bytes(2 * 1024 * 1024 + 3);
    for (userland, world, _guard) in userlands() {
        for from_file in [true, false] {
            let mut command = world.ecs_exec();
            command.args(["-v", "--pipe", "sha256sum"]);
            let outcome = run_fed(&world, command, &input, from_file);
            let case = format!("{userland}, from a file: {from_file}");
            assert_eq!(outcome.code(), 0, "{case}: {}", outcome.stderr);
            assert_eq!(outcome.stdout_text(), sha256_line(&input), "{case}");
            let mode = if from_file {
                "stdin=stream-bytes"
            } else {
                "stdin=stream-chunks"
            };
            assert!(
                outcome.stderr.contains(mode) && outcome.stderr.contains("stderr_apart=true"),
                "{case}: the remote side should take the raw way: {}",
                outcome.stderr
            );
            assert_eq!(notes(&outcome), Vec::<&str>::new(), "{case}");
        }
    }
}

#[test]
fn stderr_comes_back_apart_and_byte_for_byte() {
    let input = pseudo_random_bytes(300 * 1024 + 5);
    for (userland, world, _guard) in userlands() {
        let mut command = world.ecs_exec();
        command.args(["--pipe", "sh -c 'cat >&2; printf done; exit 4'"]);
        let outcome = world.run(command, &input);
        assert_eq!(outcome.code(), 4, "{userland}: {}", outcome.stderr);
        assert_eq!(outcome.stdout, b"done", "{userland}");
        assert!(
            outcome.stderr_bytes == input,
            "{userland}: stderr differs from what the program wrote to fd 2 ({} bytes, want {})",
            outcome.stderr_bytes.len(),
            input.len()
        );
    }
}

#[test]
fn without_input_and_with_inline_input_stderr_is_still_apart() {
    for (userland, world, _guard) in userlands() {
        let mut command = world.ecs_exec();
        command.args(["--pipe", "sh -c 'echo to-err >&2; echo to-out; exit 3'"]);
        let outcome = world.run(command, b"");
        assert_eq!(outcome.code(), 3, "{userland}: {}", outcome.stderr);
        assert_eq!(outcome.stdout_text(), "to-out\n", "{userland}");
        assert_eq!(outcome.stderr, "to-err\n", "{userland}");

        let mut command = world.ecs_exec();
        command.args(["--inline-input", "--pipe", "sh -c 'cat >&2'"]);
        let outcome = world.run(command, b"\x00inline\xff");
        assert_eq!(outcome.code(), 0, "{userland}: {}", outcome.stderr);
        assert_eq!(outcome.stdout, b"", "{userland}");
        assert_eq!(outcome.stderr_bytes, b"\x00inline\xff", "{userland}");
    }
}

/// The command exits without reading megabytes of input: the run still ends at once with its
/// status, whatever input was still on its way. That input must stay data: taken as signals
/// (a 0x03 or 0x1C among it), it killed the remote shell before it could report (exit 76, "the
/// session ended before the remote command reported its exit status"), in about one run in four
/// with random input. Input made only of those bytes is the harsher case. Whether a run hits the
/// window is timing; `guest/kit`'s unit test checks the rule itself.
#[test]
fn a_program_that_reads_none_of_its_raw_input_still_reports_its_status() {
    let signal_characters: Vec<u8> = [0x03, 0x1c].repeat(2 * 1024 * 1024);
    let inputs = [
        ("random", pseudo_random_bytes(1024 * 1024)),
        ("signal characters", signal_characters),
    ];
    let world = World::start();
    for (what, input) in &inputs {
        for from_file in [true, false] {
            let mut command = world.ecs_exec();
            command.args(["--pipe", "sh -c 'exit 6'"]);
            let outcome = run_fed(&world, command, input, from_file);
            assert_eq!(
                outcome.code(),
                6,
                "{what}, from a file: {from_file}: {}",
                outcome.stderr
            );
        }
    }
}

/// Sends `input` (from a pipe, or from a file when `from_file`) through a remote `cat` and checks
/// that exactly it comes back; the outcome is left for the caller's checks of stderr.
fn through_cat(world: &World, input: &[u8], from_file: bool) -> Outcome {
    let mut command = world.ecs_exec();
    command.args(["--pipe", "cat"]);
    let outcome = run_fed(world, command, input, from_file);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert!(outcome.stdout == input, "output differs from input");
    outcome
}

#[test]
fn a_container_without_dd_takes_base64_for_a_pipe_and_says_so_once() {
    if !ecs_exec_emulator::require_tool("busybox") {
        return;
    }
    let (world, _guard) = busybox_world(&["dd"]);
    let input = pseudo_random_bytes(200 * 1024);
    let outcome = through_cat(&world, &input, false);
    let notes = notes(&outcome);
    assert_eq!(notes.len(), 1, "{}", outcome.stderr);
    assert!(
        notes[0].contains("dd") && notes[0].contains("base64"),
        "{}",
        notes[0]
    );
    assert_eq!(outcome.stderr.lines().count(), 1, "{}", outcome.stderr);

    // A known length needs no dd: head reads exactly that many bytes.
    let outcome = through_cat(&world, &input, true);
    assert_eq!(outcome.stderr, "", "no fallback, no notice");
}

#[test]
fn a_dd_that_cannot_count_bytes_still_takes_raw_chunks_of_a_pipe() {
    if !ecs_exec_emulator::require_tool("busybox") {
        return;
    }
    let (world, _guard) = busybox_world_with_a_dd_that_cannot_count_bytes();
    // Several chunks of the largest size, and a short last one.
    let input = pseudo_random_bytes(3 * 1024 * 1024 + 5);
    let outcome = through_cat(&world, &input, false);
    assert_eq!(outcome.stderr, "", "the raw way needs no notice");
}

#[test]
fn a_container_without_od_merges_stderr_and_says_so_once() {
    if !ecs_exec_emulator::require_tool("busybox") {
        return;
    }
    let (world, _guard) = busybox_world(&["od"]);
    let mut command = world.ecs_exec();
    command.args(["--pipe", "sh -c 'printf out; printf err >&2'"]);
    let outcome = world.run(command, b"");
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    let stdout = outcome.stdout_text();
    assert!(
        stdout.contains("out") && stdout.contains("err"),
        "{stdout:?}"
    );
    let notes = notes(&outcome);
    assert_eq!(notes.len(), 1, "{}", outcome.stderr);
    assert!(notes[0].contains("od or sed"), "{}", notes[0]);
}
