//! The on-disk cache of compiled adapters, so a warm run deserializes instead of compiling.
//!
//! An entry is keyed by the adapter's content (a hash of the wasm bytes) and the engine
//! (`Engine::precompile_compatibility_hash`), so a new adapter or a new wasmtime/config never
//! loads a stale artifact. Entries are written atomically (temporary file, then rename) next to a
//! small JSON sidecar holding the adapter's validated `info`, which lets a run pick its adapter
//! without loading any other. The cache is an optimisation only: every failure here falls back
//! to compiling in memory, and nothing in it is trusted beyond what wasmtime itself checks.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::contract::AdapterInfo;

/// Where compiled adapters are kept, and under which key.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    compiled: PathBuf,
    info: PathBuf,
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

impl CacheEntry {
    /// The entry for an adapter whose content hash is `content_key` (hex), under `dir`.
    pub(crate) fn new(dir: &Path, engine: &Engine, content_key: &str) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let stem = format!("{content_key}-{:016x}", hasher.finish());
        Self {
            compiled: dir.join(format!("{stem}.cwasm")),
            info: dir.join(format!("{stem}.info.json")),
        }
    }

    /// The compiled component, if a usable one is cached.
    pub(crate) fn load(&self, engine: &Engine) -> Option<Component> {
        if !self.compiled.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be wasmtime's own output. The file sits in
        // the user's private cache directory, was written by this program through an atomic
        // rename, and is named by the hash of the wasm it came from and of the engine settings;
        // wasmtime still checks its header and engine compatibility. Anyone able to plant a file
        // there can already run code as this user (e.g. through their shell startup files).
        let loaded = unsafe { Component::deserialize_file(engine, &self.compiled) };
        match loaded {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::debug!(path = %self.compiled.display(), %error, "ignoring unusable cached adapter");
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
                write_atomically(&self.compiled, &bytes).map_err(|error| error.to_string())
            });
        if let Err(error) = written {
            tracing::debug!(path = %self.compiled.display(), %error, "could not cache a compiled adapter");
        }
    }

    /// The adapter's info recorded next to its compiled form, if present and readable.
    pub(crate) fn load_info(&self) -> Option<AdapterInfo> {
        let bytes = fs::read(&self.info).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records the adapter's (validated) info; failures are ignored.
    pub(crate) fn store_info(&self, info: &AdapterInfo) {
        if let Ok(bytes) = serde_json::to_vec(info)
            && let Err(error) = write_atomically(&self.info, &bytes)
        {
            tracing::debug!(path = %self.info.display(), %error, "could not cache adapter info");
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file; creates the directory (private to the user) when missing.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("cache path has no directory"))?;
    create_private_dir(dir)?;
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("entry");
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A short content key for wasm bytes that are not embedded (third-party files): SHA-256, hex.
pub(crate) fn content_key(wasm: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, wasm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_the_directory_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("entry.bin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file may remain");
    }

    #[test]
    fn info_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let entry = CacheEntry::new(dir.path(), &engine, "abc");
        assert_eq!(entry.load_info(), None);
        let info = AdapterInfo {
            name: "x".to_owned(),
            version: "1".to_owned(),
            programs: vec!["x".to_owned()],
            summary: String::new(),
        };
        entry.store_info(&info);
        assert_eq!(entry.load_info(), Some(info));
        fs::write(&entry.compiled, b"not a compiled component").unwrap();
        assert!(entry.load(&engine).is_none());
    }

    #[test]
    fn an_unusable_cache_directory_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, b"").unwrap();
        let engine = Engine::default();
        let entry = CacheEntry::new(&not_a_dir.join("ecs-exec"), &engine, "abc");
        let info = AdapterInfo {
            name: "x".to_owned(),
            version: "1".to_owned(),
            programs: vec![],
            summary: String::new(),
        };
        entry.store_info(&info);
        assert_eq!(entry.load_info(), None);
        assert!(entry.load(&engine).is_none());
        assert!(write_atomically(&entry.compiled, b"x").is_err());
    }

    #[test]
    fn keys_depend_on_content() {
        assert_ne!(content_key(b"a"), content_key(b"b"));
        assert_eq!(content_key(b"a").len(), 64);
    }
}
