//! The wasmtime sandbox: one engine, deny-all WASI, and a fresh bounded store for every call.
//!
//! Owns the engine configuration (fuel and epoch interruption on, deterministic NaNs and relaxed
//! SIMD), the linker (WASI bound to an empty context: no env, args, files, network or stdin,
//! frozen clocks, a fixed random stream, stderr captured in a small buffer only to quote a panic
//! message), and the limits: fuel, memory and a wall-clock deadline per call, and a wall-clock
//! bound on compiling. Each call and each compilation runs on its own short-lived thread, so a
//! guest blocked inside a host call (a sleep) or a component that is slow to compile cannot hold
//! the caller past its bound, and no caller's async runtime is ever entered by WASI. It must not
//! give a guest anything beyond what `wit/adapter.wit` (or `wit/0.1/adapter.wit`) passes. Which
//! contract a component was built against comes from the interface it exports (`versions.rs`),
//! and picks its bindings (`bindings.rs`); the limits and the store per call are the same for
//! every version.
//!
//! Determinism: the same component asked the same question answers the same on every run and
//! machine. Clocks are frozen at zero; `wasi:random/random`, `wasi:random/insecure` and
//! `wasi:random/insecure-seed` return a fixed stream (the same for every call, so a guest's hash
//! maps iterate the same way each time); floating-point NaN bit patterns are canonicalised and
//! relaxed SIMD uses its deterministic semantics, so x86-64 and aarch64 agree. Nothing else that
//! varies is linked: no environment, arguments, files, sockets, stdin or terminal. Only a call's
//! wall-clock bound depends on the machine (whether a slow call finishes in time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Bound, v0_1, v0_2};
use super::contract::{AdapterInfo, Invocation, Plan, one_line};
use super::engine_config::engine_config;
use super::error::AdapterErrorKind;
use super::versions::{self, Contract, Export};

/// A component checked against the contract it was built against, and pre-instantiated with
/// that contract's bindings.
#[derive(Clone)]
pub(crate) struct Prepared {
    /// The contract version its export names (`0.1.1`, `0.2.0`).
    contract: String,
    bound: Bound,
}

/// What one call into a guest cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Fuel used (roughly wasm instructions), instantiation included.
    pub fuel: u64,
    /// Wall-clock time, instantiation included.
    pub elapsed: Duration,
}

/// Bounds for every call into an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly wasm instructions) for one call, instantiation included.
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time for one call, instantiation included.
    pub wall_time: Duration,
    /// Wall-clock time for compiling a component that is not cached.
    pub compile_time: Duration,
}

impl Default for Limits {
    /// Generous for a real adapter (a plan costs well under a million units and a few hundred
    /// KiB), small enough that a runaway guest fails in a fraction of a second.
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            memory_bytes: 32 * 1024 * 1024,
            wall_time: Duration::from_millis(500),
            // Our adapters compile in about 0.1 s each; a 4 MB hostile one took 19 s.
            compile_time: Duration::from_secs(5),
        }
    }
}

/// How long past the deadline the caller waits for the guest thread to report an interrupt.
const GRACE: Duration = Duration::from_millis(100);
/// Captured guest stderr (only used to quote a panic message).
const STDERR_CAPACITY: usize = 4096;

/// One engine and linker, shared by every adapter and call.
pub(crate) struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: Limits,
    /// How many components [`Sandbox::compile`] compiled (tests check that a load compiled none).
    compilations: AtomicUsize,
}

impl Sandbox {
    pub(crate) fn new(limits: Limits) -> Result<Self, AdapterErrorKind> {
        let engine = engine_config(None)
            .and_then(|config| Engine::new(&config))
            .map_err(|error| AdapterErrorKind::Host(error.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|error| AdapterErrorKind::Host(error.to_string()))?;
        Ok(Self {
            engine,
            linker,
            limits,
            compilations: AtomicUsize::new(0),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles wasm bytes (slow: cranelift) on a worker thread, waiting at most
    /// `limits.compile_time`. Compilation cannot be interrupted: past the bound the thread is
    /// left to finish on its own and its result is dropped, and the run goes on without it.
    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<Component, AdapterErrorKind> {
        // Binary only: wasmtime would also try to parse anything else as WAT text.
        if !wasm.starts_with(b"\0asm") {
            return Err(AdapterErrorKind::Compile(
                "not a WebAssembly binary (no \\0asm header)".to_owned(),
            ));
        }
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let (engine, wasm) = (self.engine.clone(), wasm.to_vec());
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("ecs-exec-compile".to_owned())
            .spawn(move || {
                let compiled = Component::new(&engine, &wasm)
                    .map_err(|error| AdapterErrorKind::Compile(error_line(&error)));
                let _ = sender.send(compiled);
            })
            .map_err(|error| {
                AdapterErrorKind::Host(format!("cannot start the compile thread: {error}"))
            })?;
        match receiver.recv_timeout(self.limits.compile_time) {
            Ok(compiled) => compiled,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(AdapterErrorKind::CompileTimedOut(self.limits.compile_time))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(AdapterErrorKind::Host(
                "the compile thread stopped without an answer".to_owned(),
            )),
        }
    }

    /// How many components this sandbox has compiled so far.
    pub(crate) fn compilations(&self) -> usize {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Checks the component's exports and imports against the contract it names, one this host
    /// speaks, and pre-instantiates it with that contract's bindings.
    pub(crate) fn prepare(&self, component: &Component) -> Result<Prepared, AdapterErrorKind> {
        let component_type = component.component_type();
        let exports: Vec<String> = component_type
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let classified: Vec<(&String, Export<'_>)> = exports
            .iter()
            .map(|name| (name, versions::classify_export(name)))
            .collect();
        // The newest contract wins should a component export our interface twice.
        let spoken = classified
            .iter()
            .filter_map(|(_, export)| match export {
                Export::Spoken(contract, version) => Some((*contract, (*version).to_owned())),
                _ => None,
            })
            .max_by_key(|(contract, _)| *contract);
        let unspoken = classified
            .iter()
            .find(|(_, export)| *export == Export::Unspoken);
        if let (None, Some((name, _))) = (&spoken, unspoken) {
            return Err(AdapterErrorKind::ContractVersion {
                found: one_line(name, 100),
                expected: versions::SPOKEN,
            });
        }
        let instance_pre = self.linker.instantiate_pre(component).map_err(|error| {
            AdapterErrorKind::Contract(format!(
                "imports something the sandbox does not provide: {}",
                error_line(&error)
            ))
        })?;
        let exported = || {
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                one_line(&exports.join(", "), 200)
            }
        };
        let Some((contract, version)) = spoken else {
            return Err(AdapterErrorKind::Contract(format!(
                "does not export {} (exports {})",
                versions::SPOKEN,
                exported()
            )));
        };
        let mismatch = |error: wasmtime::Error| {
            AdapterErrorKind::Contract(format!(
                "its export does not match {}@{version} (exports {}): {}",
                versions::INTERFACE,
                exported(),
                error_line(&error)
            ))
        };
        let bound = match contract {
            Contract::V0_1 => {
                Bound::V0_1(v0_1::PipeAdapterPre::new(instance_pre).map_err(mismatch)?)
            }
            Contract::V0_2 => {
                Bound::V0_2(v0_2::PipeAdapterPre::new(instance_pre).map_err(mismatch)?)
            }
        };
        Ok(Prepared {
            contract: version,
            bound,
        })
    }

    /// Calls `describe()` in a fresh store; the result is not validated yet.
    pub(crate) fn call_info(&self, prepared: &Prepared) -> Result<AdapterInfo, AdapterErrorKind> {
        let (bound, contract) = (prepared.bound.clone(), prepared.contract.clone());
        self.call(move |store| bound.describe(store, contract)).0
    }

    /// Calls `plan-run()` in a fresh store; `Err(message)` is the guest's own refusal. Not
    /// validated. The cost is known when the guest ran to an answer or a trap.
    pub(crate) fn call_plan(
        &self,
        prepared: &Prepared,
        invocation: &Invocation,
        nonce: &str,
    ) -> (Result<Result<Plan, String>, AdapterErrorKind>, Option<Cost>) {
        let (bound, invocation, nonce) =
            (prepared.bound.clone(), invocation.clone(), nonce.to_owned());
        self.call(move |store| bound.plan_run(store, &invocation, &nonce))
    }

    /// Runs `body` (which instantiates the component and calls it) in a fresh bounded store on a
    /// worker thread.
    fn call<R: Send + 'static>(
        &self,
        body: impl FnOnce(&mut Store<GuestState>) -> wasmtime::Result<R> + Send + 'static,
    ) -> (Result<R, AdapterErrorKind>, Option<Cost>) {
        let (engine, limits) = (self.engine.clone(), self.limits);
        let (sender, receiver) = mpsc::sync_channel(1);
        let started = Instant::now();
        let deadline = started + limits.wall_time;
        let spawned = std::thread::Builder::new()
            .name("ecs-exec-adapter".to_owned())
            .spawn(move || {
                let mut cost = None;
                let outcome = new_store(&engine, limits, deadline).and_then(|mut store| {
                    let result = body(&mut store);
                    cost = store.get_fuel().ok().map(|left| Cost {
                        fuel: limits.fuel.saturating_sub(left),
                        elapsed: started.elapsed(),
                    });
                    result.map_err(|error| classify(&error, store.data(), limits))
                });
                // The caller may have given up waiting; then nobody needs the answer.
                let _ = sender.send((outcome, cost));
            });
        if let Err(error) = spawned {
            let reason = format!("cannot start the adapter thread: {error}");
            return (Err(AdapterErrorKind::Host(reason)), None);
        }
        match receiver.recv_timeout(limits.wall_time + GRACE) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Stop a guest still running wasm (its epoch callback sees its deadline passed);
                // one blocked in a host call finishes on its own thread, holding nothing of ours.
                self.engine.increment_epoch();
                (Err(AdapterErrorKind::TimedOut(limits.wall_time)), None)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => (
                Err(AdapterErrorKind::Host(
                    "the adapter thread stopped without an answer".to_owned(),
                )),
                None,
            ),
        }
    }
}

/// A fresh store: empty WASI, memory cap, fuel, and an epoch deadline checked against `deadline`.
fn new_store(
    engine: &Engine,
    limits: Limits,
    deadline: Instant,
) -> Result<Store<GuestState>, AdapterErrorKind> {
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let wasi = WasiCtx::builder()
        .stderr(stderr.clone())
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .secure_random(FixedStream::new(SECURE_SEED))
        .insecure_random(FixedStream::new(INSECURE_SEED))
        .insecure_random_seed(INSECURE_SEED_VALUE)
        .build();
    let memory = StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .table_elements(100_000)
        .instances(100)
        .tables(100)
        .memories(10)
        .trap_on_grow_failure(true)
        .build();
    let state = GuestState {
        wasi,
        table: ResourceTable::new(),
        limiter: MemoryGuard {
            limits: memory,
            refused: false,
        },
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store
        .set_fuel(limits.fuel)
        .map_err(|error| AdapterErrorKind::Host(error.to_string()))?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
    Ok(store)
}

/// Seeds of the fixed random streams: arbitrary constants, the same in every release so that
/// plans stay reproducible.
const SECURE_SEED: u64 = 0x6563_732d_6578_6563; // "ecs-exec"
const INSECURE_SEED: u64 = 0x6164_6170_7465_7273; // "adapters"
const INSECURE_SEED_VALUE: u128 = 0x686f_6f70_3a65_6373_2d65_7865_633a_3031;

/// A deterministic byte stream (splitmix64) standing in for `wasi:random`: a guest gets bytes
/// that look random, and the same ones on every call, run and machine. It is not a secret: an
/// adapter has nothing to keep secret, and the nonce it needs comes from the host.
struct FixedStream {
    state: u64,
}

impl FixedStream {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl rand::TryRng for FixedStream {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// Turns a failed call into the cause a user can act on.
fn classify(error: &wasmtime::Error, state: &GuestState, limits: Limits) -> AdapterErrorKind {
    if state.limiter.refused {
        return AdapterErrorKind::MemoryLimit(limits.memory_bytes);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => AdapterErrorKind::OutOfFuel(limits.fuel),
        Some(Trap::Interrupt) => AdapterErrorKind::TimedOut(limits.wall_time),
        Some(trap) => match panic_message(&state.stderr.contents()) {
            Some(message) => AdapterErrorKind::Panic(message),
            None => AdapterErrorKind::Trap(one_line(&trap.to_string(), 200)),
        },
        None => AdapterErrorKind::Trap(error_line(error)),
    }
}

/// The message of a Rust panic as the guest's standard library printed it to stderr.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let mut lines = text.lines();
    lines.find(|line| line.contains("panicked at"))?;
    lines.next().map(|message| one_line(message, 200))
}

/// An error and its causes on one printable line (the first line of each).
fn error_line(error: &wasmtime::Error) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|cause| {
            cause
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    one_line(&causes.join(": "), 300)
}

/// What a store holds: the empty WASI context and the limits.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryGuard,
    stderr: MemoryOutputPipe,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `StoreLimits` that remembers whether it refused memory, to name the cause of the trap.
struct MemoryGuard {
    limits: StoreLimits,
    refused: bool,
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let answer = self.limits.memory_growing(current, desired, maximum);
        self.refused |= !matches!(answer, Ok(true));
        answer
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Clocks that never move: a guest learns nothing from time (and cannot pace itself with it).
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_the_line_after_panicked_at() {
        let stderr = b"\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom \x1b[31m\nnote: run with RUST_BACKTRACE=1\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("boom \\u{1b}[31m"));
        assert_eq!(panic_message(b"something else"), None);
    }

    #[test]
    fn the_random_stream_is_fixed() {
        use rand::TryRng as _;
        let mut one = FixedStream::new(SECURE_SEED);
        let mut two = FixedStream::new(SECURE_SEED);
        let (mut a, mut b) = ([0u8; 13], [0u8; 13]);
        one.try_fill_bytes(&mut a).unwrap();
        two.try_fill_bytes(&mut b).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 13]);
    }

    #[test]
    fn a_slow_compilation_is_refused_past_its_bound() {
        // A real adapter takes tens of milliseconds to compile: far past a 1 ms bound.
        let template = std::path::Path::new(env!("ECS_EXEC_TEST_GUESTS_DIR"))
            .join("ecs_exec_adapter_template.wasm");
        let wasm = std::fs::read(template).unwrap();
        let bounded = Sandbox::new(Limits {
            compile_time: Duration::from_millis(1),
            ..Limits::default()
        })
        .unwrap();
        assert!(matches!(
            bounded.compile(&wasm),
            Err(AdapterErrorKind::CompileTimedOut(_))
        ));
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        assert!(sandbox.compile(&wasm).is_ok());
    }

    #[test]
    fn a_module_that_is_not_a_component_is_a_compile_error() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let core_module = b"\0asm\x01\0\0\0";
        assert!(matches!(
            sandbox.compile(core_module),
            Err(AdapterErrorKind::Compile(_))
        ));
        assert!(matches!(
            sandbox.compile(b"garbage"),
            Err(AdapterErrorKind::Compile(_))
        ));
    }
}
