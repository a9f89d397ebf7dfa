//! Third-party adapter files on disk: which ones a directory holds, and reading one, bounded.
//!
//! Only regular files are read (a symlink to one is fine): a FIFO would block the read forever and
//! a link to `/dev/zero` would never end. The file is opened without blocking, its type and size
//! are checked on the opened file (not on a path that may change in between), and the read stops
//! one byte past the limit whatever the metadata said. A file's [`Identity`] (device, inode, size,
//! modification and change times) lets a run recognise a file it has already hashed and described
//! without reading it again.

use std::fs::{self, File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::error::AdapterErrorKind;

/// Largest adapter file accepted, in bytes. The built-in adapters are about 100 KB and a Rust
/// adapter with its standard library rarely passes 1 MB; 4 MiB leaves room for that and more,
/// while keeping a hostile file's compilation within seconds and a few hundred MiB (wasmtime
/// needed 19 s and 360 MiB for a 4 MB component, the compile bound stops anything slower).
pub const MAX_ADAPTER_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Who a file is, as far as the file system says: if none of these changed, neither did the
/// content (a write changes the change time, which no user can set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(metadata: &Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Every `*.wasm` entry directly in `dir`, sorted by name, with its identity (symlinks followed).
/// An entry that is not a regular file is an error, not skipped: a file the operator expects to
/// be loaded must not silently vanish.
pub(crate) fn wasm_files_in(
    dir: &Path,
) -> Result<Vec<(PathBuf, Identity)>, (PathBuf, AdapterErrorKind)> {
    let read_error = |path: &Path, source| {
        (
            path.to_owned(),
            AdapterErrorKind::Read {
                path: path.to_owned(),
                source,
            },
        )
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| read_error(dir, source))? {
        let path = entry.map_err(|source| read_error(dir, source))?.path();
        if path.extension().is_none_or(|extension| extension != "wasm") {
            continue;
        }
        let metadata = fs::metadata(&path).map_err(|source| read_error(&path, source))?;
        if !metadata.is_file() {
            let kind = not_regular(&metadata);
            return Err((path.clone(), AdapterErrorKind::NotRegular { path, kind }));
        }
        files.push((path, Identity::of(&metadata)));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Reads a whole adapter file: regular files only, at most `limit` bytes, checked on the opened
/// file. Returns the bytes and the identity of what was read.
pub(crate) fn read_adapter_file(
    path: &Path,
    limit: u64,
) -> Result<(Vec<u8>, Identity), AdapterErrorKind> {
    let read_error = |source| AdapterErrorKind::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes nothing
    // for a regular file, the only kind read past the check below.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(AdapterErrorKind::NotRegular {
            path: path.to_owned(),
            kind: not_regular(&metadata),
        });
    }
    let too_large = |size| AdapterErrorKind::TooLarge {
        path: path.to_owned(),
        size,
        limit,
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok((bytes, Identity::of(&metadata)))
}

fn not_regular(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.wasm");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_adapter_file(&fifo, 100),
            Err(AdapterErrorKind::NotRegular { kind: "a FIFO", .. })
        ));
        assert!(matches!(
            wasm_files_in(dir.path()),
            Err((_, AdapterErrorKind::NotRegular { kind: "a FIFO", .. }))
        ));
    }

    #[test]
    fn a_link_to_a_device_is_refused_and_the_read_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read_adapter_file(&link, 100),
            Err(AdapterErrorKind::NotRegular {
                kind: "a character device",
                ..
            })
        ));
        let big = dir.path().join("big.wasm");
        fs::write(&big, vec![0u8; 101]).unwrap();
        assert!(matches!(
            read_adapter_file(&big, 100),
            Err(AdapterErrorKind::TooLarge {
                size: 101,
                limit: 100,
                ..
            })
        ));
        let (bytes, _) = read_adapter_file(&big, 101).unwrap();
        assert_eq!(bytes.len(), 101);
    }

    #[test]
    fn identity_changes_with_content_and_listing_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.wasm"), b"1").unwrap();
        fs::write(dir.path().join("a.wasm"), b"1").unwrap();
        fs::write(dir.path().join("notes.txt"), b"1").unwrap();
        let files = wasm_files_in(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|(path, _)| path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.wasm", "b.wasm"]);
        let before = files[0].1;
        fs::write(dir.path().join("a.wasm"), b"2").unwrap();
        let after = wasm_files_in(dir.path()).unwrap()[0].1;
        assert_ne!(before, after, "a rewrite changes the change time");
    }
}
