//! Plan-building helpers shared by the default adapters (`guest/shell`, `rails`, `python`, `clojure`).
//!
//! Everything here is plain Rust with no WIT types and no I/O, so it compiles and is unit-tested on
//! the build machine as well as inside the wasm guests. It owns the three things every default
//! adapter must get exactly right: splitting a pipe into words, quoting words for the agent's
//! shell-style splitter, and the `sh -c` bootstrap that carries input and reports the exit status
//! (see the README's adapter section and `wit/adapter.wit`). It must not guess what a
//! program means; adapters decide the program's argv, this crate only wraps it.

#![forbid(unsafe_code)]

/// How the host delivers input; mirrors `stdin-mode` in `wit/adapter.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinMode {
    /// Nothing is sent; the program's stdin is `/dev/null` (one-off) or an idle terminal.
    None,
    /// Interactive keystrokes forwarded as they are.
    Raw,
    /// The input is inside the command as base64.
    Inline,
    /// The input is streamed as base64 lines after the ready marker, then 0x04.
    StreamBase64,
    /// Exactly `input_len` raw bytes after the ready marker (raw remote terminal).
    StreamBytes,
    /// Raw bytes in `<len>\n<bytes>` chunks after the ready marker, ended by `0\n`.
    StreamChunks,
}

/// Another way the bootstrap may take in the container; mirrors `alternative` in the WIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternativeParts {
    /// Printed instead of the plan's ready marker when the bootstrap takes this way.
    pub ready_marker: String,
    /// How stdin is carried in this way.
    pub stdin: StdinMode,
    /// Whether stderr is still framed with the plan's stderr tag.
    pub stderr_framed: bool,
    /// Shown to the user once when this way is taken.
    pub notice: String,
}

/// A plan in plain Rust; each guest converts it to the WIT `plan` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanParts {
    /// The ExecuteCommand command string.
    pub command: String,
    /// How stdin is carried.
    pub stdin: StdinMode,
    /// Printed once the remote side is ready for streamed input (stream mode only).
    pub ready_marker: Option<String>,
    /// Printed, followed by the decimal exit status and a newline, when the program exits.
    pub exit_trailer: Option<String>,
    /// Lines `<tag><hex>\n` in the output carry the program's stderr.
    pub stderr_tag: Option<String>,
    /// The other ways the bootstrap may take, in the order it prefers them.
    pub alternatives: Vec<AlternativeParts>,
}

/// The parts of a WIT `invocation` that the bootstrap needs (the pipe is the adapter's business).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Interactive session (raw keystrokes) or one-off run (byte-exact data).
    pub interactive: bool,
    /// Input size when known; `Some(0)` means no input.
    pub input_len: Option<u64>,
    /// The whole input when it is small enough to inline.
    pub input: Option<&'a [u8]>,
    /// The per-run nonce from the host.
    pub nonce: &'a str,
}

/// Largest input the host may pass for inlining (mirrors the WIT documentation).
pub const MAX_INLINE_INPUT: usize = 1024;

/// Splits a pipe command into words like a POSIX shell does, without expansions.
///
/// Single quotes keep everything literally; double quotes keep everything but `\` before `"`,
/// `\`, `$`, `` ` `` and newline; a backslash outside quotes escapes the next character. An
/// unterminated quote or trailing backslash is an error, so a typo never runs something else.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(inner) => word.push(inner),
                        None => return Err("unterminated single quote in pipe".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('"' | '\\' | '$' | '`')) => word.push(escaped),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err("unterminated double quote in pipe".to_owned()),
                        },
                        Some(inner) => word.push(inner),
                        None => return Err("unterminated double quote in pipe".to_owned()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(escaped) => word.push(escaped),
                    None => return Err("trailing backslash in pipe".to_owned()),
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Quotes one word so that a shell-style splitter yields it back unchanged.
///
/// Words made only of characters no splitter treats specially stay bare (readable commands);
/// anything else is single-quoted, with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    let is_plain = |c: char| c.is_ascii_alphanumeric() || "_./=:,+@%-".contains(c);
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_owned();
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Standard base64 (RFC 4648 alphabet, `=` padding), as `base64 -d` expects.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |index: u32| char::from(ALPHABET[(index & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let triple = (b0 << 16) | (b1 << 8) | b2;
        out.push(symbol(triple >> 18));
        out.push(symbol(triple >> 12));
        out.push(if chunk.len() > 1 {
            symbol(triple >> 6)
        } else {
            '='
        });
        out.push(if chunk.len() > 2 { symbol(triple) } else { '=' });
    }
    out
}

/// Skips leading `env`, `NAME=value` and `bundle exec` words; returns the index of the program word.
///
/// Adapters use it to find their program inside pipes such as `bundle exec rails runner -` or
/// `env RAILS_ENV=production rails c`.
pub fn program_index(words: &[String]) -> usize {
    let mut index = 0;
    loop {
        let Some(word) = words.get(index) else {
            return index;
        };
        let is_assignment = word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        });
        if basename(word) == "env" || is_assignment {
            index += 1;
        } else if word == "bundle" && words.get(index + 1).is_some_and(|next| next == "exec") {
            index += 2;
        } else {
            return index;
        }
    }
}

/// The file name of a program word (`/usr/bin/python3` → `python3`).
pub fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Wraps `argv` (the remote program and its arguments, unquoted) in the `sh -c` bootstrap.
///
/// Interactive: the program runs on the terminal as it is, and its status follows it. One-off:
/// the bootstrap probes the container for its tools and takes the best way it can (see
/// [`one_off`]): raw binary input and stderr apart where the tools are there, base64 input or
/// merged stderr where they are not, and it prints the ready marker of the way it took.
pub fn wrap(argv: &[String], request: &Request<'_>) -> Result<PlanParts, String> {
    if argv.is_empty() {
        return Err("no program to run".to_owned());
    }
    if argv.iter().any(|word| word.contains('\0')) {
        return Err(
            "an argument contains a NUL byte, which a command line cannot carry".to_owned(),
        );
    }
    let trailer = format!("__ecs_exec_exit_{}:", request.nonce);
    if request.interactive {
        let script = format!(r#"t=$1; shift; trap : INT QUIT; "$@"; s=$?; {REPORT_STATUS}"#);
        return Ok(PlanParts {
            command: command(&script, &[&trailer], argv),
            stdin: StdinMode::Raw,
            ready_marker: None,
            exit_trailer: Some(trailer),
            stderr_tag: None,
            alternatives: Vec::new(),
        });
    }
    Ok(one_off(argv, request, trailer))
}

/// Prints the exit trailer and the status `$s` (`\n` only: one-off terminals have no ONLCR).
const REPORT_STATUS: &str = r#"printf "%s%d\n" "$t" "$s""#;

/// How a one-off's input reaches the program, before the container is probed.
enum Input<'a> {
    /// No input at all: the program's stdin is `/dev/null`.
    Empty,
    /// The input, base64, inside the command (`--inline-input`).
    Inline(&'a [u8]),
    /// Streamed after the ready marker; `Some(n)`: exactly `n` bytes, `None`: length unknown.
    Streamed(Option<u64>),
}

/// The one-off bootstrap. Positional layout: `$0` = `ecs-exec`, `$1` = exit trailer, `$2` = the
/// ready marker's stem, `$3` = stderr tag, `$4` = input length (or empty), `$5` = inline base64
/// (or empty), then the program's argv.
///
/// The way is two letters after the marker's stem: input `R` (raw: `stream-bytes` with
/// `head -c`, or `stream-chunks` with `dd`, on a raw terminal), `B` (`stream-base64` through
/// `base64 -d` on a canonical one) or `N` (nothing streamed); stderr `F` (framed with
/// `od | sed`) or `M` (merged into the output, where `od` or `sed` is missing).
fn one_off(argv: &[String], request: &Request<'_>, trailer: String) -> PlanParts {
    let nonce = request.nonce;
    let stem = format!("__ecs_exec_ready_{nonce}:");
    let tag = format!("__ecs_exec_err_{nonce}:");
    let input = match (request.input_len, request.input) {
        (Some(0), _) => Input::Empty,
        (_, Some(input)) if input.len() <= MAX_INLINE_INPUT => Input::Inline(input),
        (len, _) => Input::Streamed(len),
    };
    // Give up with status 125 rather than corrupt the data when the terminal cannot be set up.
    let give_up = r#"{ printf "%s%d\n" "$t" 125; exit 125; }"#;
    let line_mode = format!("stty -echo -opost || {give_up}");
    let not_streamed = format!("i=N; if [ -t 0 ]; then {line_mode}; fi; ");
    // `raw_tool`: the reader a streamed input's raw way needs (`None`: nothing is streamed).
    let (setup, feed, stdin, raw_tool) = match input {
        Input::Empty => (not_streamed, None, StdinMode::None, None),
        Input::Inline(_) => (
            not_streamed,
            Some(r#"printf %s "$d" | base64 -d"#.to_owned()),
            StdinMode::Inline,
            None,
        ),
        Input::Streamed(len) => {
            let (raw_read, mode, tool) = match len {
                Some(_) => (r#"head -c "$n""#, StdinMode::StreamBytes, "head"),
                // A chunk is up to 1 MiB: where dd can count bytes, it reads it in 64 KiB
                // blocks, which keeps the terminal flowing while the program takes each block.
                None => (
                    r#"if dd if=/dev/null count=0 iflag=count_bytes,fullblock 2>/dev/null; then k() { dd bs=65536 count="$1" iflag=count_bytes,fullblock; }; else k() { dd bs="$1" count=1 iflag=fullblock; }; fi; while IFS= read -r c && [ "$c" -gt 0 ]; do k "$c" 2>/dev/null || exit 1; done"#,
                    StdinMode::StreamChunks,
                    "dd",
                ),
            };
            let setup = format!(
                "i=R; if [ -t 0 ]; then if h {tool} && stty raw -echo 2>/dev/null; then :; \
                 else i=B; {line_mode}; fi; fi; "
            );
            // Ctrl-C is data while the terminal is raw; once the input is in, it interrupts
            // the program again. Only once all of it is in: a reader that stopped early (the
            // program exited without reading) leaves bytes on their way, and with signal
            // characters on, a 0x03 or 0x1C among them would kill the shell before its trailer.
            let feed = format!(
                r#"f() {{ if [ $i = R ]; then {raw_read} && stty isig 2>/dev/null; else base64 -d; fi; }}; "#
            );
            (setup + &feed, Some("f".to_owned()), mode, Some(tool))
        }
    };
    let (pipe_in, no_stdin) = match &feed {
        Some(feed) => (format!("{feed} 3>&- 4>&- | "), ""),
        None => (String::new(), " </dev/null"),
    };
    let merged_pipe_in = feed
        .as_ref()
        .map_or(String::new(), |feed| format!("{feed} | "));
    let script = format!(
        "t=$1 m=$2 e=$3 n=$4 d=$5; shift 5; \
         h() {{ command -v \"$1\" >/dev/null 2>&1; }}; \
         {setup}\
         w=F; h od && h sed || w=M; \
         printf %s \"$m$i$w\"; \
         if [ $w = F ]; then exec 3>&1; \
         s=$( {{ {{ {pipe_in}\"$@\"{no_stdin} 2>&1 1>&3 3>&- 4>&-; echo $? >&4; }} \
         | od -An -v -tx1 3>&- 4>&- | sed \"s/^/$e/\" >&3 3>&- 4>&-; }} 4>&1 ); \
         else {merged_pipe_in}\"$@\"{no_stdin}; s=$?; fi; \
         {REPORT_STATUS}"
    );
    let len = match input {
        Input::Streamed(Some(len)) => len.to_string(),
        _ => String::new(),
    };
    let data = match input {
        Input::Inline(input) => base64(input),
        _ => String::new(),
    };
    let command = command(&script, &[&trailer, &stem, &tag, &len, &data], argv);

    let marker = |way: &str| format!("{stem}{way}");
    let merged_notice = "the container has no od or sed, so the program's stderr comes back \
                         mixed into its stdout";
    let (ready_marker, alternatives) = match raw_tool {
        None => (
            marker("NF"),
            vec![AlternativeParts {
                ready_marker: marker("NM"),
                stdin,
                stderr_framed: false,
                notice: merged_notice.to_owned(),
            }],
        ),
        Some(raw_tool) => {
            let base64_notice = format!(
                "the container's terminal cannot carry raw input (no `stty raw` or no {raw_tool}), \
                 so the input goes as base64, which is slower"
            );
            let alternative = |way: &str, stdin, stderr_framed, notice: String| AlternativeParts {
                ready_marker: marker(way),
                stdin,
                stderr_framed,
                notice,
            };
            (
                marker("RF"),
                vec![
                    alternative("BF", StdinMode::StreamBase64, true, base64_notice.clone()),
                    alternative("RM", stdin, false, merged_notice.to_owned()),
                    alternative(
                        "BM",
                        StdinMode::StreamBase64,
                        false,
                        format!(
                            "{base64_notice}; and it has no od or sed, so stderr comes back in stdout"
                        ),
                    ),
                ],
            )
        }
    };
    PlanParts {
        command,
        stdin,
        ready_marker: Some(ready_marker),
        exit_trailer: Some(trailer),
        stderr_tag: Some(tag),
        alternatives,
    }
}

/// `sh -c '<script>' ecs-exec <parameters...> <argv...>`, every word quoted for the agent's
/// splitter.
fn command(script: &str, parameters: &[&str], argv: &[String]) -> String {
    let mut words = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        quote(script),
        "ecs-exec".to_owned(),
    ];
    words.extend(parameters.iter().map(|parameter| quote(parameter)));
    words.extend(argv.iter().map(|word| quote(word)));
    words.join(" ")
}

/// Turns an invocation of the guest's own WIT bindings into its `Plan`: builds the [`Request`],
/// calls [`wrap`] and maps [`PlanParts`] field by field onto the guest's `Plan`, `Alternative`
/// and `StdinMode` (contract 0.2), which must be in scope where it is used. A macro because every
/// guest's `wit_bindgen::generate!` makes its own types, which this crate cannot name.
#[macro_export]
macro_rules! wrap_plan {
    ($argv:expr, $inv:expr, $nonce:expr) => {{
        let request = $crate::Request {
            interactive: $inv.interactive,
            input_len: $inv.input_len,
            input: $inv.input.as_deref(),
            nonce: &$nonce,
        };
        let mode = |mode: $crate::StdinMode| match mode {
            $crate::StdinMode::None => StdinMode::None,
            $crate::StdinMode::Raw => StdinMode::Raw,
            $crate::StdinMode::Inline => StdinMode::Inline,
            $crate::StdinMode::StreamBase64 => StdinMode::StreamBase64,
            $crate::StdinMode::StreamBytes => StdinMode::StreamBytes,
            $crate::StdinMode::StreamChunks => StdinMode::StreamChunks,
        };
        $crate::wrap(&$argv, &request).map(|parts| Plan {
            command: parts.command,
            stdin: mode(parts.stdin),
            ready_marker: parts.ready_marker,
            exit_trailer: parts.exit_trailer,
            stderr_tag: parts.stderr_tag,
            alternatives: parts
                .alternatives
                .into_iter()
                .map(|alternative| Alternative {
                    ready_marker: alternative.ready_marker,
                    stdin: mode(alternative.stdin),
                    stderr_framed: alternative.stderr_framed,
                    notice: alternative.notice,
                })
                .collect(),
        })
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_handles_quotes_and_escapes() {
        let words = split_words(r#"rails runner 'a b' "c \"d\" \$e" f\ g"#).unwrap();
        assert_eq!(words, ["rails", "runner", "a b", r#"c "d" $e"#, "f g"]);
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("end\\").is_err());
    }

    #[test]
    fn quote_round_trips_through_the_splitter() {
        for word in [
            "plain", "", "a b", "it's", "'", "$HOME", "`x`", "#c", "-n", "a\nb\r", "\\", "\"q\"",
        ] {
            let quoted = quote(word);
            assert_eq!(
                split_words(&quoted).unwrap(),
                [word],
                "word {word:?} quoted as {quoted}"
            );
        }
        assert_eq!(quote("rails"), "rails");
        assert_eq!(quote("#c"), "'#c'");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0x00, 0xfe]), "/wD+");
    }

    #[test]
    fn program_index_skips_env_and_bundle_exec() {
        let words = split_words("env RAILS_ENV=production bundle exec rails c").unwrap();
        assert_eq!(program_index(&words), 4);
        assert_eq!(program_index(&split_words("python3 -").unwrap()), 0);
        assert_eq!(program_index(&split_words("env").unwrap()), 1);
        assert_eq!(
            program_index(&split_words("/usr/bin/env python3").unwrap()),
            1
        );
        assert_eq!(program_index(&split_words("=x").unwrap()), 0);
    }

    fn request(interactive: bool, input: Option<&[u8]>, input_len: Option<u64>) -> Request<'_> {
        Request {
            interactive,
            input_len,
            input,
            nonce: "0123456789abcdef",
        }
    }

    /// Runs a one-off's bootstrap with the local `sh`, `stdin` as its input (not a terminal, so
    /// it is never made raw), `stty` replaced by a script that logs its arguments, and each of
    /// `fakes` (name, shell body) in place of the tool of that name. Returns the `stty` log.
    #[cfg(unix)]
    fn stty_calls(input_len: Option<u64>, fakes: &[(&str, &str)], stdin: &[u8]) -> String {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ecs-exec-kit-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stty.log");
        let stty = format!("printf '%s\\n' \"$*\" >> '{}'", log.display());
        for (name, body) in fakes.iter().copied().chain([("stty", stty.as_str())]) {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let plan = wrap(&["cat".to_owned()], &request(false, None, input_len)).unwrap();
        let words = split_words(&plan.command).unwrap();
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = std::process::Command::new(&words[0])
            .args(&words[1..])
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The script may stop reading early, which is what some cases test.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait().unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        calls
    }

    /// Signal characters come back on only once the raw input is all read: bytes still on
    /// their way after a reader stopped early would be taken as Ctrl-C or Ctrl-\.
    #[cfg(unix)]
    #[test]
    fn signal_characters_come_back_only_after_all_the_raw_input_was_read() {
        // stream-bytes: `head -c "$n"`.
        assert_eq!(stty_calls(Some(5), &[], b"hello"), "isig\n");
        let killed_by_sigpipe = [("head", "exit 141")];
        assert_eq!(stty_calls(Some(5), &killed_by_sigpipe, b"hello"), "");
        // stream-chunks: a `dd` per chunk, up to the `0` chunk.
        assert_eq!(stty_calls(None, &[], b"5\nhello0\n"), "isig\n");
        let killed_by_sigpipe = [("dd", "exit 141")];
        assert_eq!(stty_calls(None, &killed_by_sigpipe, b"5\nhello0\n"), "");
    }

    #[test]
    fn wrap_picks_the_stdin_mode_from_the_request() {
        let argv = ["cat".to_owned()];
        let inline = wrap(&argv, &request(false, Some(b"hi"), Some(2))).unwrap();
        assert_eq!(inline.stdin, StdinMode::Inline);
        assert!(inline.command.contains(" aGk= cat"), "{}", inline.command);
        let chunks = wrap(&argv, &request(false, None, None)).unwrap();
        assert_eq!(chunks.stdin, StdinMode::StreamChunks);
        assert!(chunks.command.contains("iflag=fullblock"));
        let bytes = wrap(&argv, &request(false, None, Some(5000))).unwrap();
        assert_eq!(bytes.stdin, StdinMode::StreamBytes);
        assert!(bytes.command.contains(r#"head -c "$n""#));
        assert!(bytes.command.contains(" 5000 '' cat"), "{}", bytes.command);
        let none = wrap(&argv, &request(false, None, Some(0))).unwrap();
        assert_eq!(none.stdin, StdinMode::None);
        assert!(none.command.contains("</dev/null"));
        let interactive = wrap(&argv, &request(true, None, None)).unwrap();
        assert_eq!(interactive.stdin, StdinMode::Raw);
        assert!(interactive.command.contains("trap : INT QUIT"));
        assert_eq!(
            (interactive.ready_marker, interactive.stderr_tag),
            (None, None)
        );
        for plan in [inline, chunks, bytes, none] {
            assert_eq!(
                plan.exit_trailer.as_deref(),
                Some("__ecs_exec_exit_0123456789abcdef:")
            );
            let words = split_words(&plan.command).unwrap();
            assert_eq!(&words[..2], ["sh", "-c"]);
            assert_eq!(words.last().map(String::as_str), Some("cat"));
            assert_eq!(
                plan.stderr_tag.as_deref(),
                Some("__ecs_exec_err_0123456789abcdef:")
            );
            let marker = plan.ready_marker.as_deref().unwrap();
            assert!(marker.starts_with("__ecs_exec_ready_0123456789abcdef:"));
            assert!(marker.ends_with('F'), "the own way frames stderr");
            for alternative in &plan.alternatives {
                assert_ne!(alternative.ready_marker, marker);
                assert!(!alternative.notice.is_empty());
            }
        }
    }

    #[test]
    fn raw_input_falls_back_to_base64_and_framed_stderr_to_merged() {
        let plan = wrap(&["cat".to_owned()], &request(false, None, None)).unwrap();
        let ways: Vec<(&str, StdinMode, bool)> = plan
            .alternatives
            .iter()
            .map(|a| {
                (
                    &a.ready_marker[a.ready_marker.len() - 2..],
                    a.stdin,
                    a.stderr_framed,
                )
            })
            .collect();
        assert_eq!(
            ways,
            [
                ("BF", StdinMode::StreamBase64, true),
                ("RM", StdinMode::StreamChunks, false),
                ("BM", StdinMode::StreamBase64, false),
            ]
        );
        assert!(plan.alternatives[0].notice.contains("dd"));
        assert!(plan.alternatives[1].notice.contains("od or sed"));
    }

    #[test]
    fn wrap_rejects_nul_and_empty_argv() {
        assert!(wrap(&[], &request(false, None, None)).is_err());
        assert!(wrap(&["a\0b".to_owned()], &request(false, None, None)).is_err());
    }
}
