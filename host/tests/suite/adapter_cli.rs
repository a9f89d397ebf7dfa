//! `ecs-exec adapters list|show|check`, run as the real binary (no AWS, no network).

use crate::adapter_common;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ecs-exec adapters ARGS…` with the shared compiled-adapter cache and no adapter dir.
fn adapters(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ecs-exec"))
        .arg("adapters")
        .args(args)
        .env(
            "XDG_CACHE_HOME",
            adapter_common::shared_cache_dir().join("xdg"),
        )
        .env_remove("ECS_EXEC_ADAPTER_DIR")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn list_shows_the_builtin_adapters() {
    let output = adapters(&["list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("NAME "), "{text}");
    assert_eq!(
        text.split_whitespace().take(5).collect::<Vec<_>>(),
        ["NAME", "VERSION", "CONTRACT", "SOURCE", "PROGRAMS"],
        "{text}"
    );
    for (name, program) in [
        ("shell", "bash"),
        ("rails", "bundle exec rails"),
        ("python", "python3"),
        ("clojure", "clj"),
    ] {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        assert!(
            line.contains("embedded") && line.contains(program),
            "{line}"
        );
        let contract = line.split_whitespace().nth(2);
        assert_eq!(contract, Some("0.2.0"), "built-ins speak 0.2: {line}");
    }
}

#[test]
fn list_shows_the_contract_version_of_each_third_party_adapter() {
    let dir = tempfile::tempdir().unwrap();
    for (stem, file) in [
        ("ecs_exec_test_wit_0_1_1", "old.wasm"),
        ("ecs_exec_adapter_template", "template.wasm"),
    ] {
        std::fs::copy(adapter_common::test_guest(stem), dir.path().join(file)).unwrap();
    }
    let output = adapters(&["list", "--adapter-dir", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for (name, contract) in [("next-minor", "0.1.1"), ("template", "0.2.0")] {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        assert_eq!(line.split_whitespace().nth(2), Some(contract), "{line}");
    }
}

#[test]
fn list_marks_builtin_programs_a_third_party_adapter_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        adapter_common::test_guest("ecs_exec_test_hostile"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    let output = adapters(&["list", "--adapter-dir", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let hostile = text
        .lines()
        .find(|line| line.starts_with("hostile "))
        .expect("the third-party adapter is listed");
    assert!(
        hostile.contains(&dir.path().join("hostile.wasm").display().to_string()),
        "{hostile}"
    );
    let python = text
        .lines()
        .find(|line| line.starts_with("python "))
        .unwrap();
    assert!(
        python.contains("python3 (shadowed by hostile from "),
        "{python}"
    );
    assert!(
        text.contains("takeover: hostile (")
            && text.contains("takes over `python3` from the built-in `python`"),
        "{text}"
    );
    assert!(
        python.contains("python, "),
        "python itself is still served: {python}"
    );
}

#[test]
fn the_adapter_dir_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        adapter_common::test_guest("ecs_exec_adapter_template"),
        dir.path().join("t.wasm"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ecs-exec"))
        .args(["adapters", "list"])
        .env(
            "XDG_CACHE_HOME",
            adapter_common::shared_cache_dir().join("xdg"),
        )
        .env("ECS_EXEC_ADAPTER_DIR", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output)
            .lines()
            .any(|line| line.starts_with("template ")),
        "{}",
        stdout(&output)
    );
}

#[test]
fn show_prints_the_plan_and_the_argv_the_agent_will_run() {
    let output = adapters(&["show", "rails", "--pipe", "bundle exec rails"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("adapter:      rails 0.1.0 (embedded, contract 0.2.0)"),
        "{text}"
    );
    assert!(text.contains("stdin:        stream-chunks"), "{text}");
    assert!(text.contains("\nstderr-tag:   __ecs_exec_err_"), "{text}");
    assert!(
        text.contains(", stdin stream-base64, stderr framed; notice: ")
            && text.contains(", stdin stream-chunks, stderr merged; notice: "),
        "the ways a container without the tools falls back to: {text}"
    );
    for word in ["\"bundle\"", "\"exec\"", "\"rails\"", "\"runner\"", "\"-\""] {
        assert!(text.contains(word), "argv lists {word}: {text}");
    }
    let inline = adapters(&["show", "python", "--input", "print('hi')"]);
    assert!(
        stdout(&inline).contains("stdin:        inline"),
        "{}",
        stdout(&inline)
    );
    let interactive = adapters(&["show", "shell", "--interactive", "--pipe", "/bin/bash"]);
    assert!(
        stdout(&interactive).contains("stdin:        raw"),
        "{}",
        stdout(&interactive)
    );
    let no_input = adapters(&["show", "clojure", "--input-len", "0"]);
    assert!(
        stdout(&no_input).contains("stdin:        none"),
        "{}",
        stdout(&no_input)
    );
}

#[test]
fn show_prints_the_stderr_tag_and_alternatives_of_a_0_2_plan() {
    let hostile = adapter_common::test_guest("ecs_exec_test_hostile");
    let output = adapters(&["show", hostile.to_str().unwrap(), "--", "framed"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(", contract 0.2.0)\n"), "{text}");
    assert!(text.contains("stdin:        stream-chunks\n"), "{text}");
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim_start)
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_owned()
    };
    let tag = value("stderr-tag:");
    assert!(tag.starts_with('e') && tag.ends_with(':'), "{text}");
    let nonce = &tag[1..tag.len() - 1];
    assert_eq!(
        value("alternative 1:"),
        format!(
            "ready-marker b{nonce}:, stdin stream-base64, stderr framed; notice: no dd here: \
             input goes as base64"
        )
    );
    assert_eq!(
        value("alternative 2:"),
        format!(
            "ready-marker m{nonce}:, stdin stream-base64, stderr merged; notice: no od here: \
             stderr is merged into stdout"
        )
    );

    let old = adapter_common::test_guest("ecs_exec_test_wit_0_1_1");
    let output = adapters(&["show", old.to_str().unwrap(), "--input-len", "5"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(", contract 0.1.1)\n"), "{text}");
    assert!(text.contains("alternatives: (none)\n"), "{text}");
}

#[test]
fn show_of_an_unknown_adapter_is_a_one_line_error() {
    let output = adapters(&["show", "cobol"]);
    assert_eq!(output.status.code(), Some(78));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(
            "ecs-exec: error: adapter `cobol`: no such adapter (loaded: shell, rails, python, clojure)"
        ),
        "{message}"
    );
}

#[test]
fn check_passes_the_template_and_runs_sample_invocations() {
    let template = adapter_common::test_guest("ecs_exec_adapter_template");
    let output = adapters(&["check", template.to_str().unwrap()]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}{}", stderr(&output));
    assert!(text.contains("ok    info: template 0.1.0"), "{text}");
    assert!(
        text.contains("ok    loads as a component exporting hoop:ecs-exec/adapter@0.2.0\n"),
        "{text}"
    );
    assert!(text.contains("ok    serves `template-example`"), "{text}");
    assert!(
        text.contains("ok    `template-example`, one-off, streamed: stdin stream-base64"),
        "{text}"
    );
    assert!(
        text.contains("ok    (no pipe), interactive: stdin raw"),
        "{text}"
    );
    assert!(text.contains("passes the check ("), "{text}");
}

#[test]
fn check_rejects_other_contract_versions_and_non_components() {
    let other = adapter_common::test_guest("ecs_exec_test_other_wit");
    let output = adapters(&["check", other.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains(
            "built against hoop:ecs-exec/adapter@0.3.0, but this ecs-exec speaks \
             hoop:ecs-exec/adapter@0.2.x and @0.1.x"
        ),
        "{message}"
    );

    let old = adapter_common::test_guest("ecs_exec_test_wit_0_1_1");
    let output = adapters(&["check", old.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output)
            .contains("ok    loads as a component exporting hoop:ecs-exec/adapter@0.1.1\n"),
        "{}",
        stdout(&output)
    );

    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.wasm");
    std::fs::write(&text_file, "not wasm at all").unwrap();
    let output = adapters(&["check", text_file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("adapter `notes.wasm`: not a valid WebAssembly component"),
        "{}",
        stderr(&output)
    );
    assert!(!Path::new(&dir.path().join("missing.wasm")).exists());
    let missing = adapters(&["check", dir.path().join("missing.wasm").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(
        stderr(&missing).contains("cannot read"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn check_reports_program_claims_and_takeovers() {
    // The hostile adapter answers the fixed samples validly but refuses generated invocations
    // of the programs it declares, so `check` fails it; its claim on python3 is a takeover.
    let hostile = adapter_common::test_guest("ecs_exec_test_hostile");
    let output = adapters(&["check", hostile.to_str().unwrap()]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(65), "{text}{}", stderr(&output));
    assert!(text.contains("ok    serves `python3`"), "{text}");
    assert!(
        text.contains("ok    `python3`, one-off, streamed: stdin none ("),
        "{text}"
    );
    assert!(
        text.contains("WARN  takes over `python3` from the built-in `python`"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_64() {
    let output = adapters(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(adapters(&["--help"]).status.success());
}
