//! The whole stack over a bad network: the emulator drops, duplicates, reorders and delays
//! data channel frames and cuts the websocket once; ecs-exec must resume the session (SSM
//! ResumeSession) and deliver every byte exactly once, or, when the session cannot be resumed,
//! say so in one line and exit 75. Faults are seeded, so every run sees the same schedule.

use std::time::Duration;

use ecs_exec_emulator::{Config, FaultRates};
use sha2::{Digest, Sha256};

use crate::e2e_support::tmux::Terminal;
use crate::e2e_support::{World, pseudo_random_bytes};

/// A run that has not finished by then is a hang, not a slow machine.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(900);

/// The fault mix of the reliability requirements, in both directions.
pub(crate) fn hostile_network(
    config: &mut Config,
    seed: u64,
    disconnect_after_frames: Option<u64>,
) {
    let rates = FaultRates {
        drop: 0.05,
        duplicate: 0.05,
        reorder_window: 10,
        delay_ms: 50,
    };
    config.faults.seed = seed;
    config.faults.outbound = rates.clone();
    config.faults.inbound = rates;
    config.faults.disconnect_after_frames = disconnect_after_frames;
    // The agent keeps the command running while the client comes back.
    config.agent.reconnect_grace_secs = 60;
}

#[test]
fn a_cut_websocket_is_resumed_without_losing_or_repeating_a_byte() {
    let world = World::start_with(|config| {
        config.faults.disconnect_after_frames = Some(50);
        config.agent.reconnect_grace_secs = 60;
    });
    let input = pseudo_random_bytes(2 * 1024 * 1024 + 3);
    let mut cat = world.ecs_exec();
    cat.args(["--pipe", "cat"]);
    let outcome = world.run_within(cat, &input, RUN_LIMIT);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    assert!(outcome.stdout == input, "cat output differs from its input");
    let counters = world.emulator.counters();
    assert_eq!(counters.disconnects_injected, 1);
    assert_eq!(counters.reconnects, 1, "the session was resumed once");
    assert!(outcome.stderr.is_empty(), "stderr: {}", outcome.stderr);
}

/// 64 MiB through `cat` and `sha256sum` over the hostile network. Each direction takes about
/// 3.5 minutes in a debug build (measured: 216 s for `sha256sum`), so it is opt-in:
/// `cargo test -p ecs-exec --test suite sixty_four_mib_survive -- --ignored`.
#[test]
#[ignore = "about 7 minutes in a debug build; run with --ignored"]
fn sixty_four_mib_survive_loss_duplication_reordering_delay_and_a_disconnect() {
    through_a_hostile_network(64 * 1024 * 1024, 2_000);
}

/// The same fault mix and cut as the 64 MiB test, at a size the default suite can afford.
///
/// It once stalled in about one run in five: when the cut found acks waiting in the emulator's
/// reorder window, they were re-queued behind a far-future instant and every later ack waited
/// behind them. The client kept resending its whole window and the command waited for input.
#[test]
fn four_mib_survive_loss_duplication_reordering_delay_and_a_disconnect() {
    through_a_hostile_network(4 * 1024 * 1024, 150);
}

fn through_a_hostile_network(len: usize, disconnect_after_frames: u64) {
    let world =
        World::start_with(|config| hostile_network(config, 0x5eed, Some(disconnect_after_frames)));
    let input = pseudo_random_bytes(len);

    cat_and_sha256sum_are_exact(&world, &input);
    let counters = every_fault_was_injected(&world);
    assert_eq!(
        counters.disconnects_injected, 2,
        "one per session: {counters:?}"
    );
    assert_eq!(counters.reconnects, 2, "{counters:?}");
    world
        .emulator
        .wait_until_blocking(|counters| counters.processes_running == 0);
}

#[test]
fn four_mib_survive_loss_duplication_reordering_and_delay() {
    let world = World::start_with(|config| hostile_network(config, 0x5eed, None));
    let input = pseudo_random_bytes(4 * 1024 * 1024);
    cat_and_sha256sum_are_exact(&world, &input);
    every_fault_was_injected(&world);
}

/// `input` through `--pipe cat` comes back byte for byte, and `--pipe sha256sum` hashes it right.
fn cat_and_sha256sum_are_exact(world: &World, input: &[u8]) {
    cat_and_sha256sum_are_exact_on(world, || world.ecs_exec(), input);
}

/// As [`cat_and_sha256sum_are_exact`], with the commands from `ecs_exec` (another cluster).
pub(crate) fn cat_and_sha256sum_are_exact_on(
    world: &World,
    ecs_exec: impl Fn() -> std::process::Command,
    input: &[u8],
) {
    let mut cat = ecs_exec();
    cat.args(["--pipe", "cat"]);
    let outcome = world.run_within(cat, input, RUN_LIMIT);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout.len(), input.len());
    assert!(outcome.stdout == input, "cat output differs from its input");

    let mut sha = ecs_exec();
    sha.args(["--pipe", "sha256sum"]);
    let outcome = world.run_within(sha, input, RUN_LIMIT);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    let expected = format!("{}  -\n", hex::encode(Sha256::digest(input)));
    assert_eq!(outcome.stdout_text(), expected);
}

/// The transfers really crossed a hostile network: frames were dropped, duplicated, reordered.
pub(crate) fn every_fault_was_injected(world: &World) -> ecs_exec_emulator::CountersSnapshot {
    let counters = world.emulator.counters();
    assert!(counters.frames_dropped > 0, "{counters:?}");
    assert!(counters.frames_duplicated > 0, "{counters:?}");
    assert!(counters.frames_reordered > 0, "{counters:?}");
    counters
}

#[test]
fn a_session_that_cannot_be_resumed_is_one_line_and_exit_75() {
    // With no grace the agent ends the session the moment the socket drops, so SSM has
    // nothing to resume.
    let world = World::start_with(|config| {
        config.faults.disconnect_after_frames = Some(200);
        config.agent.reconnect_grace_secs = 0;
    });
    let mut cat = world.ecs_exec();
    cat.args(["--pipe", "cat"]);
    let outcome = world.run_within(cat, &pseudo_random_bytes(4 * 1024 * 1024), RUN_LIMIT);
    assert_eq!(outcome.code(), 75, "stderr: {}", outcome.stderr);
    let stderr = outcome.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(
            "ecs-exec: error: data channel: the data channel dropped and could not be resumed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("DoesNotExistException"), "{stderr}");
    assert!(stderr.contains("may still be running in task"), "{stderr}");
}

#[test]
fn an_interactive_session_keeps_working_over_a_bad_network() {
    if !ecs_exec_emulator::require_tool("tmux") {
        return;
    }
    let world = World::start_with(|config| hostile_network(config, 0xbad, Some(30)));
    let command = world.hoop_connect(&["--pipe", "/bin/bash"]);
    let terminal = Terminal::start(&command, 100, 30);
    for round in 0..8 {
        terminal.type_line(&format!("echo round-$(({round} * 11))"));
        terminal.wait_for_line(&format!("round-{}", round * 11));
    }
    terminal.type_line("exit 3");
    assert_eq!(terminal.wait_for_exit(), 3);
    let counters = world.emulator.counters();
    assert_eq!(counters.disconnects_injected, 1, "{counters:?}");
    assert_eq!(counters.reconnects, 1, "{counters:?}");
}
