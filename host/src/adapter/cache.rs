//! The on-disk cache of compiled adapters, so a warm run deserializes instead of compiling.
//!
//! An entry is keyed by the adapter's content (a hash of the wasm bytes) and the engine
//! (`Engine::precompile_compatibility_hash`), so a new adapter or a new wasmtime/config never
//! loads a stale artifact. Entries are written atomically (temporary file, then rename) next to a
//! small JSON sidecar holding the adapter's validated `info`; a per-directory index maps file
//! identities to digests and infos, so a run picks its adapter without reading any other.
//!
//! A compiled artifact is native code that wasmtime maps and runs as it is, and its name is
//! predictable, so whoever can write it owns every run. Like ssh with a key, the cache is only
//! read when its directory and the file are owned by the current user and writable by nobody
//! else, checked on the opened directory and file (`openat` without following links, then
//! `fstat`), so nothing can be swapped in between. Otherwise nothing in it is read or written,
//! adapters are compiled in memory, and `-v` says why. Every other failure here also falls back
//! to compiling: the cache is an optimisation only.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::contract::AdapterInfo;

/// The shape of the records kept beside compiled adapters (info sidecars, directory indexes), in
/// their file names: bumped when [`AdapterInfo`] changes, so that records of another shape,
/// written by another release sharing the cache, are neither misread nor overwritten.
/// 2: the contract version.
pub(crate) const RECORD_FORMAT: u32 = 2;

/// Largest cached file read: a compiled adapter is about ten times its wasm.
const MAX_CACHED_BYTES: u64 = 256 * 1024 * 1024;

/// Why a cache directory or file is not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Distrust {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it is owned by uid {owner}, not by this user (uid {me})")]
    Owner { owner: u32, me: u32 },
    #[error("others can write to it (mode {mode:o})")]
    Writable { mode: u32 },
    #[error("it is not a regular file")]
    NotRegular,
}

/// A cache directory that passed the ownership checks, held open.
#[derive(Debug)]
pub(crate) struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl TrustedDir {
    /// Creates `path` (private to the user) when missing, opens it without following a final
    /// symlink and checks the opened directory: owned by this user, writable by nobody else.
    pub(crate) fn open(path: &Path) -> Result<Self, Distrust> {
        create_private_dir(path)?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        let fd = check_owned_private(fd)?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The content of `name` if it exists, is a regular file owned by this user and writable by
    /// nobody else, and is at most [`MAX_CACHED_BYTES`]. A missing file is `Ok(None)`.
    pub(crate) fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Distrust> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(errno) => return Err(std::io::Error::from(errno).into()),
        };
        let mut file = File::from(check_owned_private(fd)?);
        if !file.metadata()?.is_file() {
            return Err(Distrust::NotRegular);
        }
        let mut bytes = Vec::new();
        (&mut file).take(MAX_CACHED_BYTES).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Writes `name` atomically: a private temporary file in the directory, then a rename.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let temporary = format!(".{name}.{}.tmp", std::process::id());
        let fd = rustix::fs::openat(
            &self.fd,
            temporary.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        let result = (|| {
            let mut file = File::from(fd);
            // An existing temporary left by a crash keeps its old mode through O_TRUNC.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            rustix::fs::renameat(&self.fd, temporary.as_str(), &self.fd, name)?;
            Ok(())
        })();
        if result.is_err() {
            let _ =
                rustix::fs::unlinkat(&self.fd, temporary.as_str(), rustix::fs::AtFlags::empty());
        }
        result
    }
}

/// Passes `fd` through when it is owned by the effective user and not group- or world-writable.
fn check_owned_private(fd: OwnedFd) -> Result<OwnedFd, Distrust> {
    use std::os::unix::fs::MetadataExt as _;
    let file = File::from(fd);
    let metadata = file.metadata()?;
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(Distrust::Owner {
            owner: metadata.uid(),
            me,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Distrust::Writable { mode });
    }
    Ok(OwnedFd::from(file))
}

/// Where compiled adapters are kept, and under which key.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    dir: Arc<TrustedDir>,
    compiled: String,
    info: String,
}

/// The default cache directory: `$XDG_CACHE_HOME/ecs-exec`, else `$HOME/.cache/ecs-exec`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let absolute =
        |value: std::ffi::OsString| Some(PathBuf::from(value)).filter(|path| path.is_absolute());
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        return Some(xdg.join("ecs-exec"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".cache").join("ecs-exec"))
}

/// Opens the cache directory for use, or says at `-v` why it is not used.
pub(crate) fn open_cache_dir(path: &Path) -> Option<Arc<TrustedDir>> {
    match TrustedDir::open(path) {
        Ok(dir) => Some(Arc::new(dir)),
        Err(why) => {
            tracing::debug!(
                "compiled-adapter cache {} is not used: {why}; adapters are compiled in memory",
                super::safe::safe_path(path)
            );
            None
        }
    }
}

/// The part of a cache key that names the engine and its settings. Computed once per load:
/// hashing the engine's settings is not free, and a directory may hold thousands of adapters.
pub(crate) fn engine_key(engine: &Engine) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

impl CacheEntry {
    /// The entry for an adapter whose content hash is `content_key` (hex), under `dir`, for an
    /// engine whose [`engine_key`] is `engine_key`.
    pub(crate) fn new(dir: &Arc<TrustedDir>, engine_key: u64, content_key: &str) -> Self {
        let stem = format!("{content_key}-{engine_key:016x}");
        Self {
            dir: Arc::clone(dir),
            compiled: format!("{stem}.cwasm"),
            info: format!("{stem}.info-{RECORD_FORMAT}.json"),
        }
    }

    /// The compiled component, if a usable one is cached in a trusted file.
    pub(crate) fn load(&self, engine: &Engine) -> Option<Component> {
        let bytes = self.read(&self.compiled)?;
        // SAFETY: `deserialize` trusts the bytes to be wasmtime's own output. They come from a
        // file this user owns and nobody else can write, in a directory nobody else can write
        // (both checked on the opened file), written by this program through an atomic rename
        // and named by the hash of the wasm it came from and of the engine settings; wasmtime
        // still checks the header and engine compatibility.
        let loaded = unsafe { Component::deserialize(engine, &bytes) };
        match loaded {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::debug!(file = %self.compiled, %error, "ignoring unusable cached adapter");
                None
            }
        }
    }

    /// Stores a freshly compiled component; failures are logged and otherwise ignored.
    pub(crate) fn store(&self, component: &Component) {
        let written = component
            .serialize()
            .map_err(|error| error.to_string())
            .and_then(|bytes| {
                self.dir
                    .write(&self.compiled, &bytes)
                    .map_err(|error| error.to_string())
            });
        if let Err(error) = written {
            tracing::debug!(file = %self.compiled, %error, "could not cache a compiled adapter");
        }
    }

    /// The adapter's info recorded next to its compiled form, if present and readable.
    pub(crate) fn load_info(&self) -> Option<AdapterInfo> {
        serde_json::from_slice(&self.read(&self.info)?).ok()
    }

    /// Records the adapter's (validated) info; failures are ignored.
    pub(crate) fn store_info(&self, info: &AdapterInfo) {
        if let Ok(bytes) = serde_json::to_vec(info)
            && let Err(error) = self.dir.write(&self.info, &bytes)
        {
            tracing::debug!(file = %self.info, %error, "could not cache adapter info");
        }
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        match self.dir.read(name) {
            Ok(bytes) => bytes,
            Err(why) => {
                tracing::debug!(
                    "cached {name} in {} is not used: {why}; compiling in memory",
                    super::safe::safe_path(self.dir.path())
                );
                None
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The content key of wasm bytes that are not embedded (third-party files): SHA-256, hex.
pub(crate) fn content_key(wasm: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, wasm))
}

#[cfg(test)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(path: &Path) -> Arc<TrustedDir> {
        Arc::new(TrustedDir::open(path).unwrap())
    }

    fn info() -> AdapterInfo {
        AdapterInfo {
            name: "x".to_owned(),
            version: "1".to_owned(),
            programs: vec!["x".to_owned()],
            summary: String::new(),
            contract: "0.2.0".to_owned(),
        }
    }

    #[test]
    fn atomic_write_creates_the_directory_privately_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("cache");
        let cache = trusted(&path);
        assert_eq!(mode_of(&path), 0o700);
        cache.write("entry.bin", b"first").unwrap();
        cache.write("entry.bin", b"second").unwrap();
        assert_eq!(cache.read("entry.bin").unwrap().unwrap(), b"second");
        assert_eq!(mode_of(&path.join("entry.bin")), 0o600);
        assert_eq!(
            fs::read_dir(&path).unwrap().count(),
            1,
            "no temporary file remains"
        );
    }

    #[test]
    fn info_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let entry = CacheEntry::new(&trusted(dir.path()), engine_key(&engine), "abc");
        assert_eq!(entry.load_info(), None);
        entry.store_info(&info());
        assert_eq!(entry.load_info(), Some(info()));
        fs::write(
            dir.path().join(&entry.compiled),
            b"not a compiled component",
        )
        .unwrap();
        fs::set_permissions(
            dir.path().join(&entry.compiled),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(entry.load(&engine).is_none());
    }

    #[test]
    fn a_directory_others_can_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            TrustedDir::open(dir.path()),
            Err(Distrust::Writable { mode: 0o777 })
        ));
        assert!(open_cache_dir(dir.path()).is_none());
    }

    #[test]
    fn a_file_others_can_write_or_a_symlink_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = trusted(dir.path());
        fs::write(dir.path().join("open.cwasm"), b"x").unwrap();
        fs::set_permissions(
            dir.path().join("open.cwasm"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        assert!(matches!(
            cache.read("open.cwasm"),
            Err(Distrust::Writable { .. })
        ));
        let elsewhere = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("link.cwasm")).unwrap();
        assert!(cache.read("link.cwasm").is_err(), "links are not followed");
        assert!(cache.read("missing.cwasm").unwrap().is_none());
    }

    #[test]
    fn a_directory_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(TrustedDir::open(&link).is_err());
    }

    #[test]
    fn an_unusable_cache_directory_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, b"").unwrap();
        assert!(open_cache_dir(&not_a_dir.join("ecs-exec")).is_none());
    }

    #[test]
    fn keys_depend_on_content() {
        assert_ne!(content_key(b"a"), content_key(b"b"));
        assert_eq!(
            content_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
