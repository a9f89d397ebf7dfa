//! Load: 50 one-offs at once against one emulator all succeed byte-exact, and the emulator
//! serves them without an error. Wall time and memory are measured by `tests/bench/load.sh`,
//! not asserted here.

use std::thread;

use crate::e2e_support::{World, pseudo_random_bytes, run_with_input};

const RUNS: usize = 50;

#[test]
fn fifty_concurrent_one_offs_all_succeed_byte_exact() {
    let world = World::start();
    let outcomes = thread::scope(|scope| {
        let runs: Vec<_> = (0..RUNS)
            .map(|run| {
                let world = &world;
                scope.spawn(move || {
                    // Each run gets its own bytes so a mix-up between sessions would show.
                    let mut input = pseudo_random_bytes(64 * 1024 + run);
                    input.rotate_left(run * 97);
                    let mut command = world.ecs_exec();
                    command.args(["--pipe", "cat"]);
                    (input.clone(), run_with_input(&mut command, &input))
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("run thread"))
            .collect::<Vec<_>>()
    });
    for (run, (input, outcome)) in outcomes.iter().enumerate() {
        assert_eq!(outcome.code(), 0, "run {run}: {}", outcome.stderr);
        assert!(
            outcome.stdout == *input,
            "run {run}: output differs from its input"
        );
    }
    let counters = world
        .emulator
        .wait_until_blocking(|counters| counters.sessions_finished >= RUNS as u64);
    assert_eq!(counters.sessions_started, RUNS as u64, "{counters:?}");
    assert_eq!(counters.api_errors, 0, "{counters:?}");
    assert_eq!(counters.signature_failures, 0, "{counters:?}");
    assert_eq!(counters.tokens_rejected, 0, "{counters:?}");
}
