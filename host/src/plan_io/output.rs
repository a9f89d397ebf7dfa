//! The remote output read back as the adapter contract says (`wit/adapter.wit`): what the
//! remote prints before a ready marker is dropped, and the marker that comes first tells which
//! way the command took (the plan's own or one of its alternatives); the program's bytes are
//! forwarded exactly; lines `<stderr-tag><hex>\n` are taken out and decoded as its stderr; the
//! exit trailer ends the output and carries the exit status. A pure transform: the run layer
//! pushes the session's output in and writes the two streams that come out.

use crate::adapter::Plan;

/// What the decoder has learnt about the remote program so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Still discarding what the remote prints before a ready marker.
    AwaitingReady,
    /// Ready (or no marker was asked for): output is the program's own.
    Running,
    /// Inside a stderr frame: hex digits up to the end of the line.
    StderrFrame,
    /// The trailer arrived; the exit status follows on the same line.
    ReadingStatus,
    /// The program exited with this status; nothing after it is output.
    Exited(i32),
    /// The trailer arrived but the status after it was not a number.
    MalformedStatus,
}

/// A way the remote command may announce: its ready marker and, when stderr is framed in it,
/// the stderr tag.
#[derive(Debug, Clone)]
struct Announcement {
    ready_marker: Vec<u8>,
    stderr_tag: Option<Vec<u8>>,
}

/// Splits the remote output into the program's stdout and stderr, the ready marker and the
/// exit trailer.
#[derive(Debug)]
pub struct OutputDecoder {
    /// Index 0 is the plan's own way, index `k` its alternative `k - 1`.
    announcements: Vec<Announcement>,
    exit_trailer: Option<Vec<u8>>,
    /// The way the command took: known from the start when the plan has no ready marker.
    way: Option<usize>,
    /// The stderr tag of the way taken, if it frames stderr.
    stderr_tag: Option<Vec<u8>>,
    state: OutputState,
    /// Bytes held back because they may be the start of a marker, the tag or the trailer, or
    /// the status.
    held: Vec<u8>,
    /// The high half of a stderr byte whose low half has not arrived yet.
    nibble: Option<u8>,
}

/// The exit status is at most this many characters (a sign and digits) before its newline.
const MAX_STATUS_LEN: usize = 11;

impl OutputDecoder {
    /// The decoder for `plan`'s markers, tag and trailer.
    pub fn for_plan(plan: &Plan) -> Self {
        let bytes = |text: &String| text.as_bytes().to_vec();
        let mut announcements = Vec::new();
        if let Some(marker) = plan.ready_marker.as_ref().filter(|m| !m.is_empty()) {
            announcements.push(Announcement {
                ready_marker: bytes(marker),
                stderr_tag: plan.stderr_tag.as_ref().map(bytes),
            });
            announcements.extend(plan.alternatives.iter().map(|alternative| {
                Announcement {
                    ready_marker: bytes(&alternative.ready_marker),
                    stderr_tag: plan
                        .stderr_tag
                        .as_ref()
                        .filter(|_| alternative.stderr_framed)
                        .map(bytes),
                }
            }));
        }
        let (way, state) = if announcements.is_empty() {
            (Some(0), OutputState::Running)
        } else {
            (None, OutputState::AwaitingReady)
        };
        Self {
            stderr_tag: if way.is_some() {
                plan.stderr_tag.as_ref().map(bytes)
            } else {
                None
            },
            announcements,
            exit_trailer: plan
                .exit_trailer
                .as_ref()
                .filter(|t| !t.is_empty())
                .map(bytes),
            way,
            state,
            held: Vec::new(),
            nibble: None,
        }
    }

    pub fn state(&self) -> OutputState {
        self.state
    }

    /// True once a ready marker has been seen (or none was asked for): input may be sent.
    pub fn is_ready(&self) -> bool {
        self.state != OutputState::AwaitingReady
    }

    /// The way the command took, once known: 0 for the plan's own, `k` for its alternative
    /// `k - 1`. `None` before a marker, and when the command gave up before announcing one.
    pub fn way(&self) -> Option<usize> {
        self.way
    }

    /// The exit status, once the trailer and the status after it have arrived.
    pub fn exit_status(&self) -> Option<i32> {
        match self.state {
            OutputState::Exited(status) => Some(status),
            _ => None,
        }
    }

    /// Feeds remote output: the program's stdout bytes are appended to `stdout`, what its
    /// stderr frames carry to `stderr`.
    pub fn push(&mut self, data: &[u8], stdout: &mut Vec<u8>, stderr: &mut Vec<u8>) {
        let mut input = std::mem::take(&mut self.held);
        input.extend_from_slice(data);
        let mut rest: &[u8] = &input;
        loop {
            match self.state {
                OutputState::AwaitingReady => {
                    // A bootstrap that cannot get ready (say `stty` failed) prints its exit
                    // trailer without a marker: whichever comes first decides.
                    let mut first: Option<(usize, usize, Option<usize>)> = None;
                    let needles = self
                        .announcements
                        .iter()
                        .enumerate()
                        .map(|(index, a)| (a.ready_marker.as_slice(), Some(index)))
                        .chain(self.exit_trailer.as_deref().map(|trailer| (trailer, None)));
                    for (needle, way) in needles {
                        if let Some(at) = find(rest, needle)
                            && first.is_none_or(|(best, _, _)| at < best)
                        {
                            first = Some((at, needle.len(), way));
                        }
                    }
                    match first {
                        Some((at, len, Some(index))) => {
                            rest = &rest[at + len..];
                            self.way = Some(index);
                            self.stderr_tag = self.announcements[index].stderr_tag.clone();
                            self.state = OutputState::Running;
                        }
                        Some((at, len, None)) => {
                            rest = &rest[at + len..];
                            self.state = OutputState::ReadingStatus;
                        }
                        None => {
                            let keep = self
                                .announcements
                                .iter()
                                .map(|a| a.ready_marker.as_slice())
                                .chain(self.exit_trailer.as_deref())
                                .map(|needle| longest_suffix_prefix(rest, needle))
                                .max()
                                .unwrap_or(0);
                            self.held.extend_from_slice(&rest[rest.len() - keep..]);
                            return;
                        }
                    }
                }
                OutputState::Running => {
                    let tag_at = self.stderr_tag.as_deref().and_then(|tag| find(rest, tag));
                    // Only a trailer that starts before the next frame matters: searching the
                    // rest of the data for it at every frame made bulk stderr quadratic.
                    let trailer_at = self.exit_trailer.as_deref().and_then(|trailer| {
                        let before_tag = tag_at.map_or(rest.len(), |at| {
                            (at + trailer.len()).saturating_sub(1).min(rest.len())
                        });
                        find(&rest[..before_tag], trailer)
                    });
                    match (trailer_at, tag_at) {
                        (Some(at), tag) if tag.is_none_or(|tag| at < tag) => {
                            stdout.extend_from_slice(&rest[..at]);
                            rest = &rest[at + self.exit_trailer.as_ref().map_or(0, Vec::len)..];
                            self.state = OutputState::ReadingStatus;
                        }
                        (_, Some(at)) => {
                            stdout.extend_from_slice(&rest[..at]);
                            rest = &rest[at + self.stderr_tag.as_ref().map_or(0, Vec::len)..];
                            self.state = OutputState::StderrFrame;
                        }
                        _ => {
                            let keep = self
                                .exit_trailer
                                .iter()
                                .chain(&self.stderr_tag)
                                .map(|needle| longest_suffix_prefix(rest, needle))
                                .max()
                                .unwrap_or(0);
                            stdout.extend_from_slice(&rest[..rest.len() - keep]);
                            self.held.extend_from_slice(&rest[rest.len() - keep..]);
                            return;
                        }
                    }
                }
                OutputState::StderrFrame => {
                    let line_end = memchr::memchr(b'\n', rest);
                    let line = &rest[..line_end.unwrap_or(rest.len())];
                    let decoded = self.decode_hex(line, stderr);
                    if decoded < line.len() {
                        // Not a frame after all (the program printed the tag itself): what
                        // follows is output again, and nothing of it is lost.
                        self.end_frame();
                        rest = &rest[decoded..];
                        continue;
                    }
                    match line_end {
                        Some(end) => {
                            self.end_frame();
                            rest = &rest[end + 1..];
                        }
                        None => return,
                    }
                }
                OutputState::ReadingStatus => match rest.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        self.state = parse_status(&rest[..end]);
                        return;
                    }
                    None if rest.len() > MAX_STATUS_LEN + 1 => {
                        self.state = OutputState::MalformedStatus;
                        return;
                    }
                    None => {
                        self.held.extend_from_slice(rest);
                        return;
                    }
                },
                OutputState::Exited(_) | OutputState::MalformedStatus => return,
            }
        }
    }

    /// Decodes the hex digits of a frame line (spaces, tabs and CRs between them are skipped)
    /// into `stderr`; returns how many bytes of `line` it took, short of the first byte that
    /// cannot be part of a frame.
    fn decode_hex(&mut self, line: &[u8], stderr: &mut Vec<u8>) -> usize {
        for (at, &byte) in line.iter().enumerate() {
            match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let value = hex_value(byte);
                    match self.nibble.take() {
                        Some(high) => stderr.push(high << 4 | value),
                        None => self.nibble = Some(value),
                    }
                }
                b' ' | b'\t' | b'\r' => {}
                _ => return at,
            }
        }
        line.len()
    }

    /// A frame line ended: a lone half byte is dropped (frames carry whole bytes).
    fn end_frame(&mut self) {
        self.nibble = None;
        self.state = OutputState::Running;
    }

    /// The output ended: returns what was held back as a possible marker, tag or trailer start,
    /// which turned out to be the program's own bytes (unless still waiting for the marker).
    pub fn finish(&mut self, stdout: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            OutputState::Running => stdout.extend_from_slice(&held),
            // A status cut short by the end of output, without its newline.
            OutputState::ReadingStatus => self.state = parse_status(&held),
            _ => {}
        }
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

fn parse_status(text: &[u8]) -> OutputState {
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    std::str::from_utf8(text)
        .ok()
        .filter(|t| t.len() <= MAX_STATUS_LEN)
        .and_then(|t| t.trim().parse::<i32>().ok())
        .map_or(OutputState::MalformedStatus, OutputState::Exited)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The length of the longest proper prefix of `needle` that `haystack` ends with.
fn longest_suffix_prefix(haystack: &[u8], needle: &[u8]) -> usize {
    let longest = needle.len().saturating_sub(1).min(haystack.len());
    (1..=longest)
        .rev()
        .find(|&k| haystack.ends_with(&needle[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{Alternative, StdinMode};

    fn plan(marker: Option<&str>, trailer: Option<&str>) -> Plan {
        Plan {
            command: "sh -c true".to_owned(),
            stdin: StdinMode::StreamBase64,
            ready_marker: marker.map(str::to_owned),
            exit_trailer: trailer.map(str::to_owned),
            stderr_tag: None,
            alternatives: Vec::new(),
        }
    }

    fn decoder(marker: Option<&str>, trailer: Option<&str>) -> OutputDecoder {
        OutputDecoder::for_plan(&plan(marker, trailer))
    }

    /// Stdout and stderr as the decoder gives them when the output arrives `piece` bytes at a
    /// time.
    fn decode_in_pieces(decoder: &mut OutputDecoder, data: &[u8], piece: usize) -> Vec<u8> {
        decode_both(decoder, data, piece).0
    }

    fn decode_both(decoder: &mut OutputDecoder, data: &[u8], piece: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        for chunk in data.chunks(piece.max(1)) {
            decoder.push(chunk, &mut stdout, &mut stderr);
        }
        decoder.finish(&mut stdout);
        (stdout, stderr)
    }

    #[test]
    fn output_before_the_ready_marker_is_dropped_and_the_trailer_gives_the_status() {
        let remote = b"echoed junk RDY-1234\nhello\nworld\x1eEXIT-1234:7\n";
        for piece in 1..remote.len() {
            let mut decoder = decoder(Some("RDY-1234\n"), Some("\x1eEXIT-1234:"));
            let out = decode_in_pieces(&mut decoder, remote, piece);
            assert_eq!(out, b"hello\nworld", "piece size {piece}");
            assert_eq!(decoder.exit_status(), Some(7), "piece size {piece}");
            assert_eq!(decoder.way(), Some(0));
        }
    }

    #[test]
    fn a_trailer_before_the_ready_marker_ends_the_run() {
        let remote = b"stty: not a tty\r\n\x1eEXIT-9:125\n";
        for piece in 1..remote.len() {
            let mut decoder = decoder(Some("RDY-9"), Some("\x1eEXIT-9:"));
            let out = decode_in_pieces(&mut decoder, remote, piece);
            assert!(out.is_empty(), "piece size {piece}");
            assert_eq!(decoder.exit_status(), Some(125), "piece size {piece}");
            assert!(
                decoder.is_ready(),
                "no input may follow, but the run is not waiting"
            );
            assert_eq!(decoder.way(), None);
        }
    }

    #[test]
    fn a_partial_trailer_that_never_completes_is_output() {
        let mut decoder = decoder(None, Some("TRAILER:"));
        let out = decode_in_pieces(&mut decoder, b"abc TRAIL", 3);
        assert_eq!(out, b"abc TRAIL");
        assert_eq!(decoder.state(), OutputState::Running);
    }

    #[test]
    fn status_with_carriage_return_and_without_newline() {
        let mut decoder = decoder(None, Some("T:"));
        let out = decode_in_pieces(&mut decoder, b"x T:130\r\n", 1);
        assert_eq!(out, b"x ");
        assert_eq!(decoder.exit_status(), Some(130));

        let mut decoder = self::decoder(None, Some("T:"));
        decode_in_pieces(&mut decoder, b"T:3", 2);
        assert_eq!(decoder.exit_status(), Some(3));
    }

    #[test]
    fn garbage_after_the_trailer_is_a_malformed_status() {
        let mut decoder = decoder(None, Some("T:"));
        decode_in_pieces(&mut decoder, b"T:not-a-number\n", 4);
        assert_eq!(decoder.state(), OutputState::MalformedStatus);
        let mut decoder = self::decoder(None, Some("T:"));
        decode_in_pieces(&mut decoder, b"T:9999999999999", 100);
        assert_eq!(decoder.state(), OutputState::MalformedStatus);
    }

    #[test]
    fn without_marker_or_trailer_everything_is_output() {
        let mut decoder = decoder(None, None);
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_in_pieces(&mut decoder, &data, 7), data);
        assert!(decoder.is_ready());
        assert_eq!(decoder.way(), Some(0));
    }

    const TAG: &str = "~ERR-42:";

    fn framed_plan() -> Plan {
        let alternative = |marker: &str, stderr_framed| Alternative {
            ready_marker: marker.to_owned(),
            stdin: StdinMode::StreamBase64,
            stderr_framed,
            notice: "fallback".to_owned(),
        };
        Plan {
            stderr_tag: Some(TAG.to_owned()),
            alternatives: vec![alternative("RDY-B", true), alternative("RDY-M", false)],
            ..plan(Some("RDY-R"), Some("END-42:"))
        }
    }

    /// What `od -An -v -tx1 | sed "s/^/$tag/"` prints for `bytes`.
    fn od_frames(bytes: &[u8]) -> Vec<u8> {
        let mut framed = Vec::new();
        for line in bytes.chunks(16) {
            framed.extend_from_slice(TAG.as_bytes());
            for byte in line {
                framed.extend_from_slice(format!(" {byte:02x}").as_bytes());
            }
            framed.push(b'\n');
        }
        framed
    }

    #[test]
    fn stderr_frames_anywhere_in_the_output_decode_to_stderr_exactly() {
        let stderr_bytes: Vec<u8> = (0..=255).rev().chain(0..40).collect();
        let frames = od_frames(&stderr_bytes);
        // The program's output does not end its lines: frames land mid-line, between writes.
        let (head, tail) = frames.split_at(frames.len() / 2);
        let cut = head.len() - head.iter().rev().position(|&b| b == b'\n').unwrap();
        let (head, tail_start) = head.split_at(cut);
        let mut remote = b"setup noise RDY-R".to_vec();
        remote.extend_from_slice(b"partial line ");
        remote.extend_from_slice(head);
        remote.extend_from_slice(b"\x00binary\xff out");
        remote.extend_from_slice(tail_start);
        remote.extend_from_slice(tail);
        remote.extend_from_slice(b"last END-42:3\n");
        for piece in 1..=remote.len() {
            let mut decoder = OutputDecoder::for_plan(&framed_plan());
            let (stdout, stderr) = decode_both(&mut decoder, &remote, piece);
            assert_eq!(
                stdout, b"partial line \x00binary\xff outlast ",
                "piece size {piece}"
            );
            assert_eq!(stderr, stderr_bytes, "piece size {piece}");
            assert_eq!(decoder.exit_status(), Some(3));
            assert_eq!(decoder.way(), Some(0));
        }
    }

    #[test]
    fn the_first_marker_names_the_way_and_whether_stderr_is_framed() {
        let frame = od_frames(b"oops\n");
        for (marker, way, framed) in [("RDY-B", 1, true), ("RDY-M", 2, false), ("RDY-R", 0, true)] {
            let mut remote = format!("noise RDY-X {marker}").into_bytes();
            remote.extend_from_slice(&frame);
            remote.extend_from_slice(b"END-42:0\n");
            let mut decoder = OutputDecoder::for_plan(&framed_plan());
            let (stdout, stderr) = decode_both(&mut decoder, &remote, 5);
            assert_eq!(decoder.way(), Some(way), "{marker}");
            if framed {
                assert_eq!(
                    (stdout.as_slice(), stderr.as_slice()),
                    (&b""[..], &b"oops\n"[..])
                );
            } else {
                // In a way that merges stderr a frame-looking line is the program's output.
                assert_eq!((stdout, stderr), (frame.clone(), Vec::new()));
            }
        }
    }

    #[test]
    fn a_tag_not_followed_by_hex_gives_its_bytes_back_to_stdout() {
        let remote = format!("a{TAG}0 zz\n{TAG}6869\nEND-42:0\n");
        let mut decoder = OutputDecoder::for_plan(&Plan {
            ready_marker: None,
            alternatives: Vec::new(),
            ..framed_plan()
        });
        let (stdout, stderr) = decode_both(&mut decoder, remote.as_bytes(), 1);
        assert_eq!(stdout, b"azz\n", "the tag and the lone half byte are gone");
        assert_eq!(stderr, b"hi");
    }
}
