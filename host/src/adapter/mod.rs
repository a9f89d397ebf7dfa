//! Pipe adapters: sandboxed WebAssembly components that turn a pipe and its input into a plan.
//!
//! This layer owns the adapters' whole life on the host: the built-in ones embedded in the
//! binary (compiled at build time), third-party ones loaded from files, the on-disk cache of their
//! compiled components, picking
//! the adapter for a pipe, and calling it inside a sandbox that gives it nothing (no environment,
//! files, network, clocks or credentials) and bounds its CPU, memory and time. It must never act
//! on a plan itself (the run layer does), and never trust a guest: every answer is validated
//! against `wit/adapter.wit` before it leaves this module.
//!
//! The API for the run layer, in the order it is used:
//! ```no_run
//! use ecs_exec::adapter::{AdapterSet, Invocation, LoadOptions, new_nonce};
//! # fn main() -> Result<(), ecs_exec::adapter::AdapterError> {
//! let mut adapters = AdapterSet::load(&LoadOptions::default())?; // built-ins never compile
//! let adapter = adapters.select(Some("rails runner -"), None)?;   // or `--adapter NAME|FILE.wasm`
//! let input = b"puts Rails.env\n";
//! let invocation = Invocation::one_off_with_input(Some("rails runner -".into()), vec![], input);
//! let plan = adapter.plan(&invocation, &new_nonce())?;             // validated; follow it as is
//! # Ok(()) }
//! ```

mod builtin;
mod cache;
mod contract;
mod engine_config;
mod error;
mod sandbox;
mod select;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use cache::default_cache_dir;
pub use contract::{
    AdapterInfo, Invocation, MAX_COMMAND_BYTES, MAX_INLINE_INPUT, MAX_MARKER_BYTES, Plan,
    STREAM_EOF_BYTE, STREAM_LINE_BASE64_CHARS, StdinMode, new_nonce, validate_info, validate_plan,
};
pub use error::{AdapterError, AdapterErrorKind};
pub use sandbox::{CONTRACT_INTERFACE, Limits};

use builtin::{BUILTINS, Builtin};
use cache::CacheEntry;
use contract::one_line;
use sandbox::{GuestState, PipeAdapterPre, Sandbox};

/// The environment variable naming a directory of third-party adapters (like `--adapter-dir`).
pub const ADAPTER_DIR_ENV: &str = "ECS_EXEC_ADAPTER_DIR";
/// Largest adapter file accepted, in bytes.
pub const MAX_ADAPTER_FILE_BYTES: u64 = 64 * 1024 * 1024;
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

/// What [`AdapterSet::load`] loads and how.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Load every `*.wasm` in this directory (`--adapter-dir`, or [`ADAPTER_DIR_ENV`]; the caller
    /// resolves which). Loaded in file-name order, after the built-in adapters.
    pub adapter_dir: Option<PathBuf>,
    /// Further adapter files, loaded after the directory.
    pub adapter_files: Vec<PathBuf>,
    /// The compiled-adapter cache.
    pub cache: CacheMode,
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
            AdapterSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One loaded adapter: its validated info, and a sandboxed instance-to-be for making plans.
pub struct Adapter {
    info: AdapterInfo,
    source: AdapterSource,
    wasm: Wasm,
    cache: Option<CacheEntry>,
    sandbox: Arc<Sandbox>,
    /// Compiled (or deserialized) and pre-instantiated on first use.
    prepared: OnceLock<PipeAdapterPre<GuestState>>,
}

enum Wasm {
    /// Built in, with its compiled form (never cached on disk).
    Builtin(&'static Builtin),
    /// Read from a file.
    Owned(Vec<u8>),
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
    /// Name, version, programs and summary, as the adapter declared them (validated).
    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// Embedded or loaded from a file.
    pub fn source(&self) -> &AdapterSource {
        &self.source
    }

    /// Asks the adapter for the plan of one run, in a fresh sandboxed instance.
    ///
    /// `nonce` must be fresh for each run ([`new_nonce`]). The plan is validated against the
    /// contract and the invocation; any failure (the guest refused, trapped, ran too long, or
    /// answered outside the contract) is one [`AdapterError`] naming this adapter.
    pub fn plan(&self, invocation: &Invocation, nonce: &str) -> Result<Plan, AdapterError> {
        let fail = |kind| AdapterError::new(&self.info.name, kind);
        invocation
            .check()
            .map_err(|reason| fail(AdapterErrorKind::InvalidRequest(reason)))?;
        contract::check_nonce(nonce)
            .map_err(|reason| fail(AdapterErrorKind::InvalidRequest(reason)))?;
        let pre = self.prepared().map_err(fail)?;
        let answer = self
            .sandbox
            .call_plan(pre, invocation, nonce)
            .map_err(fail)?;
        let plan =
            answer.map_err(|message| fail(AdapterErrorKind::Refused(one_line(&message, 300))))?;
        contract::validate_plan(&plan, invocation, nonce)
            .map_err(|reason| fail(AdapterErrorKind::InvalidPlan(reason)))?;
        Ok(plan)
    }

    fn prepared(&self) -> Result<&PipeAdapterPre<GuestState>, AdapterErrorKind> {
        if let Some(pre) = self.prepared.get() {
            return Ok(pre);
        }
        let pre = prepare(&self.sandbox, &self.wasm, self.cache.as_ref())?;
        Ok(self.prepared.get_or_init(|| pre))
    }
}

/// Loads (a built-in's embedded artifact; from the cache, else compiled) and pre-instantiates
/// a component.
fn prepare(
    sandbox: &Sandbox,
    wasm: &Wasm,
    cache: Option<&CacheEntry>,
) -> Result<PipeAdapterPre<GuestState>, AdapterErrorKind> {
    let wasm = match wasm {
        Wasm::Builtin(builtin) => return sandbox.prepare(&builtin.load(sandbox)?.0),
        Wasm::Owned(bytes) => bytes,
    };
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

/// Every adapter this run can use: the built-in ones, then the third-party ones.
pub struct AdapterSet {
    adapters: Vec<Adapter>,
    sandbox: Arc<Sandbox>,
    cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for AdapterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterSet")
            .field("adapters", &self.adapters)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl AdapterSet {
    /// Loads the built-in adapters and the third-party ones `options` names.
    ///
    /// Built-in adapters load from their embedded compiled form, never from or into the cache.
    /// With a warm cache this reads each third-party adapter's recorded info and compiles nothing; the
    /// adapter that is finally used is deserialized on its first [`Adapter::plan`]. A third-party
    /// adapter that cannot be loaded fails the whole load, naming its file.
    pub fn load(options: &LoadOptions) -> Result<AdapterSet, AdapterError> {
        let sandbox =
            Sandbox::new(options.limits).map_err(|kind| AdapterError::new("(sandbox)", kind))?;
        let cache_dir = match &options.cache {
            CacheMode::UserDefault => default_cache_dir(),
            CacheMode::Dir(dir) => Some(dir.clone()),
            CacheMode::Off => None,
        };
        let mut set = AdapterSet {
            adapters: Vec::new(),
            sandbox: Arc::new(sandbox),
            cache_dir,
        };
        for builtin in BUILTINS {
            set.add(
                builtin.name,
                Wasm::Builtin(builtin),
                None,
                AdapterSource::Embedded,
            )?;
        }
        if let Some(dir) = &options.adapter_dir {
            for path in wasm_files_in(dir)? {
                set.add_file(&path)?;
            }
        }
        for path in &options.adapter_files {
            set.add_file(path)?;
        }
        Ok(set)
    }

    /// Loads one more third-party adapter from a `.wasm` component file.
    pub fn add_file(&mut self, path: &Path) -> Result<&Adapter, AdapterError> {
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let read_error = |source| {
            AdapterError::new(
                &label,
                AdapterErrorKind::Read {
                    path: path.to_owned(),
                    source,
                },
            )
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_ADAPTER_FILE_BYTES {
            let reason = format!("{size} bytes, more than the {MAX_ADAPTER_FILE_BYTES} allowed");
            return Err(AdapterError::new(&label, AdapterErrorKind::Compile(reason)));
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        let key = cache::content_key(&bytes);
        self.add(
            &label,
            Wasm::Owned(bytes),
            Some(key),
            AdapterSource::File(path.to_owned()),
        )
    }

    fn add(
        &mut self,
        label: &str,
        wasm: Wasm,
        cache_key: Option<String>,
        source: AdapterSource,
    ) -> Result<&Adapter, AdapterError> {
        let cache = cache_key.and_then(|key| {
            let dir = self.cache_dir.as_deref()?;
            Some(CacheEntry::new(dir, self.sandbox.engine(), &key))
        });
        let recorded = cache
            .as_ref()
            .and_then(CacheEntry::load_info)
            .filter(|info| contract::validate_info(info).is_ok());
        let prepared = OnceLock::new();
        let info = match recorded {
            Some(info) => info,
            None => {
                let pre = prepare(&self.sandbox, &wasm, cache.as_ref())
                    .map_err(|kind| AdapterError::new(label, kind))?;
                let info = self
                    .sandbox
                    .call_info(&pre)
                    .map_err(|kind| AdapterError::new(label, kind))?;
                contract::validate_info(&info).map_err(|reason| {
                    AdapterError::new(label, AdapterErrorKind::InvalidInfo(reason))
                })?;
                if let Some(entry) = &cache {
                    entry.store_info(&info);
                }
                let _ = prepared.set(pre);
                info
            }
        };
        self.adapters.push(Adapter {
            info,
            source,
            wasm,
            cache,
            sandbox: Arc::clone(&self.sandbox),
            prepared,
        });
        self.adapters.last().ok_or_else(|| {
            AdapterError::new(
                label,
                AdapterErrorKind::Host("adapter list is empty".to_owned()),
            )
        })
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
        if let Some(wanted) = adapter_override {
            if wanted.contains('/') || wanted.ends_with(".wasm") {
                return self.add_file(Path::new(wanted));
            }
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
                third_party: adapter.source != AdapterSource::Embedded,
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
            .find(|adapter| adapter.source != AdapterSource::Embedded);
        Some(third_party.unwrap_or(first))
    }

    /// The directory compiled third-party adapters are cached in, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// How many components this set has compiled so far (built-in adapters load precompiled, and
    /// cached third-party ones deserialize, so a warm run compiles none).
    pub fn compilations(&self) -> usize {
        self.sandbox.compilations()
    }
}

/// Every `*.wasm` file directly in `dir`, sorted by name.
fn wasm_files_in(dir: &Path) -> Result<Vec<PathBuf>, AdapterError> {
    let read_error = |source| {
        AdapterError::new(
            dir.display().to_string(),
            AdapterErrorKind::Read {
                path: dir.to_owned(),
                source,
            },
        )
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "wasm")
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
