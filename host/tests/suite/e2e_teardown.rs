//! Ending a one-off from our side: SIGINT and SIGTERM interrupt the remote command and exit 130
//! and 143, a closed stdout (`| head -1`) exits 141, and in every case nothing is left running
//! in the container.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;

use crate::e2e_support::World;
use ecs_exec_emulator::Spawned;

/// Starts a one-off of the default shell running `script`, and waits for its first line of
/// output, so the remote command is known to be running. A run that hangs is killed by the
/// watchdog of [`Spawned`], which ends the read with the wrong line.
fn start_one_off(world: &World, script: &[u8], first_line: &str) -> (Spawned, RemoteOutput) {
    let mut child = Spawned::spawn(
        world
            .ecs_exec()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = child.child().stdin.take().expect("stdin");
    stdin.write_all(script).expect("write the script");
    drop(stdin);
    let mut stdout = BufReader::new(child.child().stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the first line");
    assert_eq!(line, first_line);
    (child, stdout)
}

/// The rest of the run's stdout, after the first line.
type RemoteOutput = BufReader<std::process::ChildStdout>;

/// A one-off that prints `started` then runs until it is stopped.
fn start_long_one_off(world: &World) -> (Spawned, RemoteOutput) {
    start_one_off(
        world,
        b"echo started; sleep 600; echo not-interrupted\n",
        "started\n",
    )
}

fn signal_ends_the_remote_command(signal: libc::c_int, expected_status: i32) {
    let world = World::start();
    let (mut child, mut stdout) = start_long_one_off(&world);
    assert_eq!(world.emulator.counters().processes_running, 1);
    // SAFETY: kill(2) on our own child, which has not been waited for yet.
    unsafe { libc::kill(child.child().id() as libc::pid_t, signal) };
    let (status, stderr) = child.wait("ecs-exec after the signal");
    assert_eq!(status.code(), Some(expected_status), "stderr: {stderr}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read the rest");
    assert!(!rest.contains("not-interrupted"), "stdout: {rest:?}");
    world
        .emulator
        .wait_until_blocking(|counters| counters.processes_running == 0);
}

#[test]
fn sigint_interrupts_the_remote_command_and_exits_130() {
    signal_ends_the_remote_command(libc::SIGINT, 130);
}

#[test]
fn sigterm_interrupts_the_remote_command_and_exits_143() {
    signal_ends_the_remote_command(libc::SIGTERM, 143);
}

#[test]
fn a_closed_stdout_ends_the_run_like_head_does() {
    let world = World::start();
    let (child, stdout) = start_one_off(&world, b"yes line\n", "line\n");
    drop(stdout);
    let (status, stderr) = child.wait("ecs-exec with its stdout closed");
    assert_eq!(status.code(), Some(141), "stderr: {stderr}");
    assert!(
        stderr.is_empty(),
        "a closed stdout is not an error: {stderr}"
    );
    world
        .emulator
        .wait_until_blocking(|counters| counters.processes_running == 0);
}
