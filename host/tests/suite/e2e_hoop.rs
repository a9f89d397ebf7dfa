//! Every one-off example of Hoop's ECS page, run for real: the `ecs-exec` binary against the
//! emulator, with bash, ruby (a small `rails` shim on the container's PATH), python3 and clojure
//! in the emulated container. A test whose interpreter is not installed is skipped, except under
//! `CI=true` ([`require_tool`]).
//!
//! Hoop runs the connection command `ecs-exec --cluster=$CLUSTER_NAME --service-name=$SERVICE_NAME`
//! with the user's words after `--` appended and the input (`-i '…'` or a heredoc) on stdin; these
//! tests build exactly those command lines.

use crate::e2e_support;

use e2e_support::{CLUSTER, SERVICE, World};
use ecs_exec_emulator::require_tool;

/// The connection command Hoop runs for a one-off, plus the user's words.
fn hoop_exec(world: &World, user_words: &[&str]) -> std::process::Command {
    let mut command = world.bare_command();
    command
        .arg(format!("--cluster={CLUSTER}"))
        .arg(format!("--service-name={SERVICE}"))
        .args(user_words);
    command
}

fn assert_success(outcome: &e2e_support::Outcome) {
    assert_eq!(
        outcome.code(),
        0,
        "exit status; stderr: {}; stdout: {:?}",
        outcome.stderr,
        outcome.stdout_text()
    );
}

/// A one-off with `user_words` after the connection command and `input` on stdin, in a fresh
/// world; it must succeed, and its stdout is returned.
fn hoop_one_off(user_words: &[&str], input: &str) -> String {
    let world = World::start();
    let outcome = world.run(hoop_exec(&world, user_words), input.as_bytes());
    assert_success(&outcome);
    outcome.stdout_text()
}

#[test]
fn rails_runner_reads_a_heredoc() {
    if !require_tool("ruby") {
        return;
    }
    let script = "myvar='Hello from Rails'\nputs myvar\n";
    let stdout = hoop_one_off(&["--pipe", "rails runner -"], script);
    assert_eq!(stdout, "Hello from Rails\n");
}

#[test]
fn rails_runner_with_a_one_line_script() {
    if !require_tool("ruby") {
        return;
    }
    let stdout = hoop_one_off(&["--pipe", "rails runner -"], "puts Rails.env");
    assert_eq!(stdout, "production\n");
}

#[test]
fn clojure_prints_from_a_one_line_input() {
    if !require_tool("clojure") {
        return;
    }
    let stdout = hoop_one_off(&["--pipe", "clojure"], "(println \"Clojure REPL\")");
    assert_eq!(stdout, "Clojure REPL\n");
}

#[test]
fn python3_reads_the_container_environment() {
    if !require_tool("python3") {
        return;
    }
    let script = "import os\nprint(os.environ.get(\"CLUSTER_NAME\"))\n";
    let stdout = hoop_one_off(&["--pipe", "python3"], script);
    assert_eq!(stdout, "demo\n");
}

#[test]
fn default_bash_runs_the_input_as_a_script() {
    let stdout = hoop_one_off(&[], "echo \"hello world from bash\"");
    assert_eq!(stdout, "hello world from bash\n");
}

#[test]
fn a_script_path_runs_in_the_container() {
    let world = World::start();
    let script = world.workdir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"script ran in $PWD\"\nexit 4\n").expect("write");
    let mut permissions = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).expect("chmod");

    let outcome = world.run(hoop_exec(&world, &[]), script.to_string_lossy().as_bytes());
    assert_eq!(outcome.code(), 4, "stderr: {}", outcome.stderr);
    assert_eq!(
        outcome.stdout_text(),
        format!("script ran in {}\n", world.workdir.path().display())
    );
}

#[test]
fn task_override_after_the_separator() {
    let world = World::start();
    let tasks = world.running_web_tasks();
    assert!(
        tasks.len() >= 2,
        "the default world has two running web tasks"
    );
    for task in &tasks {
        let outcome = world.run(
            hoop_exec(&world, &["--", "--task", task]),
            b"echo \"$ECS_CONTAINER_METADATA_URI_V4\"",
        );
        assert_success(&outcome);
        // The emulator sets the metadata URI as ECS does, naming the container's runtime id,
        // which starts with the task id.
        assert!(
            outcome.stdout_text().contains(&format!("/v4/{task}-")),
            "ran in {:?}, wanted task {task}",
            outcome.stdout_text()
        );
    }
}

#[test]
fn rails_runner_with_a_script_file() {
    if !require_tool("ruby") {
        return;
    }
    let world = World::start();
    let script = world.workdir.path().join("script.rb");
    std::fs::write(&script, "puts \"#{Rails.env}: #{1 + 1}\"\n").expect("write");
    let input = format!("rails runner {}", script.display());
    let outcome = world.run(hoop_exec(&world, &[]), input.as_bytes());
    assert_success(&outcome);
    assert_eq!(outcome.stdout_text(), "production: 2\n");
}
