//! What `ecs-exec cp` reads back from the remote scripts ([`super::script`]): the framed file of
//! a download, written into a local file as it arrives, and the protocol lines of either
//! direction. Pure: bytes in, a verdict out; the caller owns the files.

use std::io::{self, Write};

use aws_lc_rs::digest;

use super::script::LINE_PREFIX;
use crate::run::output::RunOutput;

/// A protocol line longer than this is not one of ours.
const MAX_LINE: usize = 4096;

/// Counts bytes as they are copied, for the progress display.
pub trait Progress: Send {
    /// The size is known (a download's header arrived).
    fn start(&mut self, total: u64);
    fn advance(&mut self, bytes: u64);
}

/// No progress display.
impl Progress for () {
    fn start(&mut self, _total: u64) {}
    fn advance(&mut self, _bytes: u64) {}
}

/// The header of a download: what the container said about the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Permission bits, as `stat -c %a` printed them.
    pub mode: u32,
    pub size: u64,
}

/// Where a download stands.
#[derive(Debug)]
enum Stage {
    /// Before the header line.
    Header(Vec<u8>),
    /// Inside the file's bytes: how many are still to come.
    Body { left: u64 },
    /// After the bytes: the SHA-256 line (and anything else the script says).
    Footer(Vec<u8>),
}

/// Receives a download: the header, then exactly `size` bytes into `file`, then the footer.
pub struct DownloadSink<W, P> {
    file: W,
    progress: P,
    stage: Stage,
    header: Option<FileHeader>,
    digest: digest::Context,
    /// Lines of ours that were not the header or footer: the script's error messages.
    messages: Vec<String>,
    write_error: Option<io::Error>,
}

/// How a download ended, once the session is over.
#[derive(Debug, PartialEq, Eq)]
pub enum DownloadVerdict {
    /// Every byte arrived and the container's SHA-256 matches ours.
    Verified(FileHeader),
    /// Every byte arrived, but the container has no `sha256sum`.
    Unverified(FileHeader),
    /// Something is wrong; the file must not be kept.
    Failed(String),
}

impl<W: Write + Send, P: Progress> DownloadSink<W, P> {
    pub fn new(file: W, progress: P) -> Self {
        Self {
            file,
            progress,
            stage: Stage::Header(Vec::new()),
            header: None,
            digest: digest::Context::new(&digest::SHA256),
            messages: Vec::new(),
            write_error: None,
        }
    }

    /// The local file, to flush and close after the run.
    pub fn into_file(self) -> W {
        self.file
    }

    /// The script's own messages (errors), in order, for the one-line report.
    pub fn messages(&self) -> &[String] {
        &self.messages
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.stage {
                Stage::Header(line) => {
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(bytes);
                        line.truncate(MAX_LINE);
                        return;
                    };
                    line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    let line = String::from_utf8_lossy(line).into_owned();
                    self.stage = Stage::Header(Vec::new());
                    match parse_header(&line) {
                        Some(header) => {
                            self.header = Some(header);
                            self.progress.start(header.size);
                            self.stage = Stage::Body { left: header.size };
                        }
                        None => self.note(&line),
                    }
                }
                Stage::Body { left } => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let (data, rest) = bytes.split_at(take);
                    *left -= take as u64;
                    if *left == 0 {
                        self.stage = Stage::Footer(Vec::new());
                    }
                    self.digest.update(data);
                    if self.write_error.is_none()
                        && let Err(error) = self.file.write_all(data)
                    {
                        self.write_error = Some(error);
                    }
                    self.progress.advance(data.len() as u64);
                    bytes = rest;
                }
                Stage::Footer(footer) => {
                    footer.extend_from_slice(bytes);
                    footer.truncate(MAX_LINE);
                    return;
                }
            }
        }
    }

    fn note(&mut self, line: &str) {
        let line = line.trim_end_matches('\r');
        if let Some(message) = line.strip_prefix(LINE_PREFIX) {
            self.messages.push(message.to_owned());
        } else if !line.trim().is_empty() {
            // Something else wrote to the terminal before the header (a profile script, say).
            self.messages.push(line.to_owned());
        }
    }

    /// The verdict, once the session is over.
    pub fn verdict(&mut self) -> DownloadVerdict {
        if let Some(error) = self.write_error.take() {
            return DownloadVerdict::Failed(format!("writing the local file failed: {error}"));
        }
        let Some(header) = self.header else {
            return DownloadVerdict::Failed(self.messages.last().cloned().unwrap_or_else(|| {
                "the container sent no file header (is `sh` there?)".to_owned()
            }));
        };
        let footer = match &self.stage {
            Stage::Footer(footer) => String::from_utf8_lossy(footer).into_owned(),
            _ => {
                return DownloadVerdict::Failed(
                    "the transfer ended before every byte of the file arrived".to_owned(),
                );
            }
        };
        let claimed = footer.lines().find_map(|line| {
            line.trim_end_matches('\r')
                .strip_prefix("ecs-exec-cp: sha256 ")
        });
        let ours = hex::encode(self.digest.clone().finish());
        match claimed {
            Some("-") => DownloadVerdict::Unverified(header),
            Some(theirs) if theirs == ours => DownloadVerdict::Verified(header),
            Some(theirs) => DownloadVerdict::Failed(format!(
                "checksum mismatch: the container says {theirs}, the received bytes hash to \
                 {ours} (did the file change while it was copied?)"
            )),
            None => DownloadVerdict::Failed(
                "the container's checksum line is missing (did the file shrink while it was \
                 copied?)"
                    .to_owned(),
            ),
        }
    }
}

impl<W: Write + Send, P: Progress> RunOutput for DownloadSink<W, P> {
    fn stdout(&mut self, bytes: &[u8]) -> bool {
        self.feed(bytes);
        true
    }

    /// The plans run under a terminal, which has one output stream; nothing arrives here.
    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.note(&String::from_utf8_lossy(bytes));
        Ok(())
    }
}

/// `ecs-exec-cp: file MODE SIZE`.
fn parse_header(line: &str) -> Option<FileHeader> {
    let fields = line
        .trim_end_matches('\r')
        .strip_prefix("ecs-exec-cp: file ")?;
    let (mode, size) = fields.split_once(' ')?;
    Some(FileHeader {
        mode: u32::from_str_radix(mode, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)?,
        size: size.trim().parse().ok()?,
    })
}

/// The protocol lines an upload's script prints (it prints nothing else).
#[derive(Debug, Default)]
pub struct UploadReport {
    text: Vec<u8>,
    /// The progress bar to draw notes above (hidden when stderr is not a terminal).
    bar: Option<indicatif::ProgressBar>,
}

impl UploadReport {
    /// A report whose notes are printed above `bar`.
    pub fn above(bar: indicatif::ProgressBar) -> Self {
        Self {
            text: Vec::new(),
            bar: Some(bar),
        }
    }

    /// The script's messages, without the prefix.
    pub fn messages(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.text)
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.strip_prefix(LINE_PREFIX).unwrap_or(line).to_owned())
            .collect()
    }

    /// True when the container compared the checksum (it has `sha256sum`).
    pub fn verified(&self) -> bool {
        self.messages()
            .iter()
            .any(|line| line == "received verified")
    }
}

impl RunOutput for UploadReport {
    fn stdout(&mut self, bytes: &[u8]) -> bool {
        if self.text.len() < MAX_LINE * 4 {
            self.text.extend_from_slice(bytes);
        }
        true
    }

    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stdout(bytes);
        Ok(())
    }

    /// Why the copy takes the slower way, said at once (not after a long transfer), above the
    /// progress bar.
    fn note(&mut self, text: &str) -> io::Result<()> {
        let line = crate::run::output::note_line(text);
        let write = || io::Write::write_all(&mut io::stderr().lock(), line.as_bytes());
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(digest::digest(&digest::SHA256, bytes))
    }

    fn framed(data: &[u8], mode: &str, sum: &str) -> Vec<u8> {
        let mut framed = format!("ecs-exec-cp: file {mode} {}\n", data.len()).into_bytes();
        framed.extend_from_slice(data);
        framed.extend_from_slice(format!("\necs-exec-cp: sha256 {sum}\n").as_bytes());
        framed
    }

    #[test]
    fn a_framed_file_in_any_split_is_written_exactly_and_verified() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let whole = framed(&data, "750", &sha(&data));
        for piece in [1, 7, 4096, whole.len()] {
            let mut sink = DownloadSink::new(Vec::new(), ());
            for chunk in whole.chunks(piece) {
                assert!(sink.stdout(chunk));
            }
            let verdict = sink.verdict();
            let header = FileHeader {
                mode: 0o750,
                size: data.len() as u64,
            };
            assert_eq!(
                verdict,
                DownloadVerdict::Verified(header),
                "pieces of {piece}"
            );
            assert_eq!(sink.into_file(), data);
        }
    }

    #[test]
    fn bytes_that_look_like_protocol_lines_inside_the_file_are_data() {
        let data = b"ecs-exec-cp: sha256 -\necs-exec-cp: file 1 1\n".to_vec();
        let mut sink = DownloadSink::new(Vec::new(), ());
        sink.stdout(&framed(&data, "644", &sha(&data)));
        assert!(matches!(sink.verdict(), DownloadVerdict::Verified(_)));
        assert_eq!(sink.into_file(), data);
    }

    #[test]
    fn a_wrong_or_missing_checksum_or_a_short_file_fails() {
        let data = b"hello".to_vec();
        let mut sink = DownloadSink::new(Vec::new(), ());
        sink.stdout(&framed(&data, "644", &sha(b"other")));
        assert!(matches!(sink.verdict(), DownloadVerdict::Failed(m) if m.contains("mismatch")));

        let mut sink = DownloadSink::new(Vec::new(), ());
        sink.stdout(b"ecs-exec-cp: file 644 10\nhello");
        assert!(
            matches!(sink.verdict(), DownloadVerdict::Failed(m) if m.contains("before every byte"))
        );

        let mut sink = DownloadSink::new(Vec::new(), ());
        sink.stdout(b"ecs-exec-cp: file 644 5\nhello\n");
        assert!(matches!(sink.verdict(), DownloadVerdict::Failed(m) if m.contains("missing")));
    }

    #[test]
    fn a_container_without_sha256sum_is_unverified_and_an_error_line_is_kept() {
        let data = b"hello".to_vec();
        let mut sink = DownloadSink::new(Vec::new(), ());
        sink.stdout(&framed(&data, "600", "-"));
        assert!(matches!(sink.verdict(), DownloadVerdict::Unverified(h) if h.mode == 0o600));

        let mut sink = DownloadSink::new(Vec::new(), ());
        sink.stdout(b"motd line\r\necs-exec-cp: /x does not exist\r\n");
        assert_eq!(sink.messages(), ["motd line", "/x does not exist"]);
        assert_eq!(
            sink.verdict(),
            DownloadVerdict::Failed("/x does not exist".to_owned())
        );
    }

    #[test]
    fn malformed_headers_are_not_headers() {
        assert_eq!(
            parse_header("ecs-exec-cp: file 755 12"),
            Some(FileHeader {
                mode: 0o755,
                size: 12
            })
        );
        for line in [
            "ecs-exec-cp: file 9 12",
            "ecs-exec-cp: file 755",
            "ecs-exec-cp: file 755 -1",
            "ecs-exec-cp: file 77777 1",
            "file 755 12",
        ] {
            assert_eq!(parse_header(line), None, "{line}");
        }
    }

    #[test]
    fn an_upload_report_reads_the_scripts_lines() {
        let mut report = UploadReport::default();
        report.stdout(b"ecs-exec-cp: received verified\r\n");
        assert!(report.verified());
        assert_eq!(report.messages(), ["received verified"]);
        let mut report = UploadReport::default();
        report.stdout(b"ecs-exec-cp: received unverified\n");
        assert!(!report.verified());
    }
}
