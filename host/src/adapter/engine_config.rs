//! The wasmtime engine configuration, written once for its two users.
//!
//! `host/build.rs` compiles the built-in adapters ahead of time with it (as a `#[path]` module),
//! and the sandbox loads those artifacts, and compiles third-party adapters, with it. wasmtime
//! refuses an artifact whose engine settings (fuel, epochs, memory layout, wasm features) differ
//! from the loading engine's, so the two must never drift: this file is the only place they are
//! set. It may use `wasmtime` and `std` only, nothing of the crate.

/// The engine settings every adapter is compiled and run with.
///
/// `target` is `None` at run time: compile for this machine, using every CPU feature it has. The
/// build script passes the target triple instead, which makes cranelift assume only the
/// architecture's baseline features (for x86_64, SSE2), so an artifact built on one machine
/// loads on any other of the same architecture and operating system.
pub(crate) fn engine_config(target: Option<&str>) -> wasmtime::Result<wasmtime::Config> {
    let mut config = wasmtime::Config::new();
    // Fuel bounds a guest's CPU, epochs its wall-clock time; canonical NaNs and deterministic
    // relaxed SIMD make a guest's answers the same on every machine (see `sandbox.rs`).
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true);
    if let Some(target) = target {
        config.target(target)?;
    }
    Ok(config)
}
