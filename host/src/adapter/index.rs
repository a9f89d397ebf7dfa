//! The index of an adapter directory: file identity → SHA-256 and validated `info`.
//!
//! Choosing the adapter for a run needs every third-party adapter's declared programs, and pin
//! checks need every file's digest. Reading and hashing every file on every run made a directory
//! of large files cost hundreds of MiB, so this index, kept in the compile cache (and so under
//! its ownership checks), remembers both per file [`Identity`]. A file whose identity is known is
//! not opened at all; only the adapter finally chosen is read (and its digest checked again)
//! before it runs. One small JSON file per adapter directory, rewritten only when it changes.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;
use std::sync::Arc;

use super::cache::TrustedDir;
use super::contract::AdapterInfo;
use super::files::Identity;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    identity: Identity,
    sha256: String,
    info: AdapterInfo,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct IndexFile {
    entries: Vec<Entry>,
}

/// The index of one adapter directory, for one load.
#[derive(Debug, Default)]
pub(crate) struct Index {
    dir: Option<Arc<TrustedDir>>,
    name: String,
    known: HashMap<Identity, Entry>,
    seen: Vec<Entry>,
    changed: bool,
}

impl Index {
    /// The index of `adapter_dir` kept in `cache` (an empty one without a usable cache).
    pub(crate) fn open(cache: Option<&Arc<TrustedDir>>, adapter_dir: &Path) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        adapter_dir.hash(&mut hasher);
        let name = format!(
            "dir-index-{:016x}-{}.json",
            hasher.finish(),
            super::cache::RECORD_FORMAT
        );
        let known = cache
            .and_then(|dir| dir.read(&name).ok().flatten())
            .and_then(|bytes| serde_json::from_slice::<IndexFile>(&bytes).ok())
            .map(|file| {
                file.entries
                    .into_iter()
                    .map(|entry| (entry.identity, entry))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            dir: cache.cloned(),
            name,
            known,
            seen: Vec::new(),
            changed: false,
        }
    }

    /// The digest and info recorded for a file of this identity, if any; kept for the next save.
    pub(crate) fn get(&mut self, identity: &Identity) -> Option<(String, AdapterInfo)> {
        let entry = self.known.get(identity)?.clone();
        let found = (entry.sha256.clone(), entry.info.clone());
        self.seen.push(entry);
        Some(found)
    }

    /// Records a file just read and described.
    pub(crate) fn record(&mut self, identity: Identity, sha256: &str, info: &AdapterInfo) {
        self.changed = true;
        self.seen.push(Entry {
            identity,
            sha256: sha256.to_owned(),
            info: info.clone(),
        });
    }

    /// Writes the index back when a file was added, changed or removed; failures are ignored.
    pub(crate) fn save(self) {
        let Some(dir) = &self.dir else { return };
        if !self.changed && self.seen.len() == self.known.len() {
            return;
        }
        let file = IndexFile { entries: self.seen };
        if let Ok(bytes) = serde_json::to_vec(&file)
            && let Err(error) = dir.write(&self.name, &bytes)
        {
            tracing::debug!(%error, "could not save the adapter directory index");
        }
    }
}
