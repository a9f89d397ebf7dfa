//! The remote side of `ecs-exec cp`: POSIX `sh` scripts the host puts in the ExecuteCommand
//! command, and the protocol lines they print (README "Copying files").
//!
//! Both scripts turn the terminal's echo and output processing off first, like the adapters'
//! bootstrap, and end with the run's exit trailer and a status. Every message for the host is a
//! line starting with [`LINE_PREFIX`]; the file's bytes travel between such lines. Paths and
//! modes are positional parameters, never pasted into the script text, so no path can change
//! what the script does.

use crate::adapter::{Alternative, Plan, StdinMode};

/// Starts every line the scripts print for the host.
pub const LINE_PREFIX: &str = "ecs-exec-cp: ";

/// Exit statuses the scripts report (sysexits), read back by the host.
pub const STATUS_NO_INPUT: i32 = 66;
pub const STATUS_CANNOT_CREATE: i32 = 73;
pub const STATUS_IO_ERROR: i32 = 74;
pub const STATUS_NO_PERMISSION: i32 = 77;
/// The terminal could not be made transparent: the bytes would be garbled.
pub const STATUS_NO_STTY: i32 = 125;

/// Shared by both scripts: `say` prints a protocol line, `end` prints the trailer and exits.
const PRELUDE: &str = r#"t=$1; say() { printf 'ecs-exec-cp: %s\n' "$*"; }; end() { printf '%s%d\n' "$t" "$1"; exit "$1"; }; if [ -t 0 ]; then stty -echo -opost || end 125; fi; "#;

/// Shared by both receiving scripts: `receive FILE` takes the way its tools allow, announces it
/// with the ready marker's stem `$m` and a letter, and writes the `$n` bytes of the stream to
/// FILE: `R`, the bytes as they are on a raw terminal, read by `dd` (exactly `$n` of them: the
/// digest line follows, and `head -c` may read ahead into it); `B`, base64 lines through a
/// canonical one (no `dd` that counts bytes, or a terminal that cannot be raw). `refuse`
/// announces `X`, a way that takes no input: the host drops what comes before a marker, and the
/// message must reach it.
const RECEIVE: &str = r#"refuse() { printf %s "${m}X"; say "$1"; end "${2:-73}"; }; way() { i=B; if dd if=/dev/null count=0 iflag=count_bytes,fullblock 2>/dev/null; then if [ ! -t 0 ]; then i=R; elif stty raw -echo 2>/dev/null; then i=R; fi; fi; }; receive() { printf %s "$m$i"; if [ $i = R ]; then dd bs=65536 count="$n" iflag=count_bytes,fullblock 2>/dev/null > "$1"; else base64 -d > "$1"; fi; }; "#;

/// Receives a file of `$5` bytes into `$3` with mode `$4` (octal). Takes its way once the
/// temporary file beside the destination exists, receives the stream into it (see
/// [`RECEIVE`]), then reads the SHA-256 the host computed (the line after the stream) and
/// compares it with its own. Only a verified file is given its mode and renamed into place; any
/// ending before that, a hang-up included, removes the temporary file.
const UPLOAD: &str = r#"m=$2 d=$3 p=$4 n=$5; tmp="$d.ecs-exec-part-$$"; trap 'rm -f "$tmp"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; if [ -d "$d" ]; then refuse "$d is a directory: name the file to write"; fi; ( : > "$tmp" ) 2>/dev/null || refuse "cannot create a file beside $d: check that its directory exists and is writable"; way; receive "$tmp" || { say "receiving the stream into $tmp failed (disk full?)"; end 74; }; IFS= read -r want; if command -v sha256sum >/dev/null 2>&1; then got=$(sha256sum < "$tmp") || { say "sha256sum failed"; end 74; }; got=${got%% *}; if [ "$got" != "$want" ]; then say "checksum mismatch: the container computed $got"; end 74; fi; v=verified; else v=unverified; fi; chmod "$p" "$tmp" 2>/dev/null || { say "cannot set mode $p on $tmp"; end 73; }; mv -f "$tmp" "$d" 2>/dev/null || { say "cannot rename the received file to $d"; end 73; }; trap - EXIT; say "received $v"; end 0"#;

/// Sends the file `$2`: a header line with its mode (octal) and size, exactly that many bytes,
/// then a line with its SHA-256 (`-` when the container has no `sha256sum`).
const DOWNLOAD: &str = r#"s=$2; if [ -d "$s" ]; then say "$s is a directory: copy a file"; end 66; fi; if [ ! -e "$s" ]; then say "$s does not exist"; end 66; fi; if [ ! -r "$s" ]; then say "$s is not readable"; end 77; fi; size=$(wc -c < "$s") || { say "cannot read $s"; end 74; }; size=$((size + 0)); mode=$(stat -c %a "$s" 2>/dev/null) || mode=644; say "file $mode $size"; head -c "$size" "$s" 2>/dev/null; if command -v sha256sum >/dev/null 2>&1; then sum=$(sha256sum < "$s"); sum=${sum%% *}; else sum=-; fi; printf '\n'; say "sha256 $sum"; end 0"#;

/// Receives a directory (`-r`): the stream is a tar archive of its contents (`$5` bytes),
/// staged beside the destination `$3` and verified as [`UPLOAD`] does, then unpacked into a
/// temporary directory that is renamed into place. An existing directory `$3` receives it as
/// `$3/$4` (the source's name); an existing anything else is refused. Owners are not restored
/// (`-o`).
const UPLOAD_TREE: &str = r#"m=$2 d=$3 a=$4 n=$5; command -v tar >/dev/null 2>&1 || refuse "the container has no tar, which copying a directory needs" 69; if [ -d "$d" ]; then d="$d/$a"; fi; if [ -e "$d" ]; then refuse "$d already exists: remove it or name a new path" 73; fi; tmp="$d.ecs-exec-part-$$"; trap 'rm -rf "$tmp" "$tmp.tar"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; mkdir "$tmp" 2>/dev/null || refuse "cannot create a directory beside $d: check that its parent exists and is writable" 73; way; receive "$tmp.tar" || { say "receiving the stream failed (disk full?)"; end 74; }; IFS= read -r want; if command -v sha256sum >/dev/null 2>&1; then got=$(sha256sum < "$tmp.tar") || { say "sha256sum failed"; end 74; }; got=${got%% *}; if [ "$got" != "$want" ]; then say "checksum mismatch: the container computed $got"; end 74; fi; v=verified; else v=unverified; fi; tar -x -o -f "$tmp.tar" -C "$tmp" 2>/dev/null || { say "unpacking the archive into $tmp failed"; end 74; }; rm -f "$tmp.tar"; mv "$tmp" "$d" 2>/dev/null || { say "cannot rename the received directory to $d"; end 73; }; trap - EXIT; say "received $v"; end 0"#;

/// Sends the directory `$2` (`-r`) as a tar archive of its contents, framed as [`DOWNLOAD`]
/// frames a file (the header's mode is the directory's). The archive is staged in a temporary
/// file first, since the frame needs its size.
const DOWNLOAD_TREE: &str = r#"s=$2; if [ ! -d "$s" ]; then say "$s is not a directory"; end 66; fi; if [ ! -r "$s" ] || [ ! -x "$s" ]; then say "$s is not readable"; end 77; fi; command -v tar >/dev/null 2>&1 || { say "the container has no tar, which copying a directory needs"; end 69; }; tmp=$(mktemp 2>/dev/null) || { say "cannot stage the archive: mktemp failed (is /tmp writable?)"; end 73; }; trap 'rm -f "$tmp"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; tar -c -f "$tmp" -C "$s" . 2>/dev/null || { say "archiving $s failed"; end 74; }; size=$(wc -c < "$tmp"); size=$((size + 0)); mode=$(stat -c %a "$s" 2>/dev/null) || mode=755; say "file $mode $size"; head -c "$size" "$tmp"; if command -v sha256sum >/dev/null 2>&1; then sum=$(sha256sum < "$tmp"); sum=${sum%% *}; else sum=-; fi; printf '\n'; say "sha256 $sum"; end 0"#;

/// The plan that unpacks the streamed tar archive (`len` bytes) of a directory named `name` at
/// `remote_path`.
pub fn upload_tree_plan(remote_path: &str, name: &str, len: u64, nonce: &str) -> Plan {
    receiving_plan(UPLOAD_TREE, remote_path, name, len, nonce)
}

fn ready_stem(nonce: &str) -> String {
    format!("__ecs_exec_ready_{nonce}:")
}

/// A receiving script's plan (`body` after the shared prelude and [`RECEIVE`], with the remote
/// path, one more argument and the length): raw bytes when it announces `R`, base64 when it
/// announces `B`, nothing when it refuses (`X`).
fn receiving_plan(body: &str, remote_path: &str, argument: &str, len: u64, nonce: &str) -> Plan {
    let stem = ready_stem(nonce);
    let script = format!("{PRELUDE}{RECEIVE}{body}");
    let len = len.to_string();
    Plan {
        command: command(&[&script, &trailer(nonce), &stem, remote_path, argument, &len]),
        stdin: StdinMode::StreamBytes,
        ready_marker: Some(format!("{stem}R")),
        exit_trailer: Some(trailer(nonce)),
        stderr_tag: None,
        alternatives: vec![
            Alternative {
                ready_marker: format!("{stem}B"),
                stdin: StdinMode::StreamBase64,
                stderr_framed: false,
                notice: "the container has no dd that counts bytes (iflag=count_bytes), or its \
                         terminal cannot be raw: the copy goes as base64, which is slower"
                    .to_owned(),
            },
            // The script refuses before reading anything; its message follows the marker.
            Alternative {
                ready_marker: format!("{stem}X"),
                stdin: StdinMode::None,
                stderr_framed: false,
                notice: String::new(),
            },
        ],
    }
}

/// The plan that prints the directory `remote_path` as a framed tar archive.
pub fn download_tree_plan(remote_path: &str, nonce: &str) -> Plan {
    let trailer = trailer(nonce);
    let script = format!("{PRELUDE}{DOWNLOAD_TREE}");
    Plan {
        command: command(&[&script, &trailer, remote_path]),
        stdin: StdinMode::None,
        ready_marker: None,
        exit_trailer: Some(trailer),
        stderr_tag: None,
        alternatives: Vec::new(),
    }
}

/// The plan that writes the streamed input (`len` bytes) to `remote_path` with `mode`,
/// verifying `nonce`'s run end to end.
pub fn upload_plan(remote_path: &str, mode: u32, len: u64, nonce: &str) -> Plan {
    receiving_plan(UPLOAD, remote_path, &format!("{mode:o}"), len, nonce)
}

/// The plan that prints `remote_path` framed as [`DOWNLOAD`] describes.
pub fn download_plan(remote_path: &str, nonce: &str) -> Plan {
    let trailer = trailer(nonce);
    let script = format!("{PRELUDE}{DOWNLOAD}");
    Plan {
        command: command(&[&script, &trailer, remote_path]),
        stdin: StdinMode::None,
        ready_marker: None,
        exit_trailer: Some(trailer),
        stderr_tag: None,
        alternatives: Vec::new(),
    }
}

fn trailer(nonce: &str) -> String {
    format!("__ecs_exec_exit_{nonce}:")
}

/// `sh -c SCRIPT ecs-exec ARGS…`, each word quoted for the agent's shell-style splitter.
fn command(script_and_args: &[&str]) -> String {
    let mut words = vec!["sh".to_owned(), "-c".to_owned()];
    let (script, args) = script_and_args.split_first().unwrap_or((&"", &[]));
    words.push(quote(script));
    words.push("ecs-exec".to_owned());
    words.extend(args.iter().map(|word| quote(word)));
    words.join(" ")
}

/// One word for a shell-style splitter: bare when plain, else single-quoted (`'` as `'\''`).
fn quote(word: &str) -> String {
    let is_plain = |c: char| c.is_ascii_alphanumeric() || "_./=:,+@%-".contains(c);
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Why a remote path cannot be used: the command line could not carry it intact.
pub fn check_remote_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        Err("the remote path is empty")
    } else if path.contains(['\0', '\n', '\r']) {
        Err("the remote path contains a NUL or line break, which the command line cannot carry")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a shell-style splitter makes of a command (enough of one for these words).
    fn split(command: &str) -> Vec<String> {
        shell_words::split(command).expect("splittable")
    }

    #[test]
    fn paths_and_modes_are_arguments_never_script_text() {
        let path = "/tmp/it's $(rm -rf /) `x` ;&|";
        let plan = upload_plan(path, 0o750, 12345, "n0nce");
        let words = split(&plan.command);
        assert_eq!(words[0..2], ["sh", "-c"]);
        assert!(words[2].starts_with(PRELUDE));
        assert_eq!(
            words[3..],
            [
                "ecs-exec",
                "__ecs_exec_exit_n0nce:",
                "__ecs_exec_ready_n0nce:",
                path,
                "750",
                "12345"
            ]
        );
        assert_eq!(plan.stdin, StdinMode::StreamBytes);
        assert_eq!(
            plan.ready_marker.as_deref(),
            Some("__ecs_exec_ready_n0nce:R")
        );
        assert_eq!(plan.alternatives[0].stdin, StdinMode::StreamBase64);
        assert_eq!(
            plan.alternatives[0].ready_marker,
            "__ecs_exec_ready_n0nce:B"
        );

        let plan = download_plan(path, "n0nce");
        let words = split(&plan.command);
        assert_eq!(words[3..], ["ecs-exec", "__ecs_exec_exit_n0nce:", path]);
        assert_eq!(plan.stdin, StdinMode::None);
        assert_eq!(plan.exit_trailer.as_deref(), Some("__ecs_exec_exit_n0nce:"));
    }

    #[test]
    fn the_scripts_are_valid_posix_sh() {
        for script in
            [UPLOAD, DOWNLOAD, UPLOAD_TREE, DOWNLOAD_TREE].map(|s| format!("{PRELUDE}{RECEIVE}{s}"))
        {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .expect("sh runs");
            assert!(status.success(), "{script}");
        }
    }

    #[test]
    fn download_frames_a_local_file_when_run_by_a_plain_sh() {
        // Without a terminal the prelude skips stty: the framing itself is what is checked.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        std::fs::write(&file, b"a\nb\x00\xff").unwrap();
        let output = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("{PRELUDE}{DOWNLOAD}"),
                "ecs-exec",
                "TRAILER:",
            ])
            .arg(&file)
            .output()
            .expect("sh runs");
        let text = output.stdout;
        let header = b"ecs-exec-cp: file ";
        assert!(
            text.starts_with(header),
            "{}",
            String::from_utf8_lossy(&text)
        );
        let newline = text.iter().position(|&b| b == b'\n').unwrap();
        let fields = String::from_utf8_lossy(&text[header.len()..newline]).into_owned();
        assert!(fields.ends_with(" 5"), "{fields}");
        assert_eq!(&text[newline + 1..newline + 6], b"a\nb\x00\xff");
        let rest = String::from_utf8_lossy(&text[newline + 6..]).into_owned();
        assert!(rest.starts_with("\necs-exec-cp: sha256 "), "{rest}");
        assert!(rest.ends_with("TRAILER:0\n"), "{rest}");
    }

    #[test]
    fn remote_paths_a_command_line_cannot_carry_are_refused() {
        assert!(check_remote_path("/tmp/x y/'z'").is_ok());
        assert!(check_remote_path("").is_err());
        assert!(check_remote_path("/tmp/a\nb").is_err());
        assert!(check_remote_path("/tmp/a\0b").is_err());
    }
}
