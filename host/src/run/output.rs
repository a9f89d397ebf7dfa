//! Where a run's remote output goes: the process's own stdout and stderr for a run on one task,
//! or whole lines marked with their task when one run fans out over many tasks
//! (`--all-tasks`), as text or as JSON lines.

use std::io::{self, Write as _};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

/// The sink the driver writes remote output to.
pub trait RunOutput: Send {
    /// The program's own stdout bytes. False once nothing more can be written (stdout closed).
    fn stdout(&mut self, bytes: &[u8]) -> bool;
    /// Remote stderr (payload type 11).
    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The run is over: write out what is still held back (a last line without its newline).
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A note for the user from the adapter's plan (why this run took a slower way), made safe
    /// for one line of a terminal.
    fn note(&mut self, text: &str) -> io::Result<()> {
        self.stderr(note_line(text).as_bytes())
    }
}

/// `ecs-exec: note: <text>` and a newline, the text made safe for one line of a terminal.
pub fn note_line(text: &str) -> String {
    format!("ecs-exec: note: {}\n", crate::adapter::terminal_safe(text))
}

/// This process's stdout and stderr, byte for byte: a run on one task.
#[derive(Debug, Default)]
pub struct ProcessOutput {
    stdout_closed: bool,
}

impl RunOutput for ProcessOutput {
    /// Writes and flushes. A write error of any kind counts as closed (`| head -1`): there is
    /// nowhere left to put the output.
    fn stdout(&mut self, bytes: &[u8]) -> bool {
        if self.stdout_closed || bytes.is_empty() {
            return !self.stdout_closed;
        }
        let mut stdout = io::stdout().lock();
        if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
            tracing::debug!(%error, "stdout closed");
            self.stdout_closed = true;
        }
        !self.stdout_closed
    }

    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut stderr = io::stderr().lock();
        stderr.write_all(bytes).and_then(|()| stderr.flush())
    }
}

/// How a fan-out prints what its tasks print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Each line as `[TASK] line`, stdout lines on stdout, stderr lines on stderr.
    #[default]
    Text,
    /// One JSON object per line on stdout (see [`OutputRecord`]).
    Json,
}

/// A line longer than this is written in pieces of this size, so memory stays bounded whatever
/// a task prints.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One line of `--output json`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputRecord<'a> {
    /// A line (with its newline, unless it is a task's last line without one, or a piece of
    /// a line over [`MAX_LINE_BYTES`]). `data` when it is UTF-8, `data_base64` otherwise.
    Output {
        task: &'a str,
        stream: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_base64: Option<String>,
    },
    /// How a task's run ended: its exit status, or the error that stopped it.
    Result {
        task: &'a str,
        exit_status: Option<i32>,
        duration_ms: u64,
        error: Option<&'a str>,
        exit_code: u8,
    },
}

/// What all tasks of a fan-out share: the process's stdout and stderr, written a whole line at
/// a time under one lock, so lines of different tasks never mix.
#[derive(Debug)]
pub struct SharedWriter {
    format: OutputFormat,
    stdout_closed: bool,
}

impl SharedWriter {
    pub fn new(format: OutputFormat) -> Arc<Mutex<SharedWriter>> {
        Arc::new(Mutex::new(SharedWriter {
            format,
            stdout_closed: false,
        }))
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Writes one JSON record as a line on stdout; false once stdout is closed.
    pub fn record(&mut self, record: &OutputRecord<'_>) -> bool {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            // Serialising these plain records cannot fail; if it ever did, drop the record
            // rather than the run.
            Err(_) => return !self.stdout_closed,
        };
        line.push(b'\n');
        self.write_stdout(&line)
    }

    fn write_stdout(&mut self, bytes: &[u8]) -> bool {
        if self.stdout_closed {
            return false;
        }
        let mut stdout = io::stdout().lock();
        if stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            self.stdout_closed = true;
        }
        !self.stdout_closed
    }

    fn line(&mut self, task: &str, label: &str, stream: Stream, line: &[u8]) -> io::Result<bool> {
        match self.format {
            OutputFormat::Json => {
                let text = std::str::from_utf8(line).ok();
                let record = OutputRecord::Output {
                    task,
                    stream: stream.name(),
                    data: text,
                    data_base64: text.is_none().then(|| STANDARD.encode(line)),
                };
                Ok(self.record(&record))
            }
            OutputFormat::Text => {
                let mut text = Vec::with_capacity(label.len() + line.len() + 4);
                text.push(b'[');
                text.extend_from_slice(label.as_bytes());
                text.extend_from_slice(b"] ");
                text.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    text.push(b'\n');
                }
                match stream {
                    Stream::Stdout => Ok(self.write_stdout(&text)),
                    Stream::Stderr => {
                        let mut stderr = io::stderr().lock();
                        stderr.write_all(&text).and_then(|()| stderr.flush())?;
                        Ok(!self.stdout_closed)
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Gathers bytes into whole lines; a line longer than [`MAX_LINE_BYTES`] comes out in pieces.
#[derive(Debug, Default)]
pub struct LineSplitter {
    held: Vec<u8>,
}

impl LineSplitter {
    /// Calls `emit` with every line `bytes` completes, newline included. Stops at the first
    /// error and returns it.
    pub fn push<E>(
        &mut self,
        mut bytes: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - self.held.len();
            let window = &bytes[..bytes.len().min(room)];
            let take = memchr::memchr(b'\n', window).map_or(window.len(), |newline| newline + 1);
            self.held.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.held.ends_with(b"\n") || self.held.len() == MAX_LINE_BYTES {
                let result = emit(&self.held);
                self.held.clear();
                // A giant line's allocation is not kept for the next one.
                self.held.shrink_to(64 * 1024);
                result?;
            }
        }
        Ok(())
    }

    /// The last line, if it had no newline.
    pub fn finish<E>(&mut self, emit: impl FnOnce(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.held.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.held);
        emit(&line)
    }
}

/// One task's output in a fan-out: bytes are gathered into lines, and each whole line is
/// written with the task's label.
#[derive(Debug)]
pub struct TaskLines {
    task: String,
    label: String,
    shared: Arc<Mutex<SharedWriter>>,
    stdout_lines: LineSplitter,
    stderr_lines: LineSplitter,
}

impl TaskLines {
    pub fn new(task: String, label: String, shared: Arc<Mutex<SharedWriter>>) -> TaskLines {
        TaskLines {
            task,
            label,
            shared,
            stdout_lines: LineSplitter::default(),
            stderr_lines: LineSplitter::default(),
        }
    }
}

/// Writes one line of one task under the shared lock; `Ok(false)` once stdout is closed.
fn write_line(
    shared: &Mutex<SharedWriter>,
    task: &str,
    label: &str,
    stream: Stream,
    line: &[u8],
) -> io::Result<bool> {
    // A poisoned lock means another task panicked while writing; its line is lost, but this
    // task's output can still go out.
    let mut shared = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    shared.line(task, label, stream, line)
}

/// Why a fan-out stops writing a task's stdout.
enum Stop {
    StdoutClosed,
}

impl RunOutput for TaskLines {
    fn stdout(&mut self, bytes: &[u8]) -> bool {
        let (shared, task, label) = (&self.shared, &self.task, &self.label);
        self.stdout_lines
            .push(bytes, |line| {
                match write_line(shared, task, label, Stream::Stdout, line) {
                    Ok(true) => Ok(()),
                    Ok(false) | Err(_) => Err(Stop::StdoutClosed),
                }
            })
            .is_ok()
    }

    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (shared, task, label) = (&self.shared, &self.task, &self.label);
        self.stderr_lines.push(bytes, |line| {
            write_line(shared, task, label, Stream::Stderr, line).map(|_| ())
        })
    }

    fn finish(&mut self) -> io::Result<()> {
        let (shared, task, label) = (&self.shared, &self.task, &self.label);
        self.stdout_lines
            .finish(|line| write_line(shared, task, label, Stream::Stdout, line).map(|_| ()))?;
        self.stderr_lines
            .finish(|line| write_line(shared, task, label, Stream::Stderr, line).map(|_| ()))
    }
}

/// The shortest prefix of each task id, at least 8 characters, that tells the tasks apart.
pub fn task_labels(task_ids: &[String]) -> Vec<String> {
    const MIN: usize = 8;
    task_ids
        .iter()
        .map(|id| {
            let mut len = MIN.min(id.len());
            while len < id.len()
                && task_ids
                    .iter()
                    .any(|other| other != id && other.get(..len) == id.get(..len))
            {
                len += 1;
            }
            id.get(..len).unwrap_or(id).to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            splitter
                .push(chunk, |line| {
                    out.push(line.to_vec());
                    Ok::<(), ()>(())
                })
                .expect("no error");
        }
        splitter
            .finish(|line| {
                out.push(line.to_vec());
                Ok::<(), ()>(())
            })
            .expect("no error");
        out
    }

    #[test]
    fn lines_are_whole_however_the_bytes_are_split() {
        let expected: Vec<Vec<u8>> = vec![b"one\n".to_vec(), b"two\n".to_vec(), b"three".to_vec()];
        assert_eq!(lines(&[b"one\ntwo\nthree"]), expected);
        assert_eq!(lines(&[b"o", b"ne\nt", b"wo\n", b"thr", b"ee"]), expected);
        assert_eq!(lines(&[b"\n\n"]), vec![b"\n".to_vec(), b"\n".to_vec()]);
        assert!(lines(&[]).is_empty());
    }

    #[test]
    fn a_giant_line_comes_out_in_bounded_pieces() {
        let giant = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let out = lines(&[&giant, b"\n"]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
        assert_eq!(out[1].len(), MAX_LINE_BYTES);
        assert_eq!(out[2].len(), 11);
        assert_eq!(out.concat().len(), giant.len() + 1);
    }

    #[test]
    fn labels_are_eight_characters_unless_that_is_ambiguous() {
        let ids = [
            "0a1b2c3d4e5f".to_owned(),
            "0a1b2c3d9999".to_owned(),
            "ffff0000".to_owned(),
            "abc".to_owned(),
        ];
        assert_eq!(
            task_labels(&ids),
            ["0a1b2c3d4", "0a1b2c3d9", "ffff0000", "abc"]
        );
    }

    #[test]
    fn a_json_output_record_carries_text_or_base64() {
        let text = OutputRecord::Output {
            task: "t1",
            stream: "stdout",
            data: Some("hi\n"),
            data_base64: None,
        };
        assert_eq!(
            serde_json::to_string(&text).expect("json"),
            r#"{"type":"output","task":"t1","stream":"stdout","data":"hi\n"}"#
        );
        let result = OutputRecord::Result {
            task: "t1",
            exit_status: Some(3),
            duration_ms: 12,
            error: None,
            exit_code: 3,
        };
        assert_eq!(
            serde_json::to_string(&result).expect("json"),
            r#"{"type":"result","task":"t1","exit_status":3,"duration_ms":12,"error":null,"exit_code":3}"#
        );
    }
}
