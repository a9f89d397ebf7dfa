//! Terminal hygiene: text from a guest or a file name made safe to print on a terminal.
//!
//! A guest chooses its name's summary, its refusals and its plan's command, and an attacker who
//! can drop a file chooses its name. Printed raw, such text could move the cursor or rewrite the
//! screen (ESC, OSC, BEL), split an error line in two (a newline), or show something other than
//! what is there (bidi overrides and isolates, zero-width characters). Every such character
//! becomes a visible escape such as `\u{202e}`, so what the user reads is what is there. Pure.

use std::fmt::Write as _;
use std::path::Path;

/// `text` with every control, bidi-control and invisible formatting character escaped.
pub fn terminal_safe(text: &str) -> String {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        push_safe(&mut safe, c);
    }
    safe
}

/// A path as [`terminal_safe`] text (bytes that are not UTF-8 become U+FFFD).
pub fn safe_path(path: &Path) -> String {
    terminal_safe(&path.to_string_lossy())
}

/// At most `max_chars` characters of `text` (with `…` when cut), made terminal-safe.
pub(crate) fn safe_truncated(text: &str, max_chars: usize) -> String {
    let mut safe = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        push_safe(&mut safe, c);
    }
    if chars.next().is_some() {
        safe.push('…');
    }
    safe
}

fn push_safe(out: &mut String, c: char) {
    if is_unsafe(c) {
        // `{:x}` of a char code point cannot fail to write into a String.
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    } else {
        out.push(c);
    }
}

/// Characters that act on a terminal or hide what text says: C0/C1 controls (ESC, BEL, CR, LF,
/// the OSC/CSI introducers), bidi embeddings, overrides, isolates and marks, zero-width and other
/// invisible format characters, and the line and paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'                   // soft hyphen
                | '\u{034f}'             // combining grapheme joiner
                | '\u{061c}'             // Arabic letter mark
                | '\u{115f}' | '\u{1160}' // Hangul fillers (render as blanks)
                | '\u{17b4}' | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}' // zero-width space/joiners, LRM, RLM
                | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings/overrides
                | '\u{2060}'..='\u{206f}' // word joiner, invisible operators, bidi isolates
                | '\u{3164}'             // Hangul filler
                | '\u{fe00}'..='\u{fe0f}' // variation selectors
                | '\u{feff}'             // zero-width no-break space (BOM)
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}' // interlinear annotation
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}' // tags and variation selectors supplement
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_become_visible_escapes() {
        assert_eq!(
            terminal_safe("a\x1b]0;pwned\x07b\nc\rd\x1b[2J"),
            "a\\u{1b}]0;pwned\\u{7}b\\u{a}c\\u{d}d\\u{1b}[2J"
        );
        assert_eq!(terminal_safe("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
    }

    #[test]
    fn bidi_and_zero_width_characters_become_visible_escapes() {
        for c in [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{2060}',
            '\u{feff}',
            '\u{061c}',
            '\u{2028}',
            '\u{2029}',
            '\u{e0041}',
        ] {
            let safe = terminal_safe(&format!("x{c}y"));
            assert_eq!(safe, format!("x\\u{{{:x}}}y", u32::from(c)));
        }
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        for text in ["rails runner -", "café – naïve ✓", "日本語", "tab\there"] {
            let expected = text.replace('\t', "\\u{9}");
            assert_eq!(terminal_safe(text), expected);
        }
    }

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(safe_truncated("abcdef", 3), "abc…");
        assert_eq!(safe_truncated("abc", 3), "abc");
        assert_eq!(safe_truncated("\u{202e}ab", 2), "\\u{202e}a…");
    }

    #[test]
    fn paths_are_made_safe_too() {
        let path = Path::new("/tmp/evil\n\u{202e}gnp.wasm");
        assert_eq!(safe_path(path), "/tmp/evil\\u{a}\\u{202e}gnp.wasm");
    }
}
