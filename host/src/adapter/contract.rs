//! The plain-Rust side of the WIT contract: the types the rest of the host uses, and validation.
//!
//! Owns what a valid `info` and a valid `plan` are (sizes, characters, which stdin modes go with
//! which kind of run), so that the run layer can follow any plan it is handed without checking
//! it again. Pure functions only: no wasmtime, no I/O. The limits here are the ones documented in
//! `wit/adapter.wit`; change both together.

use std::fmt;

/// Largest input a guest may be handed for inlining (`invocation.input`).
pub const MAX_INLINE_INPUT: usize = 1024;
/// Largest `plan.command`, in bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Largest ready marker or exit trailer, in bytes.
pub const MAX_MARKER_BYTES: usize = 256;
/// Longest line of base64 the host may send in `stream-base64` mode (a multiple of 4).
pub const STREAM_LINE_BASE64_CHARS: usize = 4092;
/// The byte that ends streamed input (Ctrl-D at the start of a line in canonical mode).
pub const STREAM_EOF_BYTE: u8 = 0x04;
/// Largest chunk in `stream-chunks` mode, in bytes.
pub const MAX_STREAM_CHUNK: usize = 1 << 20;
/// Most alternatives a plan may offer.
pub const MAX_ALTERNATIVES: usize = 8;
/// Longest notice of an alternative, in characters.
pub const MAX_NOTICE_CHARS: usize = 200;

const MAX_NAME_CHARS: usize = 64;
const MAX_VERSION_CHARS: usize = 64;
const MAX_PROGRAMS: usize = 64;
const MAX_PROGRAM_CHARS: usize = 256;
const MAX_SUMMARY_CHARS: usize = 200;

/// What the user asked for; mirrors `invocation` in `wit/adapter.wit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The `--pipe` command as written, or `None` when there is no `--pipe`.
    pub pipe: Option<String>,
    /// Extra words after the options, unquoted.
    pub args: Vec<String>,
    /// Interactive session (keystrokes forwarded raw) rather than a one-off run.
    pub interactive: bool,
    /// Input size in bytes when known; `Some(0)` means no input. `None` when interactive.
    pub input_len: Option<u64>,
    /// The whole input when known and at most [`MAX_INLINE_INPUT`] bytes (one-off runs only).
    pub input: Option<Vec<u8>>,
}

impl Invocation {
    /// A one-off run whose whole input is known: inlinable when small, else only its length.
    pub fn one_off_with_input(pipe: Option<String>, args: Vec<String>, input: &[u8]) -> Self {
        let input_len = Some(input.len() as u64);
        let input = (input.len() <= MAX_INLINE_INPUT).then(|| input.to_vec());
        Self {
            pipe,
            args,
            interactive: false,
            input_len,
            input,
        }
    }

    /// A one-off run whose input is streamed and of unknown (or large, known) length.
    pub fn one_off_streamed(
        pipe: Option<String>,
        args: Vec<String>,
        input_len: Option<u64>,
    ) -> Self {
        Self {
            pipe,
            args,
            interactive: false,
            input_len,
            input: None,
        }
    }

    /// An interactive session.
    pub fn interactive(pipe: Option<String>, args: Vec<String>) -> Self {
        Self {
            pipe,
            args,
            interactive: true,
            input_len: None,
            input: None,
        }
    }

    /// Checks the host's side of the contract before a guest sees it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(input) = &self.input {
            if input.len() > MAX_INLINE_INPUT {
                return Err(format!(
                    "inline input of {} bytes exceeds {MAX_INLINE_INPUT}",
                    input.len()
                ));
            }
            if self.input_len != Some(input.len() as u64) {
                return Err("input-len does not match the inline input".to_owned());
            }
            if self.interactive {
                return Err("an interactive invocation carries no input".to_owned());
            }
        }
        if self.interactive && self.input_len.is_some() {
            return Err("an interactive invocation has no input length".to_owned());
        }
        Ok(())
    }
}

/// How the host delivers its stdin; mirrors `stdin-mode` in `wit/adapter.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinMode {
    /// Send nothing.
    None,
    /// Interactive: forward terminal bytes as they are typed (and resizes).
    Raw,
    /// The input is already inside the command; send nothing.
    Inline,
    /// After the ready marker, send base64 lines of at most [`STREAM_LINE_BASE64_CHARS`]
    /// characters, each followed by `\n`, then [`STREAM_EOF_BYTE`].
    StreamBase64,
    /// After the ready marker, send exactly `input_len` bytes as they are (raw remote terminal).
    StreamBytes,
    /// After the ready marker, send the bytes in chunks `<len>\n<bytes>` of at most
    /// [`MAX_STREAM_CHUNK`] bytes, then `0\n` (raw remote terminal).
    StreamChunks,
}

impl StdinMode {
    /// The modes that send the input over the session once the ready marker is seen.
    pub fn is_streamed(self) -> bool {
        matches!(
            self,
            StdinMode::StreamBase64 | StdinMode::StreamBytes | StdinMode::StreamChunks
        )
    }
}

impl fmt::Display for StdinMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StdinMode::None => "none",
            StdinMode::Raw => "raw",
            StdinMode::Inline => "inline",
            StdinMode::StreamBase64 => "stream-base64",
            StdinMode::StreamBytes => "stream-bytes",
            StdinMode::StreamChunks => "stream-chunks",
        })
    }
}

/// A validated plan; mirrors `plan` in `wit/adapter.wit` (a 0.1 plan is one without a stderr
/// tag and without alternatives).
///
/// Every `Plan` handed out by this module has passed [`validate_plan`]: the command is non-empty,
/// at most [`MAX_COMMAND_BYTES`] and free of NUL; every stdin mode suits the kind of run; a ready
/// marker is present whenever input is streamed or there are alternatives; markers, tag and
/// trailer are printable ASCII, carry the nonce and do not contain one another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The ExecuteCommand command string.
    pub command: String,
    /// How to deliver stdin.
    pub stdin: StdinMode,
    /// Discard output up to and including this; streamed input starts after it.
    pub ready_marker: Option<String>,
    /// Output stops at this; the decimal status after it (up to `\n`, maybe after `\r`) is the
    /// exit status. `None`: the status cannot be known.
    pub exit_trailer: Option<String>,
    /// Lines `<tag><hex>\n` in the output carry the program's stderr (one-off only).
    pub stderr_tag: Option<String>,
    /// Other ways the command may take at run time, each announced by its own ready marker.
    pub alternatives: Vec<Alternative>,
}

/// A way the remote command may take instead of the plan's own; mirrors `alternative` in
/// `wit/adapter.wit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// Printed instead of the plan's ready marker when the command takes this way.
    pub ready_marker: String,
    /// How to deliver stdin in this way.
    pub stdin: StdinMode,
    /// Whether stderr is still framed with the plan's stderr tag.
    pub stderr_framed: bool,
    /// Shown once on stderr when the command takes this way.
    pub notice: String,
}

/// The way a run's remote command took: the plan's own, or one of its alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Way {
    /// How stdin is delivered.
    pub stdin: StdinMode,
    /// The tag of stderr frames, when stderr is framed.
    pub stderr_tag: Option<String>,
    /// The alternative's notice, for the user; `None` for the plan's own way.
    pub notice: Option<String>,
}

impl Plan {
    /// The plan's own way.
    pub fn own_way(&self) -> Way {
        Way {
            stdin: self.stdin,
            stderr_tag: self.stderr_tag.clone(),
            notice: None,
        }
    }

    /// The way announced by alternative `index`.
    pub fn alternative_way(&self, index: usize) -> Option<Way> {
        let alternative = self.alternatives.get(index)?;
        Some(Way {
            stdin: alternative.stdin,
            stderr_tag: self
                .stderr_tag
                .clone()
                .filter(|_| alternative.stderr_framed),
            notice: Some(alternative.notice.clone()),
        })
    }
}

/// What an adapter says about itself; mirrors `info` in `wit/adapter.wit`, validated, plus the
/// contract version it was built against, which the host reads from its export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdapterInfo {
    /// `[a-z][a-z0-9_-]{0,63}`.
    pub name: String,
    /// Printable ASCII, at most 64 characters.
    pub version: String,
    /// First word(s) of the pipes it serves.
    pub programs: Vec<String>,
    /// One printable line.
    pub summary: String,
    /// The version of `hoop:ecs-exec` the component exports (`0.1.1`, `0.2.0`): not part of
    /// `describe()`'s answer, but of the interface name; one this host speaks.
    pub contract: String,
}

/// Checks an `info` record against the contract.
pub fn validate_info(info: &AdapterInfo) -> Result<(), String> {
    let name_ok = info.name.len() <= MAX_NAME_CHARS
        && info.name.starts_with(|c: char| c.is_ascii_lowercase())
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(format!(
            "invalid name {}: want 1-64 of a-z 0-9 - _, starting with a letter",
            shown(&info.name)
        ));
    }
    if info.version.is_empty()
        || info.version.len() > MAX_VERSION_CHARS
        || !is_printable_ascii(&info.version)
    {
        return Err(format!("invalid version {}", shown(&info.version)));
    }
    if info.programs.len() > MAX_PROGRAMS {
        return Err(format!(
            "declares {} programs, at most {MAX_PROGRAMS} allowed",
            info.programs.len()
        ));
    }
    for program in &info.programs {
        if program.trim().is_empty()
            || program.len() > MAX_PROGRAM_CHARS
            || !is_printable_ascii(program)
        {
            return Err(format!("invalid program {}", shown(program)));
        }
    }
    if info.summary.chars().count() > MAX_SUMMARY_CHARS
        || info.summary.chars().any(char::is_control)
    {
        return Err(format!("invalid summary {}", shown(&info.summary)));
    }
    if info.contract.len() > MAX_VERSION_CHARS
        || !is_printable_ascii(&info.contract)
        || super::versions::Contract::of_version(&info.contract).is_none()
    {
        return Err(format!(
            "contract version {} is not one this host speaks",
            shown(&info.contract)
        ));
    }
    Ok(())
}

/// Checks a plan against the contract and the invocation it answers. Public so that adapter
/// authors' tests and the fuzz targets can hold a plan to the same rules as the host.
pub fn validate_plan(plan: &Plan, invocation: &Invocation, nonce: &str) -> Result<(), String> {
    if plan.command.trim().is_empty() {
        return Err("empty command".to_owned());
    }
    if plan.command.len() > MAX_COMMAND_BYTES {
        return Err(format!(
            "command of {} bytes exceeds {MAX_COMMAND_BYTES}",
            plan.command.len()
        ));
    }
    if plan.command.contains('\0') {
        return Err("command contains NUL".to_owned());
    }
    check_stdin_mode(plan.stdin, invocation)?;
    if invocation.interactive {
        if plan.ready_marker.is_some() {
            return Err("a ready marker makes no sense in an interactive run".to_owned());
        }
        if plan.stderr_tag.is_some() {
            return Err("stderr cannot be framed in an interactive run".to_owned());
        }
        if !plan.alternatives.is_empty() {
            return Err("an interactive run has no alternatives".to_owned());
        }
    }
    let needs_marker = plan.stdin.is_streamed() || !plan.alternatives.is_empty();
    match &plan.ready_marker {
        None if needs_marker => {
            let why = if plan.stdin.is_streamed() {
                format!("stdin mode {}", plan.stdin)
            } else {
                "a plan with alternatives".to_owned()
            };
            return Err(format!("{why} needs a ready marker"));
        }
        Some(marker) => check_marker("ready marker", marker, nonce)?,
        None => {}
    }
    if let Some(trailer) = &plan.exit_trailer {
        check_marker("exit trailer", trailer, nonce)?;
    }
    if let Some(tag) = &plan.stderr_tag {
        check_marker("stderr tag", tag, nonce)?;
    }
    if plan.alternatives.len() > MAX_ALTERNATIVES {
        return Err(format!(
            "{} alternatives, at most {MAX_ALTERNATIVES} allowed",
            plan.alternatives.len()
        ));
    }
    for alternative in &plan.alternatives {
        check_stdin_mode(alternative.stdin, invocation)?;
        check_marker(
            "alternative's ready marker",
            &alternative.ready_marker,
            nonce,
        )?;
        if alternative.notice.trim().is_empty()
            || alternative.notice.chars().count() > MAX_NOTICE_CHARS
            || alternative.notice.chars().any(char::is_control)
        {
            return Err(format!(
                "invalid alternative notice {}",
                shown(&alternative.notice)
            ));
        }
        if alternative.stderr_framed && plan.stderr_tag.is_none() {
            return Err("an alternative frames stderr but the plan has no stderr tag".to_owned());
        }
    }
    // The host finds each of these by searching the output: one inside another would be found
    // in the other's place.
    let markers: Vec<&str> = plan
        .ready_marker
        .iter()
        .chain(&plan.exit_trailer)
        .chain(&plan.stderr_tag)
        .map(String::as_str)
        .chain(plan.alternatives.iter().map(|a| a.ready_marker.as_str()))
        .collect();
    for (i, first) in markers.iter().enumerate() {
        for second in &markers[i + 1..] {
            if first.contains(second) || second.contains(first) {
                return Err(format!(
                    "the markers {} and {} overlap: none may contain another",
                    shown(first),
                    shown(second)
                ));
            }
        }
    }
    Ok(())
}

/// Whether `mode` suits the kind of run (and the input) `invocation` describes.
fn check_stdin_mode(mode: StdinMode, invocation: &Invocation) -> Result<(), String> {
    let mode_ok = match mode {
        StdinMode::None => true,
        StdinMode::Raw => invocation.interactive,
        StdinMode::Inline => !invocation.interactive && invocation.input.is_some(),
        StdinMode::StreamBase64 | StdinMode::StreamChunks => !invocation.interactive,
        StdinMode::StreamBytes => !invocation.interactive && invocation.input_len.is_some(),
    };
    if mode_ok {
        return Ok(());
    }
    let run = if invocation.interactive {
        "an interactive"
    } else {
        "a one-off"
    };
    let detail = match mode {
        StdinMode::Inline if invocation.input.is_none() => " without inline input",
        StdinMode::StreamBytes if invocation.input_len.is_none() => {
            " whose input length is unknown (stream-chunks serves it)"
        }
        _ => "",
    };
    Err(format!(
        "stdin mode {mode} is not allowed in {run} run{detail}"
    ))
}

fn check_marker(what: &str, marker: &str, nonce: &str) -> Result<(), String> {
    if marker.is_empty() || marker.len() > MAX_MARKER_BYTES || !is_printable_ascii(marker) {
        return Err(format!(
            "{what} must be 1-{MAX_MARKER_BYTES} printable ASCII characters"
        ));
    }
    if !marker.contains(nonce) {
        return Err(format!("{what} does not contain the nonce"));
    }
    Ok(())
}

/// Checks a nonce the host is about to hand to a guest (16-64 of `0-9a-zA-Z`).
pub(crate) fn check_nonce(nonce: &str) -> Result<(), String> {
    if (16..=64).contains(&nonce.len()) && nonce.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("the nonce must be 16-64 characters from 0-9a-zA-Z".to_owned())
    }
}

/// A fresh per-run nonce: 32 lower-case hex digits from a v4 UUID.
pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn is_printable_ascii(text: &str) -> bool {
    text.bytes().all(|byte| (0x20..0x7f).contains(&byte))
}

/// Makes guest-controlled text safe for one line of a terminal (see [`super::safe`]): control,
/// bidi and invisible characters become visible escapes, and it is cut to `max_chars` characters
/// with a `…` when longer.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    super::safe::safe_truncated(text, max_chars)
}

/// Guest text quoted for an error message.
fn shown(text: &str) -> String {
    format!("{:?}", one_line(text, 80))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    fn plan(stdin: StdinMode, marker: Option<&str>) -> Plan {
        Plan {
            command: "sh -c true".to_owned(),
            stdin,
            ready_marker: marker.map(str::to_owned),
            exit_trailer: Some(format!("t{NONCE}:")),
            stderr_tag: None,
            alternatives: Vec::new(),
        }
    }

    fn alternative(marker: &str, stdin: StdinMode, stderr_framed: bool) -> Alternative {
        Alternative {
            ready_marker: marker.to_owned(),
            stdin,
            stderr_framed,
            notice: "no dd here: input goes as base64".to_owned(),
        }
    }

    #[test]
    fn a_0_2_plan_with_raw_input_framed_stderr_and_alternatives_is_valid() {
        let known = Invocation::one_off_streamed(None, vec![], Some(10 << 20));
        let unknown = Invocation::one_off_streamed(None, vec![], None);
        let full = Plan {
            stderr_tag: Some(format!("e{NONCE}:")),
            alternatives: vec![
                alternative(&format!("b{NONCE}:"), StdinMode::StreamBase64, true),
                alternative(&format!("m{NONCE}:"), StdinMode::StreamBase64, false),
            ],
            ..plan(StdinMode::StreamBytes, Some(&format!("r{NONCE}:")))
        };
        assert_eq!(validate_plan(&full, &known, NONCE), Ok(()));
        let chunks = Plan {
            stdin: StdinMode::StreamChunks,
            ..full.clone()
        };
        assert_eq!(validate_plan(&chunks, &unknown, NONCE), Ok(()));
        assert!(
            validate_plan(&full, &unknown, NONCE)
                .unwrap_err()
                .contains("length is unknown")
        );
        // A ready marker may hide a bootstrap's set-up in any one-off plan.
        let quiet = plan(StdinMode::None, Some(&format!("r{NONCE}:")));
        assert_eq!(validate_plan(&quiet, &known, NONCE), Ok(()));
        let way = full.alternative_way(1).unwrap();
        assert_eq!(
            (way.stdin, way.stderr_tag, way.notice.is_some()),
            (StdinMode::StreamBase64, None, true)
        );
        assert_eq!(full.own_way().stderr_tag, full.stderr_tag);
        assert_eq!(full.alternative_way(2), None);
    }

    #[test]
    fn a_plain_stream_plan_is_valid() {
        let marker = format!("r{NONCE}");
        let invocation = Invocation::one_off_streamed(None, vec![], None);
        assert_eq!(
            validate_plan(
                &plan(StdinMode::StreamBase64, Some(&marker)),
                &invocation,
                NONCE
            ),
            Ok(())
        );
    }

    #[test]
    fn plans_that_break_the_contract_are_rejected() {
        let one_off = Invocation::one_off_streamed(None, vec![], None);
        let interactive = Invocation::interactive(None, vec![]);
        let marker = format!("r{NONCE}");
        let cases = [
            (
                Plan {
                    command: " ".to_owned(),
                    ..plan(StdinMode::None, None)
                },
                &one_off,
                "empty command",
            ),
            (
                Plan {
                    command: "a\0".to_owned(),
                    ..plan(StdinMode::None, None)
                },
                &one_off,
                "NUL",
            ),
            (
                Plan {
                    command: "x".repeat(MAX_COMMAND_BYTES + 1),
                    ..plan(StdinMode::None, None)
                },
                &one_off,
                "exceeds",
            ),
            (
                plan(StdinMode::StreamBase64, None),
                &one_off,
                "needs a ready marker",
            ),
            (
                plan(StdinMode::Raw, None),
                &interactive,
                "", // valid: filtered below
            ),
            (
                Plan {
                    ready_marker: Some(marker.clone()),
                    ..plan(StdinMode::Raw, None)
                },
                &interactive,
                "makes no sense",
            ),
            (
                Plan {
                    stderr_tag: Some(format!("e{NONCE}")),
                    ..plan(StdinMode::Raw, None)
                },
                &interactive,
                "cannot be framed",
            ),
            (
                Plan {
                    alternatives: vec![alternative(&marker, StdinMode::None, false)],
                    ..plan(StdinMode::None, None)
                },
                &one_off,
                "needs a ready marker",
            ),
            (
                Plan {
                    stderr_tag: Some(format!("x{marker}y")),
                    ..plan(StdinMode::StreamBase64, Some(&marker))
                },
                &one_off,
                "overlap",
            ),
            (
                Plan {
                    alternatives: vec![alternative(
                        &format!("b{NONCE}"),
                        StdinMode::StreamBase64,
                        true,
                    )],
                    ..plan(StdinMode::StreamBase64, Some(&marker))
                },
                &one_off,
                "no stderr tag",
            ),
            (
                Plan {
                    alternatives: vec![Alternative {
                        notice: "two\nlines".to_owned(),
                        ..alternative(&format!("b{NONCE}"), StdinMode::StreamBase64, false)
                    }],
                    ..plan(StdinMode::StreamBase64, Some(&marker))
                },
                &one_off,
                "notice",
            ),
            (
                Plan {
                    alternatives: vec![alternative(&format!("b{NONCE}"), StdinMode::Raw, false)],
                    ..plan(StdinMode::StreamBase64, Some(&marker))
                },
                &one_off,
                "not allowed in a one-off",
            ),
            (
                plan(StdinMode::StreamBytes, Some(&marker)),
                &one_off,
                "length is unknown",
            ),
            (
                plan(StdinMode::Raw, None),
                &one_off,
                "not allowed in a one-off",
            ),
            (
                plan(StdinMode::Inline, None),
                &one_off,
                "without inline input",
            ),
            (
                plan(StdinMode::StreamBase64, Some(&marker)),
                &interactive,
                "not allowed in an interactive",
            ),
            (
                plan(StdinMode::StreamBase64, Some("no nonce here")),
                &one_off,
                "does not contain the nonce",
            ),
            (
                Plan {
                    exit_trailer: Some(format!("\x1b{NONCE}")),
                    ..plan(StdinMode::None, None)
                },
                &one_off,
                "printable",
            ),
            (
                Plan {
                    exit_trailer: Some(String::new()),
                    ..plan(StdinMode::None, None)
                },
                &one_off,
                "printable",
            ),
        ];
        for (bad, invocation, expected) in cases {
            if expected.is_empty() {
                assert_eq!(validate_plan(&bad, invocation, NONCE), Ok(()));
                continue;
            }
            let error = validate_plan(&bad, invocation, NONCE).unwrap_err();
            assert!(
                error.contains(expected),
                "{bad:?}: got {error:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn info_validation_checks_every_field() {
        let good = AdapterInfo {
            name: "my-adapter_2".to_owned(),
            version: "1.0.0".to_owned(),
            programs: vec!["bundle exec rails".to_owned()],
            summary: "does things".to_owned(),
            contract: "0.2.0".to_owned(),
        };
        assert_eq!(validate_info(&good), Ok(()));
        let bad = [
            AdapterInfo {
                name: "Upper".to_owned(),
                ..good.clone()
            },
            AdapterInfo {
                name: String::new(),
                ..good.clone()
            },
            AdapterInfo {
                name: "9lives".to_owned(),
                ..good.clone()
            },
            AdapterInfo {
                version: String::new(),
                ..good.clone()
            },
            AdapterInfo {
                programs: vec!["  ".to_owned()],
                ..good.clone()
            },
            AdapterInfo {
                programs: vec!["x".to_owned(); 65],
                ..good.clone()
            },
            AdapterInfo {
                summary: "two\nlines".to_owned(),
                ..good.clone()
            },
            AdapterInfo {
                contract: "0.3.0".to_owned(),
                ..good.clone()
            },
            AdapterInfo {
                contract: String::new(),
                ..good.clone()
            },
        ];
        for info in bad {
            assert!(validate_info(&info).is_err(), "{info:?} should be rejected");
        }
    }

    #[test]
    fn invocation_helpers_respect_the_inline_limit() {
        let small = Invocation::one_off_with_input(None, vec![], b"hi");
        assert_eq!(
            (small.input_len, small.input.as_deref()),
            (Some(2), Some(&b"hi"[..]))
        );
        let big = Invocation::one_off_with_input(None, vec![], &[0; MAX_INLINE_INPUT + 1]);
        assert_eq!(
            (big.input_len, big.input),
            (Some(MAX_INLINE_INPUT as u64 + 1), None)
        );
        assert_eq!(small.check(), Ok(()));
        let lying = Invocation {
            input_len: Some(7),
            ..small
        };
        assert!(lying.check().is_err());
    }

    #[test]
    fn nonces_are_fresh_and_valid() {
        let (first, second) = (new_nonce(), new_nonce());
        assert_ne!(first, second);
        assert_eq!(check_nonce(&first), Ok(()));
        assert!(check_nonce("short").is_err());
        assert!(check_nonce("0123456789abcdef-").is_err());
    }

    #[test]
    fn one_line_strips_controls_and_cuts() {
        assert_eq!(one_line("a\x1b[2J\nb", 100), "a\\u{1b}[2J\\u{a}b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
