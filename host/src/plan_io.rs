//! The host's half of the adapter contract's byte conventions, as pure transforms.
//!
//! An adapter's plan says how stdin travels and how the output is read back (see
//! `wit/adapter.wit`). [`InputEncoder`] turns stdin into the base64 lines that the remote
//! `base64 -d` reads through a canonical-mode PTY, ended by Ctrl-D. [`OutputDecoder`] throws away
//! what the remote prints before its ready marker, forwards the program's bytes exactly, and stops
//! at the exit trailer to read the exit status. Nothing here reads stdin, writes stdout or touches
//! the data channel: the run layer feeds bytes in and writes what comes out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

// The line length and the end-of-input byte are the adapter contract's; they are defined once,
// beside the contract's other limits.
pub use crate::adapter::{
    STREAM_EOF_BYTE as END_OF_INPUT, STREAM_LINE_BASE64_CHARS as MAX_BASE64_LINE,
};

/// Raw bytes carried by one full line.
const RAW_BYTES_PER_LINE: usize = MAX_BASE64_LINE / 4 * 3;

/// Encodes stdin for the `stream-base64` stdin mode: full lines of at most
/// [`MAX_BASE64_LINE`] base64 characters, each ended by `\n`, then a lone [`END_OF_INPUT`].
#[derive(Debug, Default)]
pub struct InputEncoder {
    pending: Vec<u8>,
}

impl InputEncoder {
    pub fn new() -> Self {
        Self {
            pending: Vec::with_capacity(RAW_BYTES_PER_LINE),
        }
    }

    /// Adds `input` and appends every line that is now complete to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            let room = RAW_BYTES_PER_LINE - self.pending.len();
            let (head, rest) = input.split_at(room.min(input.len()));
            self.pending.extend_from_slice(head);
            input = rest;
            if self.pending.len() == RAW_BYTES_PER_LINE {
                self.emit_line(out);
            }
        }
    }

    /// Appends the last, possibly short, line and the end-of-input byte to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.emit_line(out);
        }
        out.push(END_OF_INPUT);
    }

    fn emit_line(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(
            start + base64::encoded_len(self.pending.len(), true).unwrap_or(0),
            0,
        );
        let written = STANDARD
            .encode_slice(&self.pending, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'\n');
        self.pending.clear();
    }
}

/// What the decoder has learnt about the remote program so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Still discarding what the remote prints before the ready marker.
    AwaitingReady,
    /// Ready (or no marker was asked for): output is the program's own.
    Running,
    /// The trailer arrived; the exit status follows on the same line.
    ReadingStatus,
    /// The program exited with this status; nothing after it is output.
    Exited(i32),
    /// The trailer arrived but the status after it was not a number.
    MalformedStatus,
}

/// Splits the remote output into the program's bytes, the ready marker and the exit trailer.
#[derive(Debug)]
pub struct OutputDecoder {
    ready_marker: Option<Vec<u8>>,
    exit_trailer: Option<Vec<u8>>,
    state: OutputState,
    /// Bytes held back because they may be the start of the marker or trailer, or the status.
    held: Vec<u8>,
}

/// The exit status is at most this many characters (a sign and digits) before its newline.
const MAX_STATUS_LEN: usize = 11;

impl OutputDecoder {
    pub fn new(ready_marker: Option<&str>, exit_trailer: Option<&str>) -> Self {
        let ready_marker = ready_marker
            .filter(|marker| !marker.is_empty())
            .map(|m| m.as_bytes().to_vec());
        let state = if ready_marker.is_some() {
            OutputState::AwaitingReady
        } else {
            OutputState::Running
        };
        Self {
            ready_marker,
            exit_trailer: exit_trailer
                .filter(|trailer| !trailer.is_empty())
                .map(|t| t.as_bytes().to_vec()),
            state,
            held: Vec::new(),
        }
    }

    pub fn state(&self) -> OutputState {
        self.state
    }

    /// True once the ready marker has been seen (or none was asked for): input may be sent.
    pub fn is_ready(&self) -> bool {
        self.state != OutputState::AwaitingReady
    }

    /// The exit status, once the trailer and the status after it have arrived.
    pub fn exit_status(&self) -> Option<i32> {
        match self.state {
            OutputState::Exited(status) => Some(status),
            _ => None,
        }
    }

    /// Feeds remote output; appends the program's own bytes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut input = std::mem::take(&mut self.held);
        input.extend_from_slice(data);
        let mut rest: &[u8] = &input;
        loop {
            match self.state {
                OutputState::AwaitingReady => {
                    let Some(marker) = self.ready_marker.as_deref() else {
                        self.state = OutputState::Running;
                        continue;
                    };
                    // A bootstrap that cannot get ready (say `stty` failed) prints its exit
                    // trailer without a marker: whichever comes first decides.
                    let trailer = self.exit_trailer.as_deref();
                    let marker_at = find(rest, marker);
                    let trailer_at = trailer.and_then(|trailer| find(rest, trailer));
                    let trailer_len = trailer.map_or(0, <[u8]>::len);
                    match (marker_at, trailer_at) {
                        (Some(marker_at), Some(trailer_at)) if trailer_at < marker_at => {
                            rest = &rest[trailer_at + trailer_len..];
                            self.state = OutputState::ReadingStatus;
                        }
                        (Some(at), _) => {
                            rest = &rest[at + marker.len()..];
                            self.state = OutputState::Running;
                        }
                        (None, Some(at)) => {
                            rest = &rest[at + trailer_len..];
                            self.state = OutputState::ReadingStatus;
                        }
                        (None, None) => {
                            let keep = longest_suffix_prefix(rest, marker)
                                .max(trailer.map_or(0, |t| longest_suffix_prefix(rest, t)));
                            self.held.extend_from_slice(&rest[rest.len() - keep..]);
                            return;
                        }
                    }
                }
                OutputState::Running => {
                    let Some(trailer) = self.exit_trailer.as_deref() else {
                        out.extend_from_slice(rest);
                        return;
                    };
                    match find(rest, trailer) {
                        Some(at) => {
                            out.extend_from_slice(&rest[..at]);
                            rest = &rest[at + trailer.len()..];
                            self.state = OutputState::ReadingStatus;
                        }
                        None => {
                            let keep = longest_suffix_prefix(rest, trailer);
                            out.extend_from_slice(&rest[..rest.len() - keep]);
                            self.held.extend_from_slice(&rest[rest.len() - keep..]);
                            return;
                        }
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

    /// The output ended: returns what was held back as a possible marker or trailer start, which
    /// turned out to be the program's own bytes (unless still waiting for the ready marker).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            OutputState::Running => out.extend_from_slice(&held),
            // A status cut short by the end of output, without its newline.
            OutputState::ReadingStatus => self.state = parse_status(&held),
            _ => {}
        }
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

    fn decode_in_pieces(decoder: &mut OutputDecoder, data: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(piece.max(1)) {
            decoder.push(chunk, &mut out);
        }
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn encoder_lines_decode_back_to_the_input() {
        let input: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut encoder = InputEncoder::new();
        let mut wire = Vec::new();
        for chunk in input.chunks(1000) {
            encoder.push(chunk, &mut wire);
        }
        encoder.finish(&mut wire);
        assert_eq!(wire.last(), Some(&END_OF_INPUT));
        let body = &wire[..wire.len() - 1];
        let mut decoded = Vec::new();
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                line.len() <= MAX_BASE64_LINE,
                "line of {} chars",
                line.len()
            );
            decoded.extend(STANDARD.decode(line).expect("valid base64"));
        }
        assert_eq!(decoded, input);
        assert!(body.ends_with(b"\n"), "Ctrl-D must start a line");
    }

    #[test]
    fn empty_input_is_a_lone_end_of_input() {
        let mut wire = Vec::new();
        InputEncoder::new().finish(&mut wire);
        assert_eq!(wire, [END_OF_INPUT]);
    }

    #[test]
    fn output_before_the_ready_marker_is_dropped_and_the_trailer_gives_the_status() {
        let remote = b"echoed junk RDY-1234\nhello\nworld\x1eEXIT-1234:7\n";
        for piece in 1..remote.len() {
            let mut decoder = OutputDecoder::new(Some("RDY-1234\n"), Some("\x1eEXIT-1234:"));
            let out = decode_in_pieces(&mut decoder, remote, piece);
            assert_eq!(out, b"hello\nworld", "piece size {piece}");
            assert_eq!(decoder.exit_status(), Some(7), "piece size {piece}");
        }
    }

    #[test]
    fn a_trailer_before_the_ready_marker_ends_the_run() {
        let remote = b"stty: not a tty\r\n\x1eEXIT-9:125\n";
        for piece in 1..remote.len() {
            let mut decoder = OutputDecoder::new(Some("RDY-9"), Some("\x1eEXIT-9:"));
            let out = decode_in_pieces(&mut decoder, remote, piece);
            assert!(out.is_empty(), "piece size {piece}");
            assert_eq!(decoder.exit_status(), Some(125), "piece size {piece}");
            assert!(
                decoder.is_ready(),
                "no input may follow, but the run is not waiting"
            );
        }
    }

    #[test]
    fn a_partial_trailer_that_never_completes_is_output() {
        let mut decoder = OutputDecoder::new(None, Some("TRAILER:"));
        let out = decode_in_pieces(&mut decoder, b"abc TRAIL", 3);
        assert_eq!(out, b"abc TRAIL");
        assert_eq!(decoder.state(), OutputState::Running);
    }

    #[test]
    fn status_with_carriage_return_and_without_newline() {
        let mut decoder = OutputDecoder::new(None, Some("T:"));
        let out = decode_in_pieces(&mut decoder, b"x T:130\r\n", 1);
        assert_eq!(out, b"x ");
        assert_eq!(decoder.exit_status(), Some(130));

        let mut decoder = OutputDecoder::new(None, Some("T:"));
        decode_in_pieces(&mut decoder, b"T:3", 2);
        assert_eq!(decoder.exit_status(), Some(3));
    }

    #[test]
    fn garbage_after_the_trailer_is_a_malformed_status() {
        let mut decoder = OutputDecoder::new(None, Some("T:"));
        decode_in_pieces(&mut decoder, b"T:not-a-number\n", 4);
        assert_eq!(decoder.state(), OutputState::MalformedStatus);
        let mut decoder = OutputDecoder::new(None, Some("T:"));
        decode_in_pieces(&mut decoder, b"T:9999999999999", 100);
        assert_eq!(decoder.state(), OutputState::MalformedStatus);
    }

    #[test]
    fn without_marker_or_trailer_everything_is_output() {
        let mut decoder = OutputDecoder::new(None, None);
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_in_pieces(&mut decoder, &data, 7), data);
        assert!(decoder.is_ready());
    }
}
