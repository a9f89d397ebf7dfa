//! Helpers shared by the `adapter_*` integration tests (a module directory, so not a test target itself).

#![allow(dead_code)]

use std::path::PathBuf;

use ecs_exec::adapter::{AdapterSet, CacheMode, LoadOptions};

/// One compiled-adapter cache for every test binary of this crate, so each adapter is compiled
/// once per target directory rather than once per test.
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("adapter-cache")
}

/// Built test-only guest components (the template and the hostile ones).
pub fn test_guest(file_stem: &str) -> PathBuf {
    PathBuf::from(env!("ECS_EXEC_TEST_GUESTS_DIR")).join(format!("{file_stem}.wasm"))
}

/// Load options using the shared cache.
pub fn options() -> LoadOptions {
    LoadOptions {
        cache: CacheMode::Dir(shared_cache_dir()),
        ..LoadOptions::default()
    }
}

/// The built-in adapters, loaded through the shared cache.
pub fn builtin() -> AdapterSet {
    AdapterSet::load(&options()).expect("the built-in adapters load")
}
