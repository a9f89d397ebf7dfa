//! Stdin as the remote reader expects it, for each streamed stdin mode of the adapter contract
//! (`wit/adapter.wit`): base64 lines ended by Ctrl-D for a canonical terminal (`stream-base64`),
//! the bytes themselves, exactly as many as announced (`stream-bytes`), or the bytes in
//! `<len>\n<bytes>` chunks ended by `0\n` (`stream-chunks`) for a raw one. Pure transforms: the
//! run layer reads stdin, pushes it through [`InputFraming`] and sends what comes out.

use crate::adapter::StdinMode;

use bytes::Bytes;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

// The line length and the end-of-input byte are the adapter contract's; they are defined once,
// beside the contract's other limits.
pub use crate::adapter::{
    MAX_STREAM_CHUNK, STREAM_EOF_BYTE as END_OF_INPUT, STREAM_LINE_BASE64_CHARS as MAX_BASE64_LINE,
};

/// Raw bytes carried by one full line.
const RAW_BYTES_PER_LINE: usize = MAX_BASE64_LINE / 4 * 3;

/// Encodes stdin for the `stream-base64` stdin mode: full lines of at most
/// [`MAX_BASE64_LINE`] base64 characters, each ended by `\n`, then a lone [`END_OF_INPUT`].
#[derive(Debug, Default)]
pub struct Base64Lines {
    pending: Vec<u8>,
}

impl Base64Lines {
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

/// The input ended with another length than the one the plan was made for (`stream-bytes`): a
/// regular file that grew or shrank while it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stdin changed size while it was read: {expected} bytes announced, {actual} read")]
pub struct InputLengthChanged {
    pub expected: u64,
    /// What was read, counted up to the first byte past `expected`.
    pub actual: u64,
}

/// How stdin is framed on its way to the remote reader; one per streamed stdin mode.
#[derive(Debug)]
pub enum InputFraming {
    /// `stream-base64`.
    Base64(Base64Lines),
    /// `stream-bytes`: as they are, and exactly `expected` of them.
    Bytes { expected: u64, sent: u64 },
    /// `stream-chunks`.
    Chunks,
}

impl InputFraming {
    /// The framing of `mode`, or `None` for a mode that streams nothing. `input_len` is the
    /// length the plan was made for (required by `stream-bytes`, which the contract only
    /// allows when it is known).
    pub fn new(mode: StdinMode, input_len: Option<u64>) -> Option<Self> {
        match mode {
            StdinMode::StreamBase64 => Some(InputFraming::Base64(Base64Lines::new())),
            StdinMode::StreamBytes => Some(InputFraming::Bytes {
                expected: input_len?,
                sent: 0,
            }),
            StdinMode::StreamChunks => Some(InputFraming::Chunks),
            StdinMode::None | StdinMode::Raw | StdinMode::Inline => None,
        }
    }

    /// Appends what `input` becomes on the wire to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), InputLengthChanged> {
        match self {
            InputFraming::Base64(lines) => lines.push(input, out),
            InputFraming::Bytes { expected, sent } => {
                take_exactly(*expected, sent, input.len())?;
                out.extend_from_slice(input);
            }
            InputFraming::Chunks => {
                for chunk in input.chunks(MAX_STREAM_CHUNK) {
                    out.extend_from_slice(chunk.len().to_string().as_bytes());
                    out.push(b'\n');
                    out.extend_from_slice(chunk);
                }
            }
        }
        Ok(())
    }

    /// Frames a buffer of input read at [`READ_OFFSET`] (the bytes before it are room, not
    /// input). For the raw modes the bytes stay where they were read and a chunk's header goes
    /// into the room, so bulk input is never copied. At most [`MAX_STREAM_CHUNK`] bytes may
    /// follow the room for one chunk.
    pub fn frame_read(&mut self, mut buffer: Vec<u8>) -> Result<Bytes, InputLengthChanged> {
        let offset = READ_OFFSET.min(buffer.len());
        let read = buffer.len() - offset;
        if read * 2 < buffer.capacity() {
            // A short read must not pin a whole read buffer until the agent acknowledges it.
            buffer.shrink_to_fit();
        }
        match self {
            InputFraming::Bytes { expected, sent } => {
                take_exactly(*expected, sent, read)?;
                Ok(Bytes::from(buffer).slice(offset..))
            }
            InputFraming::Chunks if (1..=MAX_STREAM_CHUNK).contains(&read) => {
                let header = format!("{read}\n");
                let start = READ_OFFSET - header.len();
                buffer[start..READ_OFFSET].copy_from_slice(header.as_bytes());
                Ok(Bytes::from(buffer).slice(start..))
            }
            _ => {
                let mut framed = Vec::new();
                self.push(&buffer[offset..], &mut framed)?;
                Ok(Bytes::from(framed))
            }
        }
    }

    /// The input ended: appends its end (Ctrl-D, `0\n`, or nothing) to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), InputLengthChanged> {
        match self {
            InputFraming::Base64(lines) => lines.finish(out),
            InputFraming::Bytes { expected, sent } if sent != expected => {
                return Err(InputLengthChanged {
                    expected,
                    actual: sent,
                });
            }
            InputFraming::Bytes { .. } => {}
            InputFraming::Chunks => out.extend_from_slice(b"0\n"),
        }
        Ok(())
    }
}

/// Where [`InputFraming::frame_read`] wants the input read: room for the longest chunk header
/// (`1048576\n`) in front of it.
pub const READ_OFFSET: usize = MAX_STREAM_CHUNK.ilog10() as usize + 2;

/// Counts `read` more bytes of a `stream-bytes` input, refusing any past the announced length.
fn take_exactly(expected: u64, sent: &mut u64, read: usize) -> Result<(), InputLengthChanged> {
    let room = usize::try_from(expected - *sent).unwrap_or(usize::MAX);
    if read > room {
        return Err(InputLengthChanged {
            expected,
            actual: *sent + room as u64 + 1,
        });
    }
    *sent += read as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_lines_decode_back_to_the_input() {
        let input: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut encoder = Base64Lines::new();
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
        Base64Lines::new().finish(&mut wire);
        assert_eq!(wire, [END_OF_INPUT]);
    }

    /// Decodes `stream-chunks` as the POSIX decoder in the contract does: a length line, then
    /// exactly that many bytes, until the length 0.
    fn decode_chunks(mut wire: &[u8]) -> (Vec<u8>, usize) {
        let (mut data, mut chunks) = (Vec::new(), 0);
        loop {
            let newline = wire
                .iter()
                .position(|&b| b == b'\n')
                .expect("a length line");
            let len: usize = std::str::from_utf8(&wire[..newline])
                .unwrap()
                .parse()
                .unwrap();
            wire = &wire[newline + 1..];
            if len == 0 {
                assert!(wire.is_empty(), "nothing may follow the last chunk");
                return (data, chunks);
            }
            assert!((1..=MAX_STREAM_CHUNK).contains(&len));
            data.extend_from_slice(&wire[..len]);
            wire = &wire[len..];
            chunks += 1;
        }
    }

    #[test]
    fn chunks_decode_back_to_the_input_whatever_the_reads() {
        let large: Vec<u8> = (0..3 * MAX_STREAM_CHUNK + 77)
            .map(|i| (i % 251) as u8)
            .collect();
        for read in [1, 10, 4096, MAX_STREAM_CHUNK, 2 * MAX_STREAM_CHUNK + 5] {
            let input = if read < 4096 {
                &large[..5000]
            } else {
                &large[..]
            };
            let mut framing = InputFraming::new(StdinMode::StreamChunks, None).unwrap();
            let mut wire = Vec::new();
            for piece in input.chunks(read) {
                framing.push(piece, &mut wire).unwrap();
            }
            framing.push(&[], &mut wire).unwrap();
            framing.finish(&mut wire).unwrap();
            let (data, chunks) = decode_chunks(&wire);
            assert_eq!(data, input, "reads of {read}");
            let expected: usize = input
                .chunks(read)
                .map(|piece| piece.len().div_ceil(MAX_STREAM_CHUNK))
                .sum();
            assert_eq!(
                chunks, expected,
                "one chunk per read, cut at the largest chunk"
            );
        }
        let mut wire = Vec::new();
        InputFraming::Chunks.finish(&mut wire).unwrap();
        assert_eq!(wire, b"0\n", "no input is the end chunk alone");
    }

    /// A read buffer as the run layer fills it: room, then `input`.
    fn read_into_room(input: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0xAA; READ_OFFSET];
        buffer.extend_from_slice(input);
        buffer
    }

    #[test]
    fn framing_in_place_gives_what_pushing_gives() {
        let input: Vec<u8> = (0..MAX_STREAM_CHUNK + 10)
            .map(|i| (i % 253) as u8)
            .collect();
        for mode in [
            StdinMode::StreamChunks,
            StdinMode::StreamBytes,
            StdinMode::StreamBase64,
        ] {
            let len = Some(input.len() as u64);
            let (mut pushed, mut in_place) = (Vec::new(), Vec::new());
            let mut by_push = InputFraming::new(mode, len).unwrap();
            let mut by_read = InputFraming::new(mode, len).unwrap();
            for read in [
                &input[..1],
                &input[1..MAX_STREAM_CHUNK + 1],
                &input[MAX_STREAM_CHUNK + 1..],
            ] {
                by_push.push(read, &mut pushed).unwrap();
                in_place.extend_from_slice(&by_read.frame_read(read_into_room(read)).unwrap());
            }
            by_push.finish(&mut pushed).unwrap();
            by_read.finish(&mut in_place).unwrap();
            assert!(pushed == in_place, "{mode:?}");
        }
        let (data, chunks) = {
            let mut framing = InputFraming::new(StdinMode::StreamChunks, None).unwrap();
            let mut wire = framing.frame_read(read_into_room(b"x")).unwrap().to_vec();
            framing.finish(&mut wire).unwrap();
            decode_chunks(&wire)
        };
        assert_eq!((data.as_slice(), chunks), (&b"x"[..], 1));
    }

    #[test]
    fn framing_in_place_still_refuses_bytes_past_the_announced_length() {
        let mut framing = InputFraming::new(StdinMode::StreamBytes, Some(3)).unwrap();
        assert_eq!(
            framing.frame_read(read_into_room(b"ab")).unwrap(),
            &b"ab"[..]
        );
        assert_eq!(
            framing.frame_read(read_into_room(b"cd")),
            Err(InputLengthChanged {
                expected: 3,
                actual: 4
            })
        );
    }

    #[test]
    fn bytes_go_as_they_are_and_exactly_as_many_as_announced() {
        let mut framing = InputFraming::new(StdinMode::StreamBytes, Some(5)).unwrap();
        let mut wire = Vec::new();
        framing.push(b"\x03\x04", &mut wire).unwrap();
        framing.push(b"\n\x00\xff", &mut wire).unwrap();
        framing.finish(&mut wire).unwrap();
        assert_eq!(wire, b"\x03\x04\n\x00\xff");

        let mut grew = InputFraming::new(StdinMode::StreamBytes, Some(3)).unwrap();
        assert_eq!(
            grew.push(b"abcd", &mut Vec::new()),
            Err(InputLengthChanged {
                expected: 3,
                actual: 4
            })
        );
        let mut shrank = InputFraming::new(StdinMode::StreamBytes, Some(3)).unwrap();
        shrank.push(b"ab", &mut Vec::new()).unwrap();
        assert_eq!(
            shrank.finish(&mut Vec::new()),
            Err(InputLengthChanged {
                expected: 3,
                actual: 2
            })
        );
        assert!(InputFraming::new(StdinMode::StreamBytes, None).is_none());
        assert!(InputFraming::new(StdinMode::Inline, Some(3)).is_none());
    }
}
