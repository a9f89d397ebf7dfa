//! Hostile and broken adapters: each must end in a one-line error naming the adapter and the
//! cause, promptly, with the host (and the same `AdapterSet`) still working afterwards.
//!
//! The hostile guest (`guest/test-hostile`) picks its misbehaviour from its first argument; the
//! other-WIT guest is built against `hoop:ecs-exec@0.3.0`, a version this host does not speak.
//! Both are test-only components loaded from their paths like any third-party adapter.

use crate::adapter_common;

use std::time::Instant;

use ecs_exec::adapter::{
    AdapterErrorKind, AdapterSet, Invocation, LoadOptions, StdinMode, new_nonce,
};

fn hostile_set() -> AdapterSet {
    let options = LoadOptions {
        adapter_files: vec![adapter_common::test_guest("ecs_exec_test_hostile")],
        ..adapter_common::options()
    };
    AdapterSet::load(&options).expect("the hostile adapter loads (it only misbehaves when asked)")
}

/// Asks the hostile adapter to misbehave; returns the one-line error.
fn misbehave(adapters: &AdapterSet, behaviour: &str, extra: &[&str]) -> (AdapterErrorKind, String) {
    let adapter = adapters.by_name("hostile").expect("hostile is loaded");
    let mut args = vec![behaviour.to_owned()];
    args.extend(extra.iter().map(|word| (*word).to_owned()));
    let started = Instant::now();
    let error = adapter
        .plan(
            &Invocation::one_off_streamed(Some("hostile".to_owned()), args, None),
            &new_nonce(),
        )
        .expect_err("a misbehaving adapter must fail");
    let line = error.to_string();
    eprintln!("{behaviour}: {:?} after {:?}", line, started.elapsed());
    assert!(
        line.starts_with("adapter `hostile`: "),
        "names the adapter: {line}"
    );
    assert!(
        !line.contains('\n') && !line.contains('\x1b'),
        "one printable line: {line:?}"
    );
    (error.kind, line)
}

/// (behaviour, the error kind it must produce, text the message must contain)
type Case = (&'static str, fn(&AdapterErrorKind) -> bool, &'static str);

#[test]
fn each_kind_of_misbehaviour_is_a_clear_one_line_error() {
    let adapters = hostile_set();
    let cases: [Case; 12] = [
        (
            "loop",
            |kind| matches!(kind, AdapterErrorKind::OutOfFuel(_)),
            "ran out of fuel",
        ),
        (
            "alloc",
            |kind| matches!(kind, AdapterErrorKind::MemoryLimit(_)),
            "exceeded its memory limit of 32 MiB",
        ),
        (
            "trap",
            |kind| matches!(kind, AdapterErrorKind::Trap(_)),
            "crashed: ",
        ),
        (
            "panic",
            |kind| matches!(kind, AdapterErrorKind::Panic(_)),
            "panicked: hostile guest panics on purpose",
        ),
        (
            "sleep",
            |kind| matches!(kind, AdapterErrorKind::TimedOut(_)),
            "did not finish within 500 ms",
        ),
        (
            "oversized",
            |kind| matches!(kind, AdapterErrorKind::InvalidPlan(_)),
            "command of 4194304 bytes exceeds 16384",
        ),
        (
            "nul",
            |kind| matches!(kind, AdapterErrorKind::InvalidPlan(_)),
            "command contains NUL",
        ),
        (
            "empty",
            |kind| matches!(kind, AdapterErrorKind::InvalidPlan(_)),
            "empty command",
        ),
        (
            "no-marker",
            |kind| matches!(kind, AdapterErrorKind::InvalidPlan(_)),
            "stream-base64 needs a ready marker",
        ),
        (
            "bad-trailer",
            |kind| matches!(kind, AdapterErrorKind::InvalidPlan(_)),
            "exit trailer must be",
        ),
        (
            "bad-tag",
            |kind| matches!(kind, AdapterErrorKind::InvalidPlan(_)),
            "stderr tag does not contain the nonce",
        ),
        (
            "long-error",
            |kind| matches!(kind, AdapterErrorKind::Refused(_)),
            "\\u{1b}[31meeee",
        ),
    ];
    for (behaviour, is_expected_kind, expected_text) in cases {
        let (kind, line) = misbehave(&adapters, behaviour, &[]);
        assert!(
            is_expected_kind(&kind),
            "{behaviour}: unexpected kind {kind:?}"
        );
        assert!(line.contains(expected_text), "{behaviour}: {line}");
        assert!(
            line.len() < 600,
            "{behaviour}: the message is cut short: {} bytes",
            line.len()
        );
    }
    // The host is unharmed: the same set still plans, with the same adapter and the others.
    let valid = adapters.by_name("hostile").unwrap().plan(
        &Invocation::one_off_streamed(None, vec![], None),
        &new_nonce(),
    );
    assert!(valid.unwrap().command.contains("echo hostile ran"));
    let shell = adapters.by_name("shell").unwrap();
    assert!(
        shell
            .plan(
                &Invocation::one_off_streamed(None, vec![], None),
                &new_nonce()
            )
            .is_ok()
    );
}

#[test]
fn a_guest_sees_no_environment_arguments_files_clock_or_network() {
    // A loopback listener the guest is told to connect to: the sandbox must refuse it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let adapters = hostile_set();
    let (kind, line) = misbehave(&adapters, "snoop", &[&target]);
    assert!(matches!(kind, AdapterErrorKind::Refused(_)), "{kind:?}");
    for seen_nothing in [
        "env=[]",
        "args=[]",
        "passwd=Err(",
        "cwd=Err(",
        "root=Err(",
        "now=0 ",
        "tcp=Some(Err(",
    ] {
        assert!(
            line.contains(seen_nothing),
            "expected {seen_nothing} in {line}"
        );
    }
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the guest must not have connected"
    );
}

#[test]
fn an_adapter_built_against_another_wit_version_is_refused() {
    let path = adapter_common::test_guest("ecs_exec_test_other_wit");
    let error = AdapterSet::load(&LoadOptions {
        adapter_files: vec![path],
        ..adapter_common::options()
    })
    .unwrap_err();
    let line = error.to_string();
    assert!(
        matches!(error.kind, AdapterErrorKind::ContractVersion { .. }),
        "{line}"
    );
    assert_eq!(
        line,
        "adapter `ecs_exec_test_other_wit.wasm`: built against hoop:ecs-exec/adapter@0.3.0, \
         but this ecs-exec speaks hoop:ecs-exec/adapter@0.2.x and @0.1.x"
    );
}

#[test]
fn every_field_of_a_0_2_plan_reaches_the_host() {
    let adapters = hostile_set();
    let adapter = adapters.by_name("hostile").unwrap();
    assert_eq!(adapter.contract(), "0.2.0");
    let nonce = new_nonce();
    let plan = adapter
        .plan(
            &Invocation::one_off_streamed(None, vec!["framed".to_owned()], None),
            &nonce,
        )
        .unwrap();
    assert_eq!(plan.stdin, StdinMode::StreamChunks);
    assert_eq!(plan.ready_marker, Some(format!("r{nonce}:")));
    assert_eq!(plan.stderr_tag, Some(format!("e{nonce}:")));
    let alternatives: Vec<(String, StdinMode, bool, &str)> = plan
        .alternatives
        .iter()
        .map(|way| {
            (
                way.ready_marker.clone(),
                way.stdin,
                way.stderr_framed,
                way.notice.as_str(),
            )
        })
        .collect();
    let base64 = StdinMode::StreamBase64;
    let (dd, od) = (
        "no dd here: input goes as base64",
        "no od here: stderr is merged into stdout",
    );
    assert_eq!(
        alternatives,
        [
            (format!("b{nonce}:"), base64, true, dd),
            (format!("m{nonce}:"), base64, false, od),
        ]
    );
    // The second alternative merges stderr: the way it announces carries no tag.
    assert_eq!(plan.alternative_way(1).unwrap().stderr_tag, None);
}

#[test]
fn files_that_are_not_components_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0").unwrap(); // a core module, not a component
    let error = AdapterSet::load(&LoadOptions {
        adapter_dir: Some(dir.path().to_owned()),
        ..adapter_common::options()
    })
    .unwrap_err();
    assert!(
        matches!(error.kind, AdapterErrorKind::Compile(_)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("adapter `garbage.wasm`: not a valid WebAssembly component"),
        "{error}"
    );
    let missing = dir.path().join("missing.wasm");
    let error = AdapterSet::load(&LoadOptions {
        adapter_files: vec![missing],
        ..adapter_common::options()
    })
    .unwrap_err();
    assert!(
        matches!(error.kind, AdapterErrorKind::Read { .. }),
        "{error}"
    );
}

#[test]
fn a_third_party_adapter_wins_the_programs_it_shares_with_a_builtin_one() {
    let mut adapters = hostile_set();
    assert_eq!(
        adapters
            .select(Some("python3 -"), None)
            .unwrap()
            .info()
            .name,
        "hostile"
    );
    assert_eq!(
        adapters.select(Some("python -"), None).unwrap().info().name,
        "python"
    );
    assert_eq!(
        adapters.select(Some("rails c"), None).unwrap().info().name,
        "rails"
    );
    assert_eq!(
        adapters
            .select(Some("python3"), Some("python"))
            .unwrap()
            .info()
            .name,
        "python"
    );
    assert_eq!(adapters.select(None, None).unwrap().info().name, "shell");
    assert_eq!(
        adapters
            .select(Some("node -e 1"), None)
            .unwrap()
            .info()
            .name,
        "shell",
        "unclaimed pipes fall back"
    );
    let template = adapter_common::test_guest("ecs_exec_adapter_template");
    let chosen = adapters
        .select(Some("python3"), Some(template.to_str().unwrap()))
        .unwrap();
    assert_eq!(chosen.info().name, "template");
    let unknown = adapters.select(None, Some("nope")).unwrap_err().to_string();
    assert!(
        unknown.starts_with(
            "adapter `nope`: no such adapter (loaded: shell, rails, python, clojure, hostile"
        ),
        "{unknown}"
    );
}

#[test]
fn warm_cache_loads_give_the_same_adapters_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        cache: ecs_exec::adapter::CacheMode::Dir(dir.path().to_owned()),
        adapter_files: vec![adapter_common::test_guest("ecs_exec_adapter_template")],
        ..LoadOptions::default()
    };
    let cold = AdapterSet::load(&options).unwrap();
    assert_eq!(
        cold.compilations(),
        1,
        "only the third-party adapter compiles"
    );
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(
        cached.len(),
        2,
        "a compiled form and an info record for the third-party adapter alone: {cached:?}"
    );
    let warm = AdapterSet::load(&options).unwrap();
    let names = |set: &AdapterSet| {
        set.adapters()
            .iter()
            .map(|adapter| adapter.info().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&cold), names(&warm));
    let invocation =
        Invocation::one_off_with_input(Some("python3".to_owned()), vec![], b"print(1)\n");
    let plan = warm
        .by_name("template")
        .unwrap()
        .plan(&invocation, "0123456789abcdef0123")
        .unwrap();
    assert!(!plan.command.is_empty());
    assert_eq!(
        warm.compilations(),
        0,
        "the warm load deserialized the cached form"
    );
}
