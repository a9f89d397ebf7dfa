//! A first run on a fresh machine: no adapter cache and a home nobody may write to. The
//! built-in adapters are compiled into the binary, so such a run compiles nothing, writes
//! nothing, and works as a warm one does.

use std::path::Path;
use std::time::Duration;

use crate::e2e_support::World;

const LIMIT: Duration = Duration::from_secs(60);

/// Every path under `dir` (empty when the directory is empty or absent).
fn contents(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            pending.push(entry.path());
            found.push(entry.path());
        }
    }
    found
}

#[test]
fn a_run_with_no_cache_and_a_read_only_home_uses_the_precompiled_builtin() {
    let world = World::start();
    let home = tempfile::tempdir().unwrap();
    let mut readonly = std::fs::metadata(home.path()).unwrap().permissions();
    readonly.set_readonly(true);
    std::fs::set_permissions(home.path(), readonly).unwrap();
    let mut command = world.ecs_exec();
    command
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .arg("-v");
    let outcome = world.run_within(command, b"echo hi", LIMIT);
    assert_eq!(outcome.stdout, b"hi\n", "stderr: {}", outcome.stderr);
    assert_eq!(outcome.code(), 0, "stderr: {}", outcome.stderr);
    let trace = &outcome.stderr;
    assert!(
        trace.contains("built-in adapter loaded precompiled adapter=\"shell\"")
            || trace.contains("built-in adapter loaded precompiled adapter=shell"),
        "the shell adapter came from its embedded compiled form: {trace}"
    );
    assert!(
        !trace.contains("compiling it"),
        "nothing was compiled: {trace}"
    );
    // Root ignores the mode bits, so check that nothing was written rather than rely on them.
    assert_eq!(contents(home.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_run_served_by_a_builtin_leaves_the_cache_directory_empty() {
    let world = World::start();
    let cache = tempfile::tempdir().unwrap();
    for pipe in [None, Some("python3"), Some("cat")] {
        let mut command = world.ecs_exec();
        command.env("XDG_CACHE_HOME", cache.path());
        if let Some(pipe) = pipe {
            command.args(["--pipe", pipe]);
        }
        let input: &[u8] = match pipe {
            None => b"echo hi",
            Some("python3") => b"print('hi')",
            Some(_) => b"hi\n",
        };
        let outcome = world.run_within(command, input, LIMIT);
        assert_eq!(outcome.code(), 0, "{pipe:?}: {}", outcome.stderr);
        assert_eq!(outcome.stdout, b"hi\n", "{pipe:?}");
    }
    assert_eq!(contents(cache.path()), Vec::<std::path::PathBuf>::new());
}
