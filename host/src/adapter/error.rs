//! The adapter layer's error: which adapter, and what went wrong, in one line.
//!
//! Guest-controlled text (messages, names) reaches this type only after
//! [`one_line`](super::contract::one_line) made it printable and short, so `Display` can go
//! straight to the user's terminal. No other module of the layer formats errors for users.

use std::path::PathBuf;
use std::time::Duration;

use super::safe::safe_path;

/// An adapter failed; `Display` is one line: `adapter `NAME`: CAUSE`.
#[derive(Debug, thiserror::Error)]
#[error("adapter `{adapter}`: {kind}")]
pub struct AdapterError {
    /// The adapter's name, or its file name when it failed before saying its name.
    pub adapter: String,
    /// What went wrong.
    pub kind: AdapterErrorKind,
}

impl AdapterError {
    pub(crate) fn new(adapter: impl Into<String>, kind: AdapterErrorKind) -> Self {
        Self {
            adapter: adapter.into(),
            kind,
        }
    }
}

/// What went wrong with an adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterErrorKind {
    /// The adapter file or directory could not be read.
    #[error("cannot read {}: {source}", safe_path(path))]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a regular file (a FIFO, a device, a directory): never opened for reading.
    #[error(
        "{} is not a regular file ({kind}); adapters are loaded from regular files only",
        safe_path(path)
    )]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the per-file limit, as measured on the opened file.
    #[error(
        "{} is {size} bytes, more than the {limit} bytes an adapter may have",
        safe_path(path)
    )]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size (at least), in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Compiling the component took longer than the compile bound.
    #[error("compiling it took longer than {} s; an adapter this slow to compile is refused", .0.as_secs_f32())]
    CompileTimedOut(Duration),
    /// Pins exist and this file's content is not among them.
    #[error(
        "{} (sha256 {digest}) is not pinned; add `{digest}  {}` to {lock} or its digest to \
         ECS_EXEC_ADAPTER_PINS if you trust it",
        safe_path(path), safe_path(std::path::Path::new(path.file_name().unwrap_or_default())),
        lock = super::pins::LOCK_FILE_NAME
    )]
    NotPinned {
        /// The file.
        path: PathBuf,
        /// Its SHA-256, hex.
        digest: String,
    },
    /// The file's name is pinned to other content: it changed since it was pinned.
    #[error(
        "{} changed since it was pinned (pinned sha256 {pinned}, now {found}); \
         if the new version is trusted, update its line in {lock}",
        safe_path(path), lock = super::pins::LOCK_FILE_NAME
    )]
    PinMismatch {
        /// The file.
        path: PathBuf,
        /// The digest its lock-file line names.
        pinned: String,
        /// Its digest now.
        found: String,
    },
    /// The lock file or the pins variable cannot be read as pins.
    #[error("bad pins in {where_}: {reason}")]
    BadPins {
        /// The lock file's path, or the variable's name.
        where_: String,
        /// What is wrong (terminal-safe).
        reason: String,
    },
    /// The file changed between choosing the adapter and loading its code.
    #[error(
        "{} changed while it was being loaded (expected sha256 {expected}); try again",
        safe_path(path)
    )]
    ChangedWhileLoading {
        /// The file.
        path: PathBuf,
        /// The digest it had when it was chosen.
        expected: String,
    },
    /// Not a valid WebAssembly component (or wasmtime could not compile it).
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// Built against a version of `hoop:ecs-exec` this host does not speak.
    #[error("built against {found}, but this ecs-exec speaks {expected}")]
    ContractVersion {
        /// The adapter interface the component exports.
        found: String,
        /// The versions this host loads.
        expected: &'static str,
    },
    /// Does not export the adapter interface, or imports what the sandbox does not provide.
    #[error("does not fit the adapter contract: {0}")]
    Contract(String),
    /// Used all its fuel (CPU budget).
    #[error("ran out of fuel (CPU budget of {0} units): endless loop?")]
    OutOfFuel(u64),
    /// Ran past the wall-clock deadline.
    #[error("did not finish within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// Tried to grow its memory past the limit.
    #[error("exceeded its memory limit of {} MiB", .0 / (1024 * 1024))]
    MemoryLimit(usize),
    /// The guest panicked.
    #[error("panicked: {0}")]
    Panic(String),
    /// The guest trapped (other than the above).
    #[error("crashed: {0}")]
    Trap(String),
    /// `describe()` returned something outside the contract.
    #[error("invalid info: {0}")]
    InvalidInfo(String),
    /// `plan-run()` returned something outside the contract.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// `plan-run()` returned an error of its own.
    #[error("{0}")]
    Refused(String),
    /// The host asked for something outside the contract (a bug in the caller).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No adapter of that name is loaded.
    #[error("no such adapter (loaded: {0})")]
    Unknown(String),
    /// No adapter serves the pipe and there is no `shell` fallback.
    #[error("no adapter serves this pipe")]
    NoAdapter,
    /// The pipe could not be split into words.
    #[error("cannot split the pipe into words: {0}")]
    BadPipe(String),
    /// The host could not run the sandbox (thread, engine); not the adapter's fault.
    #[error("the sandbox failed: {0}")]
    Host(String),
}
