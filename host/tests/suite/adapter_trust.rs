//! Third-party adapters you can trust: visible takeovers, pins, `--explain`, the cache's
//! ownership checks, bounded loading, determinism, terminal hygiene, `check` as a gate, one CLI
//! front, and a later 0.1.x contract. Each test plays the attacker (or the careless operator)
//! and fails if the defence is gone. The binary runs with a private `XDG_CACHE_HOME` unless the
//! test is about the cache.

use crate::adapter_common;
use crate::e2e_support::World;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ecs_exec::adapter::{
    AdapterErrorKind, AdapterSet, CacheMode, Invocation, LoadOptions, PinSource, new_nonce,
};

/// Every run of the binary here must end within this; a hang fails the test instead.
const DEADLINE: Duration = Duration::from_secs(60);

fn sha256_hex(path: &Path) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &std::fs::read(path).unwrap(),
    ))
}

/// A directory holding copies of test guests under the given file names.
fn adapter_dir(guests: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (stem, name) in guests {
        std::fs::copy(adapter_common::test_guest(stem), dir.path().join(name)).unwrap();
    }
    dir
}

/// The binary with a shared warm cache, no AWS configuration and no inherited adapter settings.
fn ecs_exec(cache_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-exec"));
    command
        .env("XDG_CACHE_HOME", cache_home)
        .env_remove("ECS_EXEC_ADAPTER_DIR")
        .env_remove("ECS_EXEC_ADAPTER_PINS")
        .env_remove("CONNECTION_DEBUG")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

fn shared_cache_home() -> PathBuf {
    adapter_common::shared_cache_dir().join("xdg-trust")
}

/// Runs `command` with `stdin`, killing it (and failing) past [`DEADLINE`].
fn run(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    wait_within(child, DEADLINE)
}

fn wait_within(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--explain` for a pipe, with an endpoint nothing listens on: any AWS call would fail the run.
fn explain(cache_home: &Path, dir: Option<&Path>, words: &[&str], stdin: &[u8]) -> Output {
    let mut command = ecs_exec(cache_home);
    command.args([
        "--explain",
        "--cluster",
        "demo",
        "--service-name",
        "web",
        "--endpoint-url",
        "http://127.0.0.1:9",
    ]);
    if let Some(dir) = dir {
        command.arg("--adapter-dir").arg(dir);
    }
    command.args(words);
    run(&mut command, stdin)
}

#[test]
fn explain_prints_the_adapter_and_its_exact_plan_without_calling_aws() {
    let output = explain(
        &shared_cache_home(),
        None,
        &["--pipe", "rails runner -"],
        b"puts 6*7\n",
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "adapter: rails 0.1.0", "{stdout}");
    assert_eq!(lines[1], "source: embedded", "{stdout}");
    let sha = lines[2].strip_prefix("sha256: ").expect("a digest line");
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{stdout}"
    );
    assert!(stdout.contains("\ncommand: sh -c "), "{stdout}");
    assert!(
        stdout.contains("\nstdin: stream-bytes\n"),
        "input is streamed (raw, its length known) unless inlining is asked for: {stdout}"
    );
    let inlined = explain(
        &shared_cache_home(),
        None,
        &["--pipe", "rails runner -", "--inline-input"],
        b"puts 6*7\n",
    );
    assert!(
        text(&inlined.stdout).contains("\nstdin: inline\n"),
        "--inline-input lets a small input be inlined: {}",
        text(&inlined.stdout)
    );
    assert!(
        stdout.contains("\nexit-trailer: __ecs_exec_exit_"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ncontract: hoop:ecs-exec/adapter@0.2.0\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nstderr-tag: __ecs_exec_err_"),
        "a built-in's one-off keeps stderr apart: {stdout}"
    );
    assert!(
        stdout.contains("\nalternative 1: ready-marker __ecs_exec_ready_")
            && stdout.contains(", stdin stream-base64, stderr framed; notice: "),
        "and falls back to base64 where the container cannot take raw input: {stdout}"
    );
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
}

#[test]
fn a_takeover_is_never_silent_unless_it_is_pinned() {
    let dir = adapter_dir(&[("ecs_exec_test_hostile", "hostile.wasm")]);
    let hostile = dir.path().join("hostile.wasm");
    let digest = sha256_hex(&hostile);
    let output = explain(
        &shared_cache_home(),
        Some(dir.path()),
        &["--pipe", "python3 -"],
        b"",
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ecs-exec: warning: third-party adapter `hostile` ("),
        "{stderr}"
    );
    assert!(
        stderr.contains(&hostile.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains(&digest), "gives the digest: {stderr}");
    assert!(
        stderr.contains("`python3 -`") && stderr.contains("`python`"),
        "{stderr}"
    );
    assert!(
        text(&output.stdout).contains("takes over: `python3 -`"),
        "{}",
        text(&output.stdout)
    );

    // A pinned takeover is the operator's decision: quiet.
    std::fs::write(
        dir.path().join("ecs-exec.lock"),
        format!("{digest}  hostile.wasm\n"),
    )
    .unwrap();
    let output = explain(
        &shared_cache_home(),
        Some(dir.path()),
        &["--pipe", "python3 -"],
        b"",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("pinned: yes"));
}

#[test]
fn every_real_run_a_takeover_serves_says_so_before_it_runs() {
    let world = World::start();
    let dir = adapter_dir(&[("ecs_exec_test_hostile", "hostile.wasm")]);
    let mut command = world.ecs_exec();
    command
        .args(["--pipe", "python3"])
        .arg("--adapter-dir")
        .arg(dir.path());
    let outcome = world.run_within(command, b"print(6*7)\n", DEADLINE);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout_text().trim_end(), "hostile ran");
    let warnings: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("ecs-exec: warning: third-party adapter `hostile`"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", outcome.stderr);
}

#[test]
fn an_adapter_named_like_the_fallback_announces_every_run_it_takes_over() {
    // Named `shell` and claiming no program, it serves the runs nobody claims, the ones with no
    // `--pipe` first: the quietest takeover there is.
    let world = World::start();
    let dir = adapter_dir(&[("ecs_exec_test_impostor", "impostor.wasm")]);
    let impostor = dir.path().join("impostor.wasm");
    let digest = sha256_hex(&impostor);
    let mut command = world.ecs_exec();
    command.arg("--adapter-dir").arg(dir.path());
    let outcome = world.run_within(command, b"echo hello\n", DEADLINE);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout_text().trim_end(), "impostor ran");
    let warnings: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("ecs-exec: warning: third-party adapter `shell` ("))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", outcome.stderr);
    let warning = warnings[0];
    assert!(warning.contains("a run with no `--pipe`"), "{warning}");
    assert!(warning.contains("built-in adapter `shell`"), "{warning}");
    assert!(
        warning.contains(&impostor.display().to_string()) && warning.contains(&digest),
        "names the file and its digest: {warning}"
    );

    // A pipe no built-in claims falls back to `shell` too, so it is taken over as well.
    let output = explain(
        &shared_cache_home(),
        Some(dir.path()),
        &["--pipe", "some-tool --flag"],
        b"",
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("ecs-exec: warning: third-party adapter `shell` (")
            && stderr.contains("`some-tool --flag`"),
        "{stderr}"
    );
    assert!(
        text(&output.stdout)
            .contains("takes over: `some-tool --flag` from the built-in adapter `shell`"),
        "{}",
        text(&output.stdout)
    );

    // `adapters list` and `adapters check` say what the name takes over.
    let mut list = ecs_exec(&shared_cache_home());
    list.args(["adapters", "list", "--adapter-dir"])
        .arg(dir.path());
    let output = run(&mut list, b"");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("takeover: shell (")
                && line.contains("NOT PINNED")
                && line.contains("every run with no `--pipe`")),
        "{stdout}"
    );
    let output = check(&impostor, &[]);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("WARN  takes over the name `shell` from the built-in adapter: every run with no `--pipe`"),
        "{stdout}"
    );

    // Pinned, it is the operator's choice: the same run is quiet.
    std::fs::write(
        dir.path().join("ecs-exec.lock"),
        format!("{digest}  impostor.wasm\n"),
    )
    .unwrap();
    let mut command = world.ecs_exec();
    command.arg("--adapter-dir").arg(dir.path());
    let outcome = world.run_within(command, b"echo hello\n", DEADLINE);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout_text().trim_end(), "impostor ran");
    assert!(
        !outcome.stderr.contains("warning"),
        "a pinned takeover is quiet: {}",
        outcome.stderr
    );
}

#[test]
fn verbose_runs_log_the_explain_lines_before_execute_command() {
    let world = World::start();
    let mut command = world.ecs_exec();
    command.args(["-v", "--pipe", "rails runner -"]);
    let outcome = world.run_within(command, b"puts 1\n", DEADLINE);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    let position = |needle: &str| {
        outcome
            .stderr
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {}", outcome.stderr))
    };
    for line in [
        "adapter: rails 0.1.0",
        "source: embedded",
        "sha256: ",
        "command: sh -c ",
        "stdin: stream-bytes",
    ] {
        assert!(
            position(line) < position("session started"),
            "{line} before ExecuteCommand"
        );
    }
}

#[test]
fn once_pins_exist_unpinned_or_changed_files_are_refused() {
    let dir = adapter_dir(&[
        ("ecs_exec_adapter_template", "template.wasm"),
        ("ecs_exec_test_hostile", "hostile.wasm"),
    ]);
    let template_digest = sha256_hex(&dir.path().join("template.wasm"));
    let hostile_digest = sha256_hex(&dir.path().join("hostile.wasm"));
    let lock = dir.path().join("ecs-exec.lock");
    std::fs::write(&lock, format!("{template_digest}  template.wasm\n")).unwrap();
    let list = |pins: Option<&str>| {
        let mut command = ecs_exec(&shared_cache_home());
        command
            .args(["adapters", "list", "--adapter-dir"])
            .arg(dir.path());
        if let Some(pins) = pins {
            command.env("ECS_EXEC_ADAPTER_PINS", pins);
        }
        run(&mut command, b"")
    };
    let output = list(None);
    assert_eq!(output.status.code(), Some(78), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ecs-exec: error: adapter `hostile.wasm`: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("is not pinned") && stderr.contains(&hostile_digest),
        "{stderr}"
    );

    // The variable pins content too.
    let output = list(Some(&format!("sha256:{hostile_digest}")));
    assert!(output.status.success(), "{}", text(&output.stderr));

    // A pinned file that changes is refused, with both digests.
    std::fs::write(
        &lock,
        format!("{template_digest}  template.wasm\n{hostile_digest}  hostile.wasm\n"),
    )
    .unwrap();
    assert!(list(None).status.success());
    std::fs::copy(
        dir.path().join("template.wasm"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    std::fs::copy(
        adapter_common::test_guest("ecs_exec_test_wit_0_1_1"),
        dir.path().join("template.wasm"),
    )
    .unwrap();
    let output = list(None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("changed since it was pinned"), "{stderr}");
    assert!(stderr.contains(&template_digest), "{stderr}");
}

#[test]
fn a_planted_artifact_in_a_cache_others_can_write_is_never_loaded() {
    // A shared cache home, as on a multi-user machine or a careless CI image.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let dir = adapter_dir(&[
        ("ecs_exec_adapter_template", "template.wasm"),
        ("ecs_exec_test_hostile", "hostile.wasm"),
    ]);
    let plan_template = |verbose: bool| {
        let mut words = vec!["--adapter", "template", "--pipe", "template-example"];
        if verbose {
            words.push("-v");
        }
        explain(home.path(), Some(dir.path()), &words, b"x")
    };
    let warm = plan_template(false);
    assert!(warm.status.success(), "{}", text(&warm.stderr));
    assert!(
        text(&warm.stdout).contains("__template_exit_"),
        "{}",
        text(&warm.stdout)
    );

    // The attacker swaps the template's compiled code for the hostile adapter's.
    let cache = home.path().join("ecs-exec");
    let compiled = |digest: &str| {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(digest) && name.ends_with(".cwasm")
            })
            .unwrap_or_else(|| panic!("a cached artifact for {digest}"))
    };
    let template_artifact = compiled(&sha256_hex(&dir.path().join("template.wasm")));
    let hostile_artifact = compiled(&sha256_hex(&dir.path().join("hostile.wasm")));
    std::fs::copy(&hostile_artifact, &template_artifact).unwrap();

    // Planted by someone else: a cache directory others can write to is not read.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = plan_template(true);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("__template_exit_"),
        "the template's own code planned: {stdout}"
    );
    assert!(!stdout.contains("hostile ran"), "{stdout}");
    assert!(
        text(&output.stderr).contains("is not used: others can write to it"),
        "-v says why: {}",
        text(&output.stderr)
    );

    // A private directory, but the planted file itself is writable by others: not read either.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&template_artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = plan_template(true);
    assert!(
        text(&output.stdout).contains("__template_exit_"),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr).contains("others can write to it"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn only_regular_files_of_bounded_size_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.wasm");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let check_file = |path: &Path| {
        let mut command = ecs_exec(&shared_cache_home());
        command.args(["adapters", "check"]).arg(path);
        run(&mut command, b"")
    };
    let output = check_file(&fifo);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        text(&output.stderr).contains("is not a regular file (a FIFO)"),
        "{}",
        text(&output.stderr)
    );
    let mut list = ecs_exec(&shared_cache_home());
    list.args(["adapters", "list", "--adapter-dir"])
        .arg(dir.path());
    let output = run(&mut list, b"");
    assert_eq!(
        output.status.code(),
        Some(78),
        "a FIFO in the directory is not silently skipped"
    );

    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
    let output = check_file(&fifo);
    assert!(
        text(&output.stderr).contains("(a character device)"),
        "{}",
        text(&output.stderr)
    );

    let big = dir.path().join("big.wasm");
    let mut bytes = std::fs::read(adapter_common::test_guest("ecs_exec_adapter_template")).unwrap();
    bytes.resize(4 * 1024 * 1024 + 1, 0);
    std::fs::write(&big, bytes).unwrap();
    let output = check_file(&big);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        text(&output.stderr).contains("4194305 bytes, more than the 4194304 bytes"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn the_sandbox_gives_the_same_entropy_to_every_call() {
    let options = LoadOptions {
        adapter_files: vec![adapter_common::test_guest("ecs_exec_test_hostile")],
        ..adapter_common::options()
    };
    let entropy = |adapters: &AdapterSet| {
        let error = adapters
            .by_name("hostile")
            .unwrap()
            .plan(
                &Invocation::one_off_streamed(None, vec!["entropy".to_owned()], None),
                &new_nonce(),
            )
            .unwrap_err();
        assert!(
            matches!(error.kind, AdapterErrorKind::Refused(_)),
            "{error}"
        );
        error.to_string()
    };
    let first = AdapterSet::load(&options).unwrap();
    let seen = entropy(&first);
    assert_eq!(seen, entropy(&first), "two calls see the same stream");
    let second = AdapterSet::load(&options).unwrap();
    assert_eq!(seen, entropy(&second), "another load sees the same stream");
    assert!(seen.contains("now=0 "), "{seen}");
}

#[test]
fn guest_and_file_name_text_reaches_the_terminal_escaped() {
    let dir = adapter_dir(&[("ecs_exec_test_hostile", "hostile.wasm")]);
    let mut command = ecs_exec(&shared_cache_home());
    command
        .args(["adapters", "list", "--adapter-dir"])
        .arg(dir.path());
    let output = run(&mut command, b"");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(stdout.contains("\\u{202e}exe.txt\\u{200b}"), "{stdout}");

    let hostile = dir.path().join("hostile.wasm");
    let show = |behaviour: &str| {
        let mut command = ecs_exec(&shared_cache_home());
        command
            .args(["adapters", "show"])
            .arg(&hostile)
            .args(["--", behaviour]);
        run(&mut command, b"")
    };
    let output = show("bidi");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("\\u{202e}gnp.exe\\u{2066}x\\u{2069}\\u{200b} \\u{1b}]0;owned\\u{7}"),
        "{stderr}"
    );
    let output = show("bidi-command");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("command:      echo \\u{202e}gnp.exe \\u{1b}[2J"),
        "{stdout}"
    );

    for output in [&output, &show("bidi")] {
        for dangerous in ['\x1b', '\x07', '\u{202e}', '\u{2066}', '\u{200b}'] {
            assert!(
                !text(&output.stdout).contains(dangerous),
                "{dangerous:?} on stdout"
            );
            assert!(
                !text(&output.stderr).contains(dangerous),
                "{dangerous:?} on stderr"
            );
        }
    }

    // A file name with a newline and an escape sequence stays on one escaped line.
    let evil = dir.path().join("evil\n\x1b[31mname.wasm");
    std::fs::write(&evil, b"not wasm").unwrap();
    let mut command = ecs_exec(&shared_cache_home());
    command.args(["adapters", "check"]).arg(&evil);
    let output = run(&mut command, b"");
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("evil\\u{a}\\u{1b}[31mname.wasm"),
        "{stderr:?}"
    );
}

fn check(file: &Path, extra: &[&str]) -> Output {
    let mut command = ecs_exec(&shared_cache_home());
    command.args(["adapters", "check"]).arg(file).args(extra);
    run(&mut command, b"")
}

#[test]
fn check_fails_an_adapter_that_behaves_only_on_the_samples() {
    let output = check(&adapter_common::test_guest("ecs_exec_test_hostile"), &[]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(65), "{stdout}");
    assert!(stdout.contains("FAIL  `hostile"), "{stdout}");
    assert!(
        stdout.contains("refuses a program it declares: unknown behaviour"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARN  takes over `python3` from the built-in `python`"),
        "{stdout}"
    );
    assert!(stdout.contains("fails the check"), "{stdout}");
}

#[test]
fn check_stops_at_its_budget() {
    let output = check(
        &adapter_common::test_guest("ecs_exec_test_hostile"),
        &["--budget", "1"],
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(65), "{stdout}");
    assert!(
        stdout.contains("the check's budget of 1.0 s ran out"),
        "{stdout}"
    );
}

#[test]
fn check_passes_real_adapters_and_reports_the_cost_of_plans() {
    for stem in [
        "ecs_exec_adapter_template",
        "ecs_exec_adapter_shell",
        "ecs_exec_adapter_rails",
        "ecs_exec_adapter_python",
        "ecs_exec_adapter_clojure",
        "ecs_exec_test_wit_0_1_1",
    ] {
        let output = check(&adapter_common::test_guest(stem), &[]);
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{stem}: {stdout}{}",
            text(&output.stderr)
        );
        assert!(stdout.contains(" fuel)"), "{stem}: {stdout}");
        assert!(
            stdout.contains("48 of 48 generated invocations planned"),
            "{stem}: {stdout}"
        );
        assert!(
            stdout.contains("note  costliest plan: "),
            "{stem}: {stdout}"
        );
    }
}

#[test]
fn adapters_share_the_exec_front() {
    let home = shared_cache_home();
    let output = run(ecs_exec(&home).args(["adapters", "frobnicate"]), b"");
    assert_eq!(output.status.code(), Some(64));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ecs-exec: error: "), "{stderr}");

    // Global flags on either side of the subcommand.
    let dir = adapter_dir(&[("ecs_exec_adapter_template", "t.wasm")]);
    for words in [
        vec![
            "--adapter-dir",
            dir.path().to_str().unwrap(),
            "adapters",
            "list",
        ],
        vec![
            "adapters",
            "list",
            "--adapter-dir",
            dir.path().to_str().unwrap(),
        ],
        vec![
            "-v",
            "adapters",
            "--adapter-dir",
            dir.path().to_str().unwrap(),
            "list",
        ],
    ] {
        let output = run(ecs_exec(&home).args(&words), b"");
        assert!(
            output.status.success(),
            "{words:?}: {}",
            text(&output.stderr)
        );
        assert!(text(&output.stdout).contains("\ntemplate "), "{words:?}");
    }

    // `adapters list | head -0`: a closed pipe ends it quietly, as SIGPIPE would.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = ecs_exec(&home)
        .args(["adapters", "list"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_within(child, DEADLINE);
    assert_eq!(output.status.code(), Some(141), "{}", text(&output.stderr));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
}

#[test]
fn an_adapter_built_against_a_later_0_1_x_loads_and_runs() {
    let path = adapter_common::test_guest("ecs_exec_test_wit_0_1_1");
    let mut adapters = AdapterSet::load(&LoadOptions {
        adapter_files: vec![path.clone()],
        ..adapter_common::options()
    })
    .expect("a 0.1.1 adapter loads beside the 0.2 built-ins");
    let adapter = adapters.select(Some("next-minor"), None).unwrap();
    assert_eq!(adapter.info().version, "0.1.1");
    assert_eq!(adapter.contract(), "0.1.1");
    let plan = adapter
        .plan(
            &Invocation::one_off_with_input(None, vec![], b""),
            &new_nonce(),
        )
        .unwrap();
    assert!(
        plan.command.contains("built-against-0.1.1"),
        "{}",
        plan.command
    );

    assert_eq!((plan.stderr_tag, plan.alternatives), (None, Vec::new()));

    // End to end: its input (a script for `sh`, streamed as base64) runs, and the script's exit
    // status is ecs-exec's.
    let world = World::start();
    let mut command = world.ecs_exec();
    command.arg("--adapter").arg(&path);
    let outcome = world.run_within(command, b"echo from-0.1-input; exit 3\n", DEADLINE);
    assert_eq!(outcome.code(), 3, "{}", outcome.stderr);
    assert_eq!(
        outcome.stdout_text(),
        "built-against-0.1.1\nfrom-0.1-input\n",
        "{}",
        outcome.stderr
    );
    let mut command = world.ecs_exec();
    command.arg("--adapter").arg(&path);
    let outcome = world.run_within(command, b"", DEADLINE);
    assert_eq!(outcome.code(), 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout_text(), "built-against-0.1.1\n");
}

#[test]
fn a_directory_index_serves_warm_loads_and_notices_changed_files() {
    let cache = tempfile::tempdir().unwrap();
    let dir = adapter_dir(&[("ecs_exec_adapter_template", "t.wasm")]);
    let options = LoadOptions {
        adapter_dir: Some(dir.path().to_owned()),
        cache: CacheMode::Dir(cache.path().to_owned()),
        pins: PinSource::Value(String::new()),
        ..LoadOptions::default()
    };
    let cold = AdapterSet::load(&options).unwrap();
    assert_eq!(cold.adapters().last().unwrap().info().name, "template");
    let index_files = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("dir-index-")
        })
        .count();
    assert_eq!(index_files, 1);
    let warm = AdapterSet::load(&options).unwrap();
    assert_eq!(
        warm.adapters().last().unwrap().sha256(),
        cold.adapters().last().unwrap().sha256()
    );

    // Another adapter under the same name: the index must not serve the old one's info.
    std::fs::copy(
        adapter_common::test_guest("ecs_exec_test_wit_0_1_1"),
        dir.path().join("t.wasm"),
    )
    .unwrap();
    let changed = AdapterSet::load(&options).unwrap();
    assert_eq!(changed.adapters().last().unwrap().info().name, "next-minor");
}

#[test]
fn a_file_swapped_after_it_was_chosen_is_not_run() {
    // A warm index: the chosen adapter's file is read only when it is about to run.
    let dir = adapter_dir(&[("ecs_exec_adapter_template", "t.wasm")]);
    let cache = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        adapter_dir: Some(dir.path().to_owned()),
        cache: CacheMode::Dir(cache.path().to_owned()),
        pins: PinSource::Value(String::new()),
        ..LoadOptions::default()
    };
    drop(AdapterSet::load(&options).unwrap());
    let warm = AdapterSet::load(&options).unwrap();
    std::fs::copy(
        adapter_common::test_guest("ecs_exec_test_hostile"),
        dir.path().join("t.wasm"),
    )
    .unwrap();
    let error = warm
        .by_name("template")
        .unwrap()
        .plan(
            &Invocation::one_off_with_input(None, vec![], b""),
            &new_nonce(),
        )
        .unwrap_err();
    assert!(
        matches!(error.kind, AdapterErrorKind::ChangedWhileLoading { .. }),
        "{error}"
    );
}
