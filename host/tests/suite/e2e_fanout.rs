//! A one-off on many tasks (`--all-tasks`, `--tasks`) end to end: every task runs the same
//! input once, each line of output is whole and marked with its task, one task's failure does
//! not stop the others, and the exit status follows the documented rule.

use std::collections::BTreeMap;
use std::time::Duration;

use ecs_exec_emulator::config::{ContainerConfig, ServiceConfig};

use crate::e2e_support::{World, pseudo_random_bytes, run_measuring_peak_rss};

/// Longer than any healthy run here on a loaded CI machine; only a hang reaches it.
const HANG_LIMIT: Duration = Duration::from_secs(300);

fn service(name: &str, running_tasks: usize, environment: &[(&str, &str)]) -> ServiceConfig {
    let mut container = ContainerConfig::named("app");
    for (key, value) in environment {
        container
            .environment
            .insert((*key).to_owned(), (*value).to_owned());
    }
    ServiceConfig {
        name: name.to_owned(),
        running_tasks,
        stopped_tasks: 0,
        task_ids: Vec::new(),
        enable_execute_command: true,
        containers: vec![container],
        setup: Default::default(),
    }
}

fn running_tasks_of(world: &World, service: &str) -> Vec<String> {
    let state = world.emulator.world();
    let cluster = state.cluster(Some("demo")).expect("demo cluster");
    cluster
        .tasks
        .iter()
        .filter(|task| task.service == service && task.status.as_str() == "RUNNING")
        .map(|task| task.id.clone())
        .collect()
}

/// stdout lines grouped by their `[label]`, in the order each task printed them.
fn lines_by_label(stdout: &[u8]) -> BTreeMap<String, Vec<String>> {
    let text = String::from_utf8(stdout.to_vec()).expect("utf-8 output");
    let mut by_label: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let rest = line.strip_prefix('[').expect("a marked line");
        let (label, content) = rest.split_once("] ").expect("a marked line");
        by_label
            .entry(label.to_owned())
            .or_default()
            .push(content.to_owned());
    }
    by_label
}

#[test]
fn every_task_of_the_service_runs_once_with_whole_marked_lines() {
    let world = World::start();
    let tasks = running_tasks_of(&world, "web");
    assert!(
        tasks.len() >= 2,
        "the default world has two running web tasks"
    );
    let mut command = world.ecs_exec();
    command.arg("--all-tasks");
    // Many lines from each task at once: a line must never be split or mixed with another's.
    let script = b"for i in $(seq 1 300); do echo \"line $i of a run\"; done; echo oops >&2\n";
    let outcome = world.run_within(command, script, HANG_LIMIT);

    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    let by_label = lines_by_label(&outcome.stdout);
    let expected: Vec<String> = (1..=300).map(|i| format!("line {i} of a run")).collect();
    assert_eq!(by_label.len(), tasks.len(), "{by_label:?}");
    for (label, lines) in &by_label {
        assert_eq!(label.len(), 8, "a short task label: {label}");
        assert_eq!(
            tasks
                .iter()
                .filter(|id| id.starts_with(label.as_str()))
                .count(),
            1,
            "{label} names exactly one task"
        );
        assert_eq!(lines, &expected, "task {label}");
        // stderr comes back apart, marked with its task too.
        assert!(
            outcome.stderr.contains(&format!("[{label}] oops\n")),
            "task {label}: {}",
            outcome.stderr
        );
    }
    assert!(
        outcome.stderr.contains(&format!(
            "ecs-exec: ran on {} tasks: {} exited 0",
            tasks.len(),
            tasks.len()
        )),
        "{}",
        outcome.stderr
    );
}

#[test]
fn json_output_is_one_object_per_line_then_a_result_per_task() {
    let world = World::start();
    let tasks = running_tasks_of(&world, "web");
    let mut command = world.ecs_exec();
    command.args(["--all-tasks", "--output", "json"]);
    let outcome = world.run_within(command, b"printf 'a\\nb'\nexit 4\n", HANG_LIMIT);

    assert_eq!(outcome.code(), 4, "{}", outcome.stderr);
    let mut output: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut results: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for line in outcome.stdout_text().lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        let task = record["task"].as_str().expect("task").to_owned();
        assert!(tasks.contains(&task), "{task} is a running task");
        match record["type"].as_str() {
            Some("output") => {
                assert_eq!(record["stream"], "stdout");
                assert!(!results.contains_key(&task), "output after the result");
                output
                    .entry(task)
                    .or_default()
                    .push(record["data"].as_str().expect("data").to_owned());
            }
            Some("result") => {
                results.insert(task, record);
            }
            other => panic!("unexpected record type {other:?}"),
        }
    }
    assert_eq!(results.len(), tasks.len());
    for task in &tasks {
        assert_eq!(output[task], ["a\n", "b"], "task {task}");
        let result = &results[task];
        assert_eq!(result["exit_status"], 4);
        assert_eq!(result["exit_code"], 4);
        assert!(result["error"].is_null());
        assert!(result["duration_ms"].is_u64());
    }
}

#[test]
fn a_task_that_fails_does_not_stop_the_others_and_the_first_failure_decides() {
    let world = World::start_with(|config| {
        let demo = &mut config.clusters[0];
        demo.services.push(service("three", 1, &[("STATUS", "3")]));
        demo.services.push(service("zero", 1, &[("STATUS", "0")]));
    });
    let three = running_tasks_of(&world, "three").remove(0);
    let zero = running_tasks_of(&world, "zero").remove(0);
    let missing = "f".repeat(32);
    let mut command = world.bare_command();
    command.args([
        "--cluster",
        "demo",
        "--tasks",
        &format!("{zero},{missing},{three}"),
    ]);
    let outcome = world.run_within(
        command,
        b"echo \"status $STATUS\"; exit $STATUS\n",
        HANG_LIMIT,
    );

    // The missing task comes before `three` in the order given: its failure decides.
    assert_eq!(outcome.code(), 69, "{}", outcome.stderr);
    let by_label = lines_by_label(&outcome.stdout);
    assert_eq!(by_label[&zero[..8]], ["status 0"]);
    assert_eq!(by_label[&three[..8]], ["status 3"]);
    let error_lines: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("ecs-exec: error: "))
        .collect();
    assert_eq!(error_lines.len(), 1, "{}", outcome.stderr);
    assert!(
        error_lines[0].starts_with(&format!("ecs-exec: error: task {}: ", &missing[..8])),
        "{}",
        error_lines[0]
    );
    assert!(
        outcome.stderr.contains(&format!(
            "ran on 3 tasks: 1 exited 0; 1 exited non-zero ({} 3); 1 failed ({} exit 69)",
            &three[..8],
            &missing[..8]
        )),
        "{}",
        outcome.stderr
    );

    // Without the missing task, the first non-zero remote status is the exit status.
    let mut command = world.bare_command();
    command.args(["--cluster", "demo", "--tasks", &format!("{zero},{three}")]);
    let outcome = world.run_within(command, b"exit $STATUS\n", HANG_LIMIT);
    assert_eq!(outcome.code(), 3, "{}", outcome.stderr);
}

#[test]
fn fan_out_flags_are_checked_before_anything_runs() {
    let world = World::start();
    for (words, expected) in [
        (
            vec!["--all-tasks", "--interactive"],
            "cannot be --interactive",
        ),
        (vec!["--all-tasks", "--tasks", "abc"], "give one of them"),
        (vec!["--all-tasks", "--max-parallel", "0"], "--max-parallel"),
        (vec!["--all-tasks", "--output", "yaml"], "--output"),
        (vec!["--output", "json"], "apply to --all-tasks and --tasks"),
    ] {
        let mut command = world.ecs_exec();
        command.args(&words);
        let outcome = world.run_within(command, b"", HANG_LIMIT);
        assert_eq!(outcome.code(), 64, "{words:?}: {}", outcome.stderr);
        assert!(
            outcome.stderr.contains(expected),
            "{words:?}: {}",
            outcome.stderr
        );
    }
    assert_eq!(world.emulator.counters().api_requests, 0);
}

#[test]
fn fifty_tasks_each_get_the_whole_input_and_memory_stays_flat() {
    const TASKS: usize = 50;
    let world = World::start_with(|config| {
        config.clusters[0]
            .services
            .push(service("fleet", TASKS, &[]));
    });
    let tasks = running_tasks_of(&world, "fleet");
    assert_eq!(tasks.len(), TASKS);
    let input = pseudo_random_bytes(2 * 1024 * 1024);
    let expected = sha256_hex(&input);

    let mut command = world.bare_command();
    command.args([
        "--cluster",
        "demo",
        "--service-name",
        "fleet",
        "--all-tasks",
        "--max-parallel",
        "10",
        "--pipe",
        "sha256sum",
    ]);
    let (outcome, peak_rss_kib) = run_measuring_peak_rss(command, &input, HANG_LIMIT);

    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    let by_label = lines_by_label(&outcome.stdout);
    assert_eq!(by_label.len(), TASKS);
    for (label, lines) in &by_label {
        assert_eq!(lines, &[format!("{expected}  -")], "task {label}");
    }
    // 50 sessions of 2 MiB each: 100 MiB went out. The input is replayed from a file, so
    // memory is that of a few sessions in flight, not of the data.
    assert!(
        peak_rss_kib < 96 * 1024,
        "peak RSS {peak_rss_kib} KiB for 50 tasks of 2 MiB"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    hex::encode(digest.as_ref())
}
