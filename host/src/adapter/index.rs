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

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: &str = r#"{"dev":1,"ino":2,"size":3,"mtime":[4,0],"ctime":[5,0]}"#;

    fn index_file(info: &str) -> String {
        format!(r#"{{"entries":[{{"identity":{IDENTITY},"sha256":"ab","info":{info}}}]}}"#)
    }

    #[test]
    fn records_of_an_older_shape_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(TrustedDir::open(dir.path()).unwrap());
        let adapters = Path::new("/adapters");
        let name = Index::open(Some(&cache), adapters).name;
        assert!(name.ends_with(&format!("-{}.json", super::super::cache::RECORD_FORMAT)));
        let identity: Identity = serde_json::from_str(IDENTITY).unwrap();
        let fields = r#""name":"x","version":"1","programs":["x"],"summary":"""#;

        // Written by a release before the contract version was recorded: read as unknown, so
        // the file is described again rather than misread.
        cache
            .write(&name, index_file(&format!("{{{fields}}}")).as_bytes())
            .unwrap();
        assert_eq!(Index::open(Some(&cache), adapters).get(&identity), None);

        let current = index_file(&format!(r#"{{{fields},"contract":"0.1.1"}}"#));
        cache.write(&name, current.as_bytes()).unwrap();
        let (digest, info) = Index::open(Some(&cache), adapters)
            .get(&identity)
            .expect("a current record is read");
        assert_eq!((digest.as_str(), info.contract.as_str()), ("ab", "0.1.1"));
    }
}
