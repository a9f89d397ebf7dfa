//! The host's half of the adapter contract's byte conventions, as pure transforms.
//!
//! An adapter's plan says how stdin travels and how the output is read back (see
//! `wit/adapter.wit`): [`input`] frames stdin for the remote reader of each streamed stdin mode;
//! [`output`] drops what the remote prints before its ready marker, learns from the marker which
//! way the command took, forwards the program's bytes exactly, decodes its framed stderr and
//! stops at the exit trailer to read the exit status. Nothing here reads stdin, writes stdout or
//! touches the data channel: the run layer feeds bytes in and writes what comes out.

pub mod input;
pub mod output;

pub use input::{Base64Lines, END_OF_INPUT, InputFraming, InputLengthChanged, READ_OFFSET};
pub use output::{OutputDecoder, OutputState};
