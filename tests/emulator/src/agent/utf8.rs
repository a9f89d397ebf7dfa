//! Cutting PTY output into UTF-8-safe chunks, as the real agent does: an incomplete multi-byte
//! sequence at the end of a read (at most 3 bytes) is held back for the next read, while any
//! invalid byte further back passes through untouched. Pure functions over byte slices.

/// How many bytes at the end of `bytes` form the start of a UTF-8 sequence that is not yet
/// complete (0 to 3).
pub fn incomplete_tail(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // Walk back over at most 3 continuation bytes to the byte that would lead them.
    for back in 1..=len.min(4) {
        let Some(&byte) = bytes.get(len - back) else {
            return 0;
        };
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte
        }
        let needed = match byte {
            b if b & 0b1110_0000 == 0b1100_0000 => 2,
            b if b & 0b1111_0000 == 0b1110_0000 => 3,
            b if b & 0b1111_1000 == 0b1111_0000 => 4,
            _ => return 0, // ASCII or an invalid lead: nothing to wait for
        };
        return if back < needed { back } else { 0 };
    }
    0
}

/// Splits `buffer` into what can be sent now and what must wait, appending the waiting bytes
/// to a fresh `Vec` that becomes the next read's prefix.
pub fn split_ready(buffer: &[u8]) -> (&[u8], &[u8]) {
    let keep = incomplete_tail(buffer);
    buffer.split_at(buffer.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_text_is_sent_whole() {
        assert_eq!(incomplete_tail(b"hello"), 0);
        assert_eq!(incomplete_tail("héllo €".as_bytes()), 0);
        assert_eq!(incomplete_tail("😀".as_bytes()), 0);
        assert_eq!(incomplete_tail(b""), 0);
    }

    #[test]
    fn incomplete_sequences_are_held_back() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_tail(&[b'a', euro[0]]), 1);
        assert_eq!(incomplete_tail(&[b'a', euro[0], euro[1]]), 2);
        let smile = "😀".as_bytes(); // 4 bytes
        assert_eq!(incomplete_tail(&smile[..3]), 3);
        assert_eq!(incomplete_tail(&smile[..1]), 1);
        let buffer = [b'x', b'y', smile[0], smile[1]];
        let (ready, wait) = split_ready(&buffer);
        assert_eq!((ready, wait), (&b"xy"[..], &smile[..2]));
    }

    #[test]
    fn invalid_bytes_pass_through() {
        assert_eq!(incomplete_tail(&[0xff]), 0);
        assert_eq!(incomplete_tail(&[0x80, 0x80, 0x80, 0x80]), 0);
        assert_eq!(incomplete_tail(&[b'a', 0x80]), 0);
        // A lead byte followed by too many continuation bytes is not "incomplete".
        assert_eq!(incomplete_tail(&[0xc3, 0xa9, 0xa9]), 0);
    }

    #[test]
    fn chunks_reassemble_to_the_original() {
        let text = "aé€😀b".repeat(50);
        let bytes = text.as_bytes();
        for cut in 1..12 {
            let mut carried = Vec::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(cut) {
                carried.extend_from_slice(piece);
                let (ready, wait) = split_ready(&carried);
                assert!(std::str::from_utf8(ready).is_ok());
                out.extend_from_slice(ready);
                carried = wait.to_vec();
            }
            out.extend_from_slice(&carried);
            assert_eq!(out, bytes);
        }
    }
}
