//! Pipe adapters: sandboxed WebAssembly components that turn a pipe and its input into a plan.
//!
//! This layer owns the adapters' whole life on the host: the built-in ones embedded in the
//! binary (compiled at build time, `builtin.rs`), third-party ones loaded from files, the on-disk
//! cache of their compiled components, picking
//! the adapter for a pipe, and calling it inside a sandbox that gives it nothing (no environment,
//! files, network, clocks or credentials) and bounds its CPU, memory and time. It must never act
//! on a plan itself (the run layer does), and never trust a guest: every answer is validated
//! against `wit/adapter.wit` before it leaves this module (an adapter built against contract
//! 0.1, `wit/0.1/`, loads too, its plan read as a 0.2 one: `versions.rs`, `bindings.rs`), and
//! every guest string is printed through [`safe`]. Nor does it trust the files around it:
//! third-party files are read bounded (`files.rs`), pinned by SHA-256 when the operator asks
//! (`pins.rs`), indexed so a run reads only the adapter it uses (`index.rs`), and the compile
//! cache is read only when it is private (`cache.rs`). A third-party adapter that takes over a
//! built-in one's run says so ([`Selection::warning`]).
//!
//! The API for the run layer, in the order it is used:
//! ```no_run
//! use ecs_exec::adapter::{AdapterSet, Invocation, LoadOptions, new_nonce};
//! # fn main() -> Result<(), ecs_exec::adapter::AdapterError> {
//! let mut adapters = AdapterSet::load(&LoadOptions::default())?; // cheap once the cache is warm
//! let adapter = adapters.select(Some("rails runner -"), None)?;   // or `--adapter NAME|FILE.wasm`
//! let input = b"puts Rails.env\n";
//! let invocation = Invocation::one_off_with_input(Some("rails runner -".into()), vec![], input);
//! let plan = adapter.plan(&invocation, &new_nonce())?;             // validated; follow it as is
//! # Ok(()) }
//! ```

mod bindings;
mod builtin;
mod cache;
mod contract;
mod engine_config;
mod error;
mod files;
mod index;
mod pins;
pub mod safe;
mod sandbox;
mod select;
mod versions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use cache::default_cache_dir;
pub use contract::{
    AdapterInfo, Alternative, Invocation, MAX_COMMAND_BYTES, MAX_INLINE_INPUT, MAX_MARKER_BYTES,
    MAX_STREAM_CHUNK, Plan, STREAM_EOF_BYTE, STREAM_LINE_BASE64_CHARS, StdinMode, Way, new_nonce,
    validate_info, validate_plan,
};
pub use error::{AdapterError, AdapterErrorKind};
pub use files::MAX_ADAPTER_FILE_BYTES;
pub use pins::{LOCK_FILE_NAME, PINS_ENV};
pub use safe::{safe_path, terminal_safe};
pub use sandbox::{Cost, Limits};
pub use versions::{
    CURRENT as CONTRACT_INTERFACE, INTERFACE as ADAPTER_INTERFACE, SPOKEN as SPOKEN_CONTRACTS,
};

use builtin::{BUILTINS, Builtin};
use cache::{CacheEntry, TrustedDir};
use contract::one_line;
use pins::Pins;
use sandbox::{Prepared, Sandbox};

/// The environment variable naming a directory of third-party adapters (like `--adapter-dir`).
pub const ADAPTER_DIR_ENV: &str = "ECS_EXEC_ADAPTER_DIR";
/// The adapter used when there is no `--pipe`, or when no adapter claims the pipe.
pub const FALLBACK_ADAPTER: &str = "shell";

/// Where compiled adapters are cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// [`default_cache_dir`]: `$XDG_CACHE_HOME/ecs-exec` or `~/.cache/ecs-exec`.
    #[default]
    UserDefault,
    /// This directory.
    Dir(PathBuf),
    /// No cache: compile every adapter in memory on every load (slow; for tests and odd setups).
    Off,
}

/// Where pinned digests come from, besides the lock file in the adapter directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PinSource {
    /// [`PINS_ENV`] in the process environment.
    #[default]
    Environment,
    /// This value, in the variable's format (for tests and embedders).
    Value(String),
}

/// What [`AdapterSet::load`] loads and how.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Load every `*.wasm` in this directory (`--adapter-dir`, or [`ADAPTER_DIR_ENV`]; the caller
    /// resolves which). Loaded in file-name order, after the built-in adapters. Its
    /// [`LOCK_FILE_NAME`], when present, pins adapters.
    pub adapter_dir: Option<PathBuf>,
    /// Further adapter files, loaded after the directory.
    pub adapter_files: Vec<PathBuf>,
    /// The compiled-adapter cache.
    pub cache: CacheMode,
    /// Pinned digests besides the lock file.
    pub pins: PinSource,
    /// Bounds for every call into an adapter.
    pub limits: Limits,
}

/// Where an adapter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// Built into this binary.
    Embedded,
    /// Loaded from this file.
    File(PathBuf),
}

impl std::fmt::Display for AdapterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterSource::Embedded => f.write_str("embedded"),
            AdapterSource::File(path) => f.write_str(&safe_path(path)),
        }
    }
}

/// Something a built-in adapter serves that a third-party adapter claims too, and so takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// The declared program, or `None` for the built-in's name itself.
    pub program: Option<String>,
    /// The built-in adapter that serves it otherwise.
    pub builtin: String,
}

impl std::fmt::Display for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.program {
            Some(program) => write!(f, "`{program}` from the built-in `{}`", self.builtin),
            None if self.builtin == FALLBACK_ADAPTER => write!(
                f,
                "the name `{FALLBACK_ADAPTER}` from the built-in adapter: every run with no \
                 `--pipe`, or with a pipe no adapter claims"
            ),
            None => write!(f, "the name `{}` from the built-in adapter", self.builtin),
        }
    }
}

/// One loaded adapter: its validated info, and a sandboxed instance-to-be for making plans.
pub struct Adapter {
    info: AdapterInfo,
    source: AdapterSource,
    wasm: Wasm,
    sha256: OnceLock<String>,
    pinned: bool,
    takes_over: Vec<Takeover>,
    cache: Option<CacheEntry>,
    sandbox: Arc<Sandbox>,
    /// Compiled (or deserialized) and pre-instantiated on first use.
    prepared: OnceLock<Prepared>,
}

enum Wasm {
    /// Built in, with its compiled form (never cached on disk).
    Builtin(&'static Builtin),
    Owned(Vec<u8>),
    /// Not read yet: read (bounded) and checked against the recorded digest on first use.
    File(PathBuf),
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("info", &self.info)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Adapter {
    /// Name, version, programs and summary, as the adapter declared them (validated; the
    /// summary may hold any printable Unicode: print it through [`terminal_safe`]).
    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// The version of the adapter contract it was built against (`0.1.1`, `0.2.0`), as the
    /// interface it exports names it.
    pub fn contract(&self) -> &str {
        &self.info.contract
    }

    /// Embedded or loaded from a file.
    pub fn source(&self) -> &AdapterSource {
        &self.source
    }

    /// Loaded from a file rather than built in.
    pub fn is_third_party(&self) -> bool {
        self.source != AdapterSource::Embedded
    }

    /// The SHA-256 of the component, hex.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| match &self.wasm {
            Wasm::Builtin(builtin) => cache::content_key(builtin.wasm),
            Wasm::Owned(bytes) => cache::content_key(bytes),
            // Third-party adapters get their digest when they are loaded.
            Wasm::File(_) => String::new(),
        })
    }

    /// Whether its digest is pinned (always `false` for a built-in, and when pinning is off).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// What it takes over from the built-in adapters (empty for a built-in).
    pub fn takes_over(&self) -> &[Takeover] {
        &self.takes_over
    }

    /// Asks the adapter for the plan of one run, in a fresh sandboxed instance.
    ///
    /// `nonce` must be fresh for each run ([`new_nonce`]). The plan is validated against the
    /// contract and the invocation; any failure (the guest refused, trapped, ran too long, or
    /// answered outside the contract) is one [`AdapterError`] naming this adapter.
    pub fn plan(&self, invocation: &Invocation, nonce: &str) -> Result<Plan, AdapterError> {
        self.plan_with_cost(invocation, nonce).0
    }

    /// [`Adapter::plan`], and what the call cost when the guest ran (for `adapters check`).
    pub fn plan_with_cost(
        &self,
        invocation: &Invocation,
        nonce: &str,
    ) -> (Result<Plan, AdapterError>, Option<Cost>) {
        let fail = |kind| AdapterError::new(&self.info.name, kind);
        if let Err(reason) = invocation
            .check()
            .and_then(|()| contract::check_nonce(nonce))
        {
            return (Err(fail(AdapterErrorKind::InvalidRequest(reason))), None);
        }
        let pre = match self.prepared() {
            Ok(pre) => pre,
            Err(kind) => return (Err(fail(kind)), None),
        };
        let (answer, cost) = self.sandbox.call_plan(pre, invocation, nonce);
        let plan = answer.map_err(fail).and_then(|answer| {
            answer.map_err(|message| fail(AdapterErrorKind::Refused(one_line(&message, 300))))
        });
        let plan = plan.and_then(|plan| {
            contract::validate_plan(&plan, invocation, nonce)
                .map_err(|reason| fail(AdapterErrorKind::InvalidPlan(reason)))?;
            Ok(plan)
        });
        (plan, cost)
    }

    /// The same adapter, with what it takes over and its pre-instance when already prepared.
    fn with(mut self, takes_over: Vec<Takeover>, pre: Option<Prepared>) -> Self {
        self.takes_over = takes_over;
        if let Some(pre) = pre {
            let _ = self.prepared.set(pre);
        }
        self
    }

    fn prepared(&self) -> Result<&Prepared, AdapterErrorKind> {
        if let Some(pre) = self.prepared.get() {
            return Ok(pre);
        }
        let pre = match &self.wasm {
            Wasm::Builtin(builtin) => self.sandbox.prepare(&builtin.load(&self.sandbox)?.0)?,
            Wasm::Owned(bytes) => prepare(&self.sandbox, bytes, self.cache.as_ref())?,
            Wasm::File(path) => {
                let (bytes, _) = files::read_adapter_file(path, MAX_ADAPTER_FILE_BYTES)?;
                if cache::content_key(&bytes) != self.sha256() {
                    return Err(AdapterErrorKind::ChangedWhileLoading {
                        path: path.clone(),
                        expected: self.sha256().to_owned(),
                    });
                }
                prepare(&self.sandbox, &bytes, self.cache.as_ref())?
            }
        };
        Ok(self.prepared.get_or_init(|| pre))
    }
}

/// Loads (from the cache, else compiles) and pre-instantiates a component.
fn prepare(
    sandbox: &Sandbox,
    wasm: &[u8],
    cache: Option<&CacheEntry>,
) -> Result<Prepared, AdapterErrorKind> {
    let cached = cache.and_then(|entry| entry.load(sandbox.engine()));
    let component = match cached {
        Some(component) => component,
        None => {
            let component = sandbox.compile(wasm)?;
            if let Some(entry) = cache {
                entry.store(&component);
            }
            component
        }
    };
    sandbox.prepare(&component)
}

/// The adapter chosen for a run, and what it takes over from a built-in one in doing so.
#[derive(Debug)]
pub struct Selection<'a> {
    /// The adapter.
    pub adapter: &'a Adapter,
    /// When a third-party adapter serves this run in place of a built-in one: what of the run
    /// (the pipe, or the `--adapter` name), and which built-in.
    pub takeover: Option<(String, String)>,
}

impl Selection<'_> {
    /// The one-line warning every run served by an unpinned takeover prints (without the
    /// `ecs-exec: warning: ` prefix); `None` when there is nothing to say.
    pub fn warning(&self) -> Option<String> {
        let (what, builtin) = self.takeover.as_ref()?;
        if self.adapter.pinned() {
            return None;
        }
        Some(format!(
            "third-party adapter `{}` ({}, sha256 {}) serves {what} in place of the built-in \
             adapter `{builtin}`; pin it to make this quiet (see `Security model` in the README)",
            self.adapter.info().name,
            self.adapter.source(),
            self.adapter.sha256(),
        ))
    }

    /// What serves the run and its exact plan, one `key: value` line each (terminal-safe):
    /// printed by `--explain` and logged at `-v` before ExecuteCommand.
    pub fn explain(&self, plan: &Plan) -> Vec<String> {
        let adapter = self.adapter;
        let info = adapter.info();
        let pinned = if !adapter.is_third_party() {
            "built in"
        } else if adapter.pinned() {
            "yes"
        } else {
            "no"
        };
        let mut lines = vec![
            format!("adapter: {} {}", info.name, terminal_safe(&info.version)),
            format!("source: {}", adapter.source()),
            format!("sha256: {}", adapter.sha256()),
            format!("pinned: {pinned}"),
            format!(
                "contract: {ADAPTER_INTERFACE}@{}",
                terminal_safe(&info.contract)
            ),
        ];
        if let Some((what, builtin)) = &self.takeover {
            lines.push(format!(
                "takes over: {} from the built-in adapter `{builtin}`",
                terminal_safe(what)
            ));
        }
        lines.extend([
            format!("command: {}", terminal_safe(&plan.command)),
            format!("stdin: {}", plan.stdin),
            format!(
                "ready-marker: {}",
                plan.ready_marker.as_deref().unwrap_or("(none)")
            ),
            format!(
                "exit-trailer: {}",
                plan.exit_trailer.as_deref().unwrap_or("(none)")
            ),
        ]);
        lines.extend(plan_extras(plan));
        lines
    }
}

/// What a plan adds to contract 0.1, one `key: value` line each (terminal-safe): its stderr tag
/// and every alternative way, in order. Printed by `--explain`, `-v` and `adapters show`.
pub fn plan_extras(plan: &Plan) -> Vec<String> {
    let mut lines = vec![format!(
        "stderr-tag: {}",
        plan.stderr_tag
            .as_deref()
            .unwrap_or("(none: stderr is merged into stdout)")
    )];
    if plan.alternatives.is_empty() {
        lines.push("alternatives: (none)".to_owned());
    }
    for (number, alternative) in plan.alternatives.iter().enumerate() {
        let stderr = if alternative.stderr_framed {
            "stderr framed"
        } else {
            "stderr merged"
        };
        lines.push(format!(
            "alternative {}: ready-marker {}, stdin {}, {stderr}; notice: {}",
            number + 1,
            alternative.ready_marker,
            alternative.stdin,
            terminal_safe(&alternative.notice)
        ));
    }
    lines
}

/// Every adapter this run can use: the built-in ones, then the third-party ones.
pub struct AdapterSet {
    adapters: Vec<Adapter>,
    sandbox: Arc<Sandbox>,
    cache_dir: Option<PathBuf>,
    /// Opened (and created) only when a third-party adapter needs it: a run served by a
    /// built-in one leaves no trace in the home directory.
    cache: OnceLock<Option<Arc<TrustedDir>>>,
    engine_key: u64,
    pins: Pins,
}

impl std::fmt::Debug for AdapterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterSet")
            .field("adapters", &self.adapters)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// A compiled adapter's info and pre-instance, shared by every file with the same content.
type Described = (AdapterInfo, Option<Prepared>);

impl AdapterSet {
    /// Loads the built-in adapters and the third-party ones `options` names.
    ///
    /// A third-party file is read, hashed and described only when the directory index does not
    /// know it yet; with a warm cache this compiles nothing, and the adapter finally used is
    /// read, checked and deserialized on its first [`Adapter::plan`]. A third-party adapter that
    /// cannot be loaded, or that pins refuse, fails the whole load, naming its file.
    pub fn load(options: &LoadOptions) -> Result<AdapterSet, AdapterError> {
        let sandbox =
            Sandbox::new(options.limits).map_err(|kind| AdapterError::new("(sandbox)", kind))?;
        let cache_dir = match &options.cache {
            CacheMode::UserDefault => default_cache_dir(),
            CacheMode::Dir(dir) => Some(dir.clone()),
            CacheMode::Off => None,
        };
        let engine_key = cache::engine_key(sandbox.engine());
        let mut set = AdapterSet {
            adapters: Vec::new(),
            sandbox: Arc::new(sandbox),
            cache_dir,
            cache: OnceLock::new(),
            engine_key,
            pins: Pins::default(),
        };
        for builtin in BUILTINS {
            set.add_builtin(builtin)?;
        }
        set.pins = load_pins(options)?;
        if let Some(dir) = &options.adapter_dir {
            set.add_dir(dir)?;
        }
        for path in &options.adapter_files {
            set.add_file(path)?;
        }
        Ok(set)
    }

    /// Loads one more third-party adapter from a `.wasm` component file (pins apply).
    pub fn add_file(&mut self, path: &Path) -> Result<&Adapter, AdapterError> {
        self.add_file_with(path, true)
    }

    /// Loads a third-party adapter for `adapters check`: pins are reported, not enforced.
    pub fn add_file_for_check(&mut self, path: &Path) -> Result<&Adapter, AdapterError> {
        self.add_file_with(path, false)
    }

    fn add_file_with(&mut self, path: &Path, enforce_pins: bool) -> Result<&Adapter, AdapterError> {
        let label = file_label(path);
        let fail = |kind| AdapterError::new(&label, kind);
        let (bytes, _) = files::read_adapter_file(path, MAX_ADAPTER_FILE_BYTES).map_err(fail)?;
        let digest = cache::content_key(&bytes);
        let pinned = match self.pins.check(path, &digest) {
            Ok(pinned) => pinned,
            Err(_) if !enforce_pins => false,
            Err(kind) => return Err(fail(kind)),
        };
        let (info, pre) = self.describe(&bytes, &digest).map_err(fail)?;
        let takes_over = self.takeovers_of(&info);
        let adapter = self.third_party(info, path, Wasm::Owned(bytes), digest, pinned);
        self.adapters.push(adapter.with(takes_over, pre));
        self.last(&label)
    }

    /// Every `*.wasm` of `dir`, through the directory's index.
    fn add_dir(&mut self, dir: &Path) -> Result<(), AdapterError> {
        let files = files::wasm_files_in(dir)
            .map_err(|(path, kind)| AdapterError::new(file_label(&path), kind))?;
        let mut index = index::Index::open(self.cache(), dir);
        let mut described: HashMap<String, Described> = HashMap::new();
        let mut takeovers: HashMap<String, Vec<Takeover>> = HashMap::new();
        for (path, identity) in files {
            let label = file_label(&path);
            let fail = |kind| AdapterError::new(&label, kind);
            let (digest, info, pre) = match index.get(&identity) {
                Some((digest, info)) if contract::validate_info(&info).is_ok() => {
                    let pre = described.get(&digest).and_then(|(_, pre)| pre.clone());
                    (digest, info, pre)
                }
                _ => {
                    let (bytes, identity) =
                        files::read_adapter_file(&path, MAX_ADAPTER_FILE_BYTES).map_err(fail)?;
                    let digest = cache::content_key(&bytes);
                    // Refuse before compiling: an unpinned file's code never runs, not even
                    // its `describe`.
                    self.pins.check(&path, &digest).map_err(fail)?;
                    let (info, pre) = match described.get(&digest) {
                        Some(known) => known.clone(),
                        None => self.describe(&bytes, &digest).map_err(fail)?,
                    };
                    described.insert(digest.clone(), (info.clone(), pre.clone()));
                    index.record(identity, &digest, &info);
                    (digest, info, pre)
                }
            };
            let pinned = self.pins.check(&path, &digest).map_err(fail)?;
            let takes_over = takeovers
                .entry(digest.clone())
                .or_insert_with(|| self.takeovers_of(&info))
                .clone();
            let adapter = self.third_party(info, &path, Wasm::File(path.clone()), digest, pinned);
            self.adapters.push(adapter.with(takes_over, pre));
        }
        index.save();
        Ok(())
    }

    /// The info of a component (recorded in the cache, else from its `describe()`), and its
    /// pre-instance when it had to be prepared for that.
    fn describe(&self, wasm: &[u8], digest: &str) -> Result<Described, AdapterErrorKind> {
        let cache = self.cache_entry(digest);
        let recorded = cache
            .as_ref()
            .and_then(CacheEntry::load_info)
            .filter(|info| contract::validate_info(info).is_ok());
        if let Some(info) = recorded {
            return Ok((info, None));
        }
        let pre = prepare(&self.sandbox, wasm, cache.as_ref())?;
        let info = self.sandbox.call_info(&pre)?;
        contract::validate_info(&info).map_err(AdapterErrorKind::InvalidInfo)?;
        if let Some(entry) = &cache {
            entry.store_info(&info);
        }
        Ok((info, Some(pre)))
    }

    fn third_party(
        &self,
        info: AdapterInfo,
        path: &Path,
        wasm: Wasm,
        digest: String,
        pinned: bool,
    ) -> Adapter {
        Adapter {
            cache: self.cache_entry(&digest),
            info,
            source: AdapterSource::File(path.to_owned()),
            wasm,
            sha256: OnceLock::from(digest),
            pinned,
            takes_over: Vec::new(),
            sandbox: Arc::clone(&self.sandbox),
            prepared: OnceLock::new(),
        }
    }

    fn cache_entry(&self, key: &str) -> Option<CacheEntry> {
        self.cache()
            .map(|dir| CacheEntry::new(dir, self.engine_key, key))
    }

    /// The compile cache, opened on first use.
    fn cache(&self) -> Option<&Arc<TrustedDir>> {
        self.cache
            .get_or_init(|| self.cache_dir.as_deref().and_then(cache::open_cache_dir))
            .as_ref()
    }

    /// A built-in adapter, with the info recorded at build time: nothing is deserialised until
    /// its first [`Adapter::plan`], and it never reads or writes the cache.
    fn add_builtin(&mut self, builtin: &'static Builtin) -> Result<&Adapter, AdapterError> {
        let label = builtin.name;
        let info = builtin.info();
        contract::validate_info(&info)
            .map_err(|reason| AdapterError::new(label, AdapterErrorKind::InvalidInfo(reason)))?;
        self.adapters.push(Adapter {
            info,
            source: AdapterSource::Embedded,
            wasm: Wasm::Builtin(builtin),
            sha256: OnceLock::new(),
            pinned: false,
            takes_over: Vec::new(),
            cache: None,
            sandbox: Arc::clone(&self.sandbox),
            prepared: OnceLock::new(),
        });
        self.last(label)
    }

    fn last(&self, label: &str) -> Result<&Adapter, AdapterError> {
        self.adapters.last().ok_or_else(|| {
            AdapterError::new(
                label,
                AdapterErrorKind::Host("adapter list is empty".to_owned()),
            )
        })
    }

    /// What a third-party adapter declaring `info` takes over from the built-in adapters: each
    /// declared program a built-in would serve as a pipe, and a built-in's name.
    fn takeovers_of(&self, info: &AdapterInfo) -> Vec<Takeover> {
        let mut takeovers = Vec::new();
        if let Some(builtin) = self
            .builtins()
            .find(|adapter| adapter.info.name == info.name)
        {
            takeovers.push(Takeover {
                program: None,
                builtin: builtin.info.name.clone(),
            });
        }
        for program in &info.programs {
            if let Some(builtin) = self.builtin_serving(program) {
                takeovers.push(Takeover {
                    program: Some(program.clone()),
                    builtin: builtin.info.name.clone(),
                });
            }
        }
        takeovers
    }

    fn builtins(&self) -> impl Iterator<Item = &Adapter> {
        self.adapters
            .iter()
            .filter(|adapter| !adapter.is_third_party())
    }

    /// The built-in adapter that would serve `pipe` if no third-party adapter were loaded.
    fn builtin_serving(&self, pipe: &str) -> Option<&Adapter> {
        let words = shell_words::split(pipe).ok()?;
        let builtins: Vec<&Adapter> = self.builtins().collect();
        let claimants: Vec<select::Claimant<'_>> = builtins
            .iter()
            .map(|adapter| select::Claimant {
                programs: &adapter.info.programs,
                third_party: false,
            })
            .collect();
        select::select(&words, &claimants).and_then(|index| builtins.get(index).copied())
    }

    /// All loaded adapters: built-in ones first, then third-party ones in load order.
    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// The adapter for a run: `adapter_override` (`--adapter NAME|FILE.wasm`) if given, else the
    /// one whose declared programs match `pipe` best, else [`FALLBACK_ADAPTER`].
    ///
    /// An override containing `/` or ending in `.wasm` is a file, loaded now; otherwise a name,
    /// where a third-party adapter shadows a built-in one of the same name.
    pub fn select(
        &mut self,
        pipe: Option<&str>,
        adapter_override: Option<&str>,
    ) -> Result<&Adapter, AdapterError> {
        self.select_run(pipe, adapter_override)
            .map(|selection| selection.adapter)
    }

    /// [`AdapterSet::select`], and whether the chosen adapter takes the run over from a
    /// built-in one. A file named with `--adapter` is the user's explicit choice, never a
    /// takeover.
    pub fn select_run(
        &mut self,
        pipe: Option<&str>,
        adapter_override: Option<&str>,
    ) -> Result<Selection<'_>, AdapterError> {
        if let Some(wanted) = adapter_override
            && (wanted.contains('/') || wanted.ends_with(".wasm"))
        {
            let adapter = self.add_file(Path::new(wanted))?;
            return Ok(Selection {
                adapter,
                takeover: None,
            });
        }
        let this: &AdapterSet = self;
        let adapter = this.choose(pipe, adapter_override)?;
        let takeover = if adapter.is_third_party() {
            this.takeover_of_run(adapter, pipe, adapter_override)
        } else {
            None
        };
        Ok(Selection { adapter, takeover })
    }

    fn choose(
        &self,
        pipe: Option<&str>,
        adapter_override: Option<&str>,
    ) -> Result<&Adapter, AdapterError> {
        if let Some(wanted) = adapter_override {
            return self.by_name(wanted).ok_or_else(|| {
                let loaded: Vec<&str> = self
                    .adapters
                    .iter()
                    .map(|adapter| adapter.info.name.as_str())
                    .collect();
                AdapterError::new(
                    one_line(wanted, 64),
                    AdapterErrorKind::Unknown(loaded.join(", ")),
                )
            });
        }
        let serving = match pipe {
            Some(pipe) => self.serving(pipe)?,
            None => None,
        };
        serving
            .or_else(|| self.by_name(FALLBACK_ADAPTER))
            .ok_or_else(|| {
                AdapterError::new(
                    pipe.map_or_else(|| "(none)".to_owned(), |pipe| one_line(pipe, 64)),
                    AdapterErrorKind::NoAdapter,
                )
            })
    }

    /// (what of the run, which built-in) when third-party `adapter` serves a run a built-in
    /// adapter would serve otherwise.
    fn takeover_of_run(
        &self,
        adapter: &Adapter,
        pipe: Option<&str>,
        adapter_override: Option<&str>,
    ) -> Option<(String, String)> {
        if let Some(name) = adapter_override {
            return self
                .builtins()
                .find(|builtin| builtin.info.name == name)
                .map(|builtin| (format!("`--adapter {name}`"), builtin.info.name.clone()));
        }
        if let Some(builtin) = pipe.and_then(|pipe| self.builtin_serving(pipe)) {
            let pipe = pipe.unwrap_or_default();
            return Some((
                format!("`{}`", one_line(pipe, 100)),
                builtin.info.name.clone(),
            ));
        }
        // No pipe, or a pipe no built-in claims: the fallback's run, if this one is the fallback.
        (adapter.info.name == FALLBACK_ADAPTER).then(|| {
            let what = match pipe {
                None => "a run with no `--pipe`".to_owned(),
                Some(pipe) => format!("`{}`", one_line(pipe, 100)),
            };
            (what, FALLBACK_ADAPTER.to_owned())
        })
    }

    /// The adapter whose declared programs match `pipe` best, if any does (no fallback).
    pub fn serving(&self, pipe: &str) -> Result<Option<&Adapter>, AdapterError> {
        let words = shell_words::split(pipe).map_err(|error| {
            AdapterError::new(
                one_line(pipe, 64),
                AdapterErrorKind::BadPipe(error.to_string()),
            )
        })?;
        let claimants: Vec<select::Claimant<'_>> = self
            .adapters
            .iter()
            .map(|adapter| select::Claimant {
                programs: &adapter.info.programs,
                third_party: adapter.is_third_party(),
            })
            .collect();
        Ok(select::select(&words, &claimants).and_then(|index| self.adapters.get(index)))
    }

    /// The adapter of that name; a third-party one shadows a built-in one.
    pub fn by_name(&self, name: &str) -> Option<&Adapter> {
        let mut named = self
            .adapters
            .iter()
            .filter(|adapter| adapter.info.name == name);
        let first = named.next()?;
        let third_party = std::iter::once(first)
            .chain(named)
            .find(|adapter| adapter.is_third_party());
        Some(third_party.unwrap_or(first))
    }

    /// The directory compiled adapters are cached in, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Whether pinning is on for this set (a lock file or [`PINS_ENV`]).
    pub fn pinning(&self) -> bool {
        self.pins.active()
    }

    /// How many components this set has compiled so far (built-in adapters load precompiled, and
    /// cached third-party ones deserialize, so a warm run compiles none).
    pub fn compilations(&self) -> usize {
        self.sandbox.compilations()
    }
}

/// The pins for a load: the lock file in the adapter directory, then the variable.
fn load_pins(options: &LoadOptions) -> Result<Pins, AdapterError> {
    let mut pins = Pins::default();
    if let Some(dir) = &options.adapter_dir {
        let lock = dir.join(LOCK_FILE_NAME);
        let fail = |kind| AdapterError::new(LOCK_FILE_NAME, kind);
        match files::read_adapter_file(&lock, pins::MAX_LOCK_FILE_BYTES) {
            Ok((bytes, _)) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    fail(AdapterErrorKind::BadPins {
                        where_: safe_path(&lock),
                        reason: "not UTF-8 text".to_owned(),
                    })
                })?;
                pins.add_lock_file(&text, &lock).map_err(fail)?;
            }
            Err(AdapterErrorKind::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(kind) => return Err(fail(kind)),
        }
    }
    let from_env = match &options.pins {
        PinSource::Environment => std::env::var(PINS_ENV).ok(),
        PinSource::Value(value) => Some(value.clone()),
    };
    if let Some(value) = from_env {
        pins.add_env(&value)
            .map_err(|kind| AdapterError::new(PINS_ENV, kind))?;
    }
    Ok(pins)
}

/// A file's name, terminal-safe, for errors about an adapter that has not said its name.
fn file_label(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| safe_path(path), |name| safe_path(Path::new(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-ins whose component has been deserialised and pre-instantiated.
    fn prepared(set: &AdapterSet) -> Vec<&str> {
        set.adapters()
            .iter()
            .filter(|adapter| adapter.prepared.get().is_some())
            .map(|adapter| adapter.info.name.as_str())
            .collect()
    }

    #[test]
    fn a_run_deserialises_only_the_builtin_it_uses() {
        let options = LoadOptions {
            cache: CacheMode::Off,
            pins: PinSource::Value(String::new()),
            ..LoadOptions::default()
        };
        let mut set = AdapterSet::load(&options).unwrap();
        assert_eq!(set.adapters().len(), BUILTINS.len());
        assert!(
            prepared(&set).is_empty(),
            "loading the set deserialised {:?}",
            prepared(&set)
        );

        let pipe = "python3 -";
        let adapter = set.select(Some(pipe), None).unwrap();
        assert_eq!(
            adapter.info().name,
            "python",
            "chosen by the recorded programs"
        );
        let invocation = Invocation::one_off_with_input(Some(pipe.into()), vec![], b"print(1)\n");
        adapter.plan(&invocation, &new_nonce()).unwrap();
        assert_eq!(prepared(&set), ["python"]);
        assert_eq!(set.compilations(), 0, "the precompiled artifact was used");
    }
}
