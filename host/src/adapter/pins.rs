//! Pinning third-party adapters by SHA-256: once pins exist, only pinned content loads.
//!
//! Pins come from two places, and either one turns pinning on:
//! - `ecs-exec.lock` in the adapter directory, in the format `sha256sum` prints
//!   (`<64 hex digits>  <file name>` per line, `#` comments), so
//!   `sha256sum *.wasm > ecs-exec.lock` pins a directory as it is;
//! - `ECS_EXEC_ADAPTER_PINS`: digests separated by spaces or commas (an optional `sha256:` prefix
//!   is accepted), for files outside the directory (`--adapter FILE.wasm`) or set-ups where the
//!   directory is not the operator's to write.
//!
//! A file is pinned when its digest is pinned. A file whose name has a lock-file line with another
//! digest changed since it was pinned, and is refused with both digests. Pure parsing and
//! checking; reading the lock file is the caller's job.

use std::collections::HashMap;
use std::path::Path;

use super::error::AdapterErrorKind;
use super::safe::safe_truncated;

/// The lock file looked for in the adapter directory.
pub const LOCK_FILE_NAME: &str = "ecs-exec.lock";
/// The environment variable holding extra pinned digests.
pub const PINS_ENV: &str = "ECS_EXEC_ADAPTER_PINS";
/// Largest lock file read (about 700 lines of 90 bytes).
pub(crate) const MAX_LOCK_FILE_BYTES: u64 = 64 * 1024;

/// The pins in force for one load; empty means pinning is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pins {
    /// Every pinned digest (lower-case hex).
    digests: Vec<String>,
    /// Lock-file lines: file name → digest.
    by_name: HashMap<String, String>,
    /// Pinning is on (a lock file exists, or the variable is set), even if it pins nothing.
    active: bool,
}

impl Pins {
    /// Adds the lines of a lock file; `where_` names it in errors.
    pub(crate) fn add_lock_file(
        &mut self,
        text: &str,
        where_: &Path,
    ) -> Result<(), AdapterErrorKind> {
        self.active = true;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| AdapterErrorKind::BadPins {
                where_: super::safe::safe_path(where_),
                reason: format!(
                    "line {}: {reason}: {}",
                    number + 1,
                    safe_truncated(line, 100)
                ),
            };
            let (digest, name) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("want `<sha256 hex>  <file name>`"))?;
            let digest = parse_digest(digest).ok_or_else(|| bad("not a SHA-256 in hex"))?;
            // `sha256sum` marks binary mode with a `*` before the name.
            let name = name.trim_start();
            let name = name.strip_prefix('*').unwrap_or(name);
            if name.is_empty() {
                return Err(bad("no file name"));
            }
            self.by_name.insert(name.to_owned(), digest.clone());
            self.digests.push(digest);
        }
        Ok(())
    }

    /// Adds the digests of the pins variable.
    pub(crate) fn add_env(&mut self, value: &str) -> Result<(), AdapterErrorKind> {
        let words: Vec<&str> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|word| !word.is_empty())
            .collect();
        if words.is_empty() {
            return Ok(());
        }
        self.active = true;
        for word in words {
            let digest = parse_digest(word).ok_or_else(|| AdapterErrorKind::BadPins {
                where_: PINS_ENV.to_owned(),
                reason: format!("not a SHA-256 in hex: {}", safe_truncated(word, 100)),
            })?;
            self.digests.push(digest);
        }
        Ok(())
    }

    /// Whether pinning is on.
    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// Whether content with this digest is pinned.
    pub(crate) fn pins(&self, digest: &str) -> bool {
        self.digests.iter().any(|pinned| pinned == digest)
    }

    /// Checks a file about to be loaded: `Ok(true)` pinned, `Ok(false)` pinning is off,
    /// an error when pinning is on and this content is not pinned.
    pub(crate) fn check(&self, path: &Path, digest: &str) -> Result<bool, AdapterErrorKind> {
        if !self.active {
            return Ok(false);
        }
        if self.pins(digest) {
            return Ok(true);
        }
        let pinned_for_name = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| self.by_name.get(name));
        Err(match pinned_for_name {
            Some(pinned) => AdapterErrorKind::PinMismatch {
                path: path.to_owned(),
                pinned: pinned.clone(),
                found: digest.to_owned(),
            },
            None => AdapterErrorKind::NotPinned {
                path: path.to_owned(),
                digest: digest.to_owned(),
            },
        })
    }
}

/// A SHA-256 digest in hex (any case, optional `sha256:` prefix), as lower-case hex.
fn parse_digest(word: &str) -> Option<String> {
    let hex = word.strip_prefix("sha256:").unwrap_or(word);
    (hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn no_pins_means_pinning_is_off() {
        let pins = Pins::default();
        assert!(!pins.check(Path::new("/d/x.wasm"), A).unwrap());
        let mut empty_env = Pins::default();
        empty_env.add_env(" , ").unwrap();
        assert!(!empty_env.active());
    }

    #[test]
    fn sha256sum_output_is_a_lock_file() {
        let mut pins = Pins::default();
        let lock = format!(
            "# pinned by ops\n{A}  rails.wasm\n{}  *python.wasm\n\n",
            B.to_uppercase()
        );
        pins.add_lock_file(&lock, Path::new("/d/ecs-exec.lock"))
            .unwrap();
        assert!(pins.check(Path::new("/d/rails.wasm"), A).unwrap());
        assert!(pins.check(Path::new("/d/python.wasm"), B).unwrap());
        assert!(
            pins.check(Path::new("/elsewhere/any.wasm"), A).unwrap(),
            "pinned by content"
        );
    }

    #[test]
    fn unpinned_and_changed_files_are_refused() {
        let mut pins = Pins::default();
        pins.add_lock_file(&format!("{A}  rails.wasm\n"), Path::new("ecs-exec.lock"))
            .unwrap();
        assert!(matches!(
            pins.check(Path::new("/d/rails.wasm"), B),
            Err(AdapterErrorKind::PinMismatch { .. })
        ));
        assert!(matches!(
            pins.check(Path::new("/d/new.wasm"), B),
            Err(AdapterErrorKind::NotPinned { .. })
        ));
        let empty_lock = {
            let mut pins = Pins::default();
            pins.add_lock_file("# nothing trusted yet\n", Path::new("ecs-exec.lock"))
                .unwrap();
            pins
        };
        assert!(empty_lock.check(Path::new("/d/x.wasm"), A).is_err());
    }

    #[test]
    fn the_variable_pins_digests() {
        let mut pins = Pins::default();
        pins.add_env(&format!("sha256:{A},{B}")).unwrap();
        assert!(pins.check(Path::new("x.wasm"), A).unwrap());
        assert!(pins.check(Path::new("x.wasm"), B).unwrap());
        assert!(Pins::default().add_env("nothex").is_err());
    }

    #[test]
    fn malformed_lock_lines_are_errors_that_name_the_line() {
        let mut pins = Pins::default();
        let error = pins
            .add_lock_file("abc  x.wasm\n", Path::new("ecs-exec.lock"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(
            Pins::default()
                .add_lock_file(&format!("{A}\n"), Path::new("l"))
                .is_err()
        );
    }
}
