//! `ecs-exec completions SHELL` and `ecs-exec man` through the real binary: what a user pipes
//! into their shell's completion directory or `man -l -`.

use std::process::{Command, Output};

fn ecs_exec(args: &[&str]) -> Output {
    ecs_exec_emulator::testing::output(
        Command::new(env!("CARGO_BIN_EXE_ecs-exec"))
            .args(args)
            .env_clear()
            .env("HOME", env!("CARGO_TARGET_TMPDIR")),
    )
}

#[test]
fn the_bash_completion_script_completes_the_flags_and_commands() {
    let output = ecs_exec(&["completions", "bash"]);
    assert_eq!(output.status.code(), Some(0));
    let script = String::from_utf8_lossy(&output.stdout);
    assert!(script.contains("complete -F _ecs__exec"), "{script}");
    for word in [
        "--cluster",
        "--service-name",
        "--pipe",
        "adapters",
        "completions",
        "doctor",
        "cp",
    ] {
        assert!(script.contains(word), "lacks {word}");
    }
}

#[test]
fn the_man_page_documents_flags_and_exit_codes() {
    let output = ecs_exec(&["man"]);
    assert_eq!(output.status.code(), Some(0));
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(page.contains(".TH ecs-exec 1"), "{page}");
    assert!(page.contains(r"\-\-cluster"), "{page}");
    assert!(page.contains("Exit codes:"), "{page}");
    assert!(
        page.contains("ecs\\-exec cp"),
        "the cp command is listed: {page}"
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let output = ecs_exec(&["completions", "cmd.exe"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ecs-exec: error: "), "{stderr}");
}

#[test]
fn bash_completes_a_flag_prefix_with_the_script() {
    let script = ecs_exec(&["completions", "bash"]).stdout;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ecs-exec.bash");
    std::fs::write(&path, script).expect("write the script");
    // What bash does on `ecs-exec --clu<TAB>`.
    let probe = format!(
        "source {}; COMP_WORDS=(ecs-exec --clu); COMP_CWORD=1; COMP_LINE='ecs-exec --clu'; \
         COMP_POINT=14; _ecs__exec ecs-exec --clu ecs-exec; echo \"${{COMPREPLY[*]}}\"",
        path.display()
    );
    let output = ecs_exec_emulator::testing::output(Command::new("bash").args(["-c", &probe]));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "--cluster",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
