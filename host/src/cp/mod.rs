//! `ecs-exec cp [TARGET FLAGS] SRC DST`: copies one file into or out of a container through the
//! same data channel as a one-off run, so it needs only `ecs:ExecuteCommand` (README "Copying
//! files").
//!
//! Exactly one of SRC and DST is remote, written `:PATH`. The host plans the remote command
//! itself ([`script`]): no adapter is involved. An upload streams the file and then its SHA-256;
//! the container writes a temporary file beside the destination, compares digests and renames
//! it into place only when they match. A download frames the file between a header and its
//! SHA-256 ([`receive`]); the host writes a temporary file beside the destination and renames it
//! only once the digests match. Either way a failure leaves no half-written destination, and the
//! file's mode is kept.

pub mod receive;
pub mod script;

use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_lc_rs::digest;
use clap::{ArgAction, Parser};
use tokio::io::{AsyncRead, ReadBuf};

use crate::cli::target_flags::TargetFlags;
use crate::cli::{report_error, report_warning};
use crate::ecs::{AwsSettings, TaskSelector};
use crate::exit::Exit;
use crate::run::{self, PreparedRun};
use receive::{DownloadSink, DownloadVerdict, Progress, UploadReport};

/// `ecs-exec cp [TARGET FLAGS] SRC DST`.
#[derive(Debug, Parser)]
#[command(
    name = "ecs-exec cp",
    about = "Copy a file into or out of a container (one of SRC and DST is :PATH, in the container)",
    after_help = "Examples:\n  ecs-exec cp --cluster demo --service-name web ./dump.sql :/tmp/dump.sql\n  \
                  ecs-exec cp --cluster demo --task 0a1b2c :/var/log/app.log ./app.log\n\n\
                  The SHA-256 is verified end to end when the container has sha256sum; the mode is\n\
                  kept; a failure leaves no half-written destination. Exit status: 0 when copied,\n\
                  else the codes of `ecs-exec --help` (66: no such source, 73: cannot write the\n\
                  destination)."
)]
pub struct CpArgs {
    #[command(flatten)]
    target: TargetFlags,
    /// Trace on stderr; -vv for more
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// Copy a directory and everything in it (a tar stream; the container needs tar)
    #[arg(short = 'r', long = "recursive")]
    recursive: bool,
    /// The file to copy: a local path, or :PATH in the container
    #[arg(value_name = "SRC")]
    source: OsString,
    /// Where to copy it: a local path, or :PATH in the container (a directory keeps the name)
    #[arg(value_name = "DST")]
    destination: OsString,
}

/// Which way a copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A local file into the container.
    Upload { local: PathBuf, remote: String },
    /// A file of the container to a local path.
    Download { remote: String, local: PathBuf },
}

/// What is copied: one regular file, or a directory and its contents (`-r`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    File,
    Tree,
}

/// Why a copy failed, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpError {
    #[error("cp: {0}")]
    Usage(String),
    #[error("cp: cannot read {}: {source}", path.display())]
    LocalSource { path: PathBuf, source: io::Error },
    #[error("cp: cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    LocalDestination { path: PathBuf, source: io::Error },
    /// The container's side said why it stopped (its status is our exit status).
    #[error("cp: in the container: {message}")]
    Remote { status: i32, message: String },
    #[error("cp: {0}; nothing was written")]
    NotVerified(String),
}

impl CpError {
    /// The exit status: the container's own for a remote failure, else from the table.
    pub fn exit_status(&self) -> u8 {
        match self {
            CpError::Usage(_) => Exit::Usage.code(),
            CpError::LocalSource { .. } => Exit::NoInput.code(),
            CpError::LocalDestination { .. } => Exit::CantCreate.code(),
            CpError::Remote { status, .. } => {
                u8::try_from(*status).unwrap_or(Exit::Software.code())
            }
            CpError::NotVerified(_) => Exit::IoError.code(),
        }
    }
}

/// Entry point for `argv` = `ecs-exec cp …`.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let words = argv.into_iter().skip(2);
    let args =
        match CpArgs::try_parse_from(std::iter::once(OsString::from("ecs-exec cp")).chain(words)) {
            Ok(args) => args,
            Err(error) => {
                use clap::error::ErrorKind;
                if matches!(
                    error.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) {
                    let _ = write!(io::stdout().lock(), "{error}");
                    return ExitCode::SUCCESS;
                }
                let text = error.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                report_error(&format!(
                    "{}; see 'ecs-exec cp --help'",
                    first.trim_start_matches("error: ")
                ));
                return Exit::Usage.to_exit_code();
            }
        };
    let Some(selector) = args.target.selector() else {
        report_error(
            "cp needs a task: give --service-name (or SERVICE_NAME) or --task; see 'ecs-exec cp --help'",
        );
        return Exit::Usage.to_exit_code();
    };
    let direction = match direction(&args.source, &args.destination) {
        Ok(direction) => direction,
        Err(error) => {
            report_error(&format!("{error}; see 'ecs-exec cp --help'"));
            return Exit::Usage.to_exit_code();
        }
    };
    crate::cli::exec::init_tracing(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report_error(&format!("cannot start the async runtime: {error}"));
            return Exit::Software.to_exit_code();
        }
    };
    let target = CpTarget {
        cluster: args.target.cluster.clone(),
        selector,
        container: args.target.container.clone(),
        settings: args.target.aws_settings(),
    };
    let what = if args.recursive {
        What::Tree
    } else {
        What::File
    };
    let outcome = runtime.block_on(copy(&target, direction, what));
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&crate::ecs::one_line(&crate::cli::exec::chain_text(&error)));
            match error
                .chain()
                .find_map(|cause| cause.downcast_ref::<CpError>())
            {
                Some(cp) => ExitCode::from(cp.exit_status()),
                None => crate::cli::exec::exit_for(&error).to_exit_code(),
            }
        }
    }
}

/// Which side is remote: exactly one of the two is `:PATH`. A remote directory (ending in `/`)
/// or a local directory keeps the source's file name.
pub fn direction(source: &OsStr, destination: &OsStr) -> Result<Direction, CpError> {
    let remote = |word: &OsStr| -> Result<Option<String>, CpError> {
        let bytes = word.as_encoded_bytes();
        if bytes.first() != Some(&b':') {
            return Ok(None);
        }
        let text = word
            .to_str()
            .ok_or_else(|| CpError::Usage("a remote path must be valid UTF-8".to_owned()))?;
        let path = &text[1..];
        script::check_remote_path(path).map_err(|why| CpError::Usage(why.to_owned()))?;
        Ok(Some(path.to_owned()))
    };
    match (remote(source)?, remote(destination)?) {
        (Some(_), Some(_)) => Err(CpError::Usage(
            "both paths are remote (:PATH); one must be local".to_owned(),
        )),
        (None, None) => Err(CpError::Usage(
            "neither path is remote: write the container's path as :PATH".to_owned(),
        )),
        (None, Some(mut remote)) => {
            let local = PathBuf::from(source);
            if remote.ends_with('/') {
                let name = local
                    .file_name()
                    .ok_or_else(|| CpError::Usage(format!("{} names no file", local.display())))?;
                remote.push_str(&name.to_string_lossy());
            }
            Ok(Direction::Upload { local, remote })
        }
        (Some(remote), None) => {
            let mut local = PathBuf::from(destination);
            if local.is_dir() || destination.as_encoded_bytes().ends_with(b"/") {
                let name = remote
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .filter(|name| !name.is_empty());
                let name = name.ok_or_else(|| {
                    CpError::Usage(format!("the remote path {remote} names no file"))
                })?;
                local.push(name);
            }
            Ok(Direction::Download { remote, local })
        }
    }
}

/// Where the copy runs, as the target flags said.
struct CpTarget {
    cluster: String,
    selector: TaskSelector,
    container: Option<String>,
    settings: AwsSettings,
}

/// Local checks first (no AWS call for a missing source or an unwritable destination), then
/// the target, then the transfer.
async fn copy(target: &CpTarget, direction: Direction, what: What) -> anyhow::Result<()> {
    match (direction, what) {
        (Direction::Upload { local, remote }, What::File) => upload(target, &local, &remote).await,
        (Direction::Upload { local, remote }, What::Tree) => {
            upload_tree(target, &local, &remote).await
        }
        (Direction::Download { remote, local }, what) => {
            download(target, &remote, &local, what).await
        }
    }
}

async fn upload(target: &CpTarget, local: &Path, remote: &str) -> anyhow::Result<()> {
    let source_error = |source| CpError::LocalSource {
        path: local.to_owned(),
        source,
    };
    let file = std::fs::File::open(local).map_err(source_error)?;
    let metadata = file.metadata().map_err(source_error)?;
    if !metadata.is_file() {
        let why = if metadata.is_dir() {
            "a directory: copy it with -r"
        } else {
            "not a regular file"
        };
        return Err(source_error(io::Error::other(why)).into());
    }
    let plan = script::upload_plan(
        remote,
        metadata.permissions().mode() & 0o7777,
        metadata.len(),
        &crate::adapter::new_nonce(),
    );
    send_file(target, file, metadata.len(), plan).await
}

/// `-r` into the container: the directory's contents as a tar archive (symbolic links stay
/// links), staged in a local temporary file so its size and digest are known.
async fn upload_tree(target: &CpTarget, local: &Path, remote: &str) -> anyhow::Result<()> {
    let source_error = |source| CpError::LocalSource {
        path: local.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(local).map_err(source_error)?;
    if !metadata.is_dir() {
        return Err(
            source_error(io::Error::other("not a directory (drop -r to copy a file)")).into(),
        );
    }
    let name = std::fs::canonicalize(local)
        .ok()
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "root".to_owned());
    let directory = local.to_owned();
    let archive = tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
        let mut file = tempfile::tempfile()?;
        let mut builder = tar::Builder::new(&mut file);
        builder.follow_symlinks(false);
        builder.append_dir_all(".", &directory)?;
        builder.finish()?;
        drop(builder);
        io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        Ok(file)
    })
    .await
    .map_err(|error| source_error(io::Error::other(error)))?
    .map_err(source_error)?;
    let len = archive.metadata().map_err(source_error)?.len();
    let plan = script::upload_tree_plan(remote, &name, len, &crate::adapter::new_nonce());
    send_file(target, archive, len, plan).await
}

/// Streams `file` (`len` bytes) under `plan`, then its SHA-256 for the container to compare.
async fn send_file(
    target: &CpTarget,
    file: std::fs::File,
    len: u64,
    plan: crate::adapter::Plan,
) -> anyhow::Result<()> {
    let progress = progress_bar(Some(len));
    let digest = Arc::new(Mutex::new(digest::Context::new(&digest::SHA256)));
    let input = HashingReader {
        inner: tokio::fs::File::from_std(file),
        digest: Arc::clone(&digest),
        progress: progress.clone(),
    };
    let after_input: run::AfterInput = Box::new(move || {
        let context = digest.lock().map(|context| context.clone());
        let hex = context.map_or_else(|_| String::new(), |context| hex::encode(context.finish()));
        format!("{hex}\n").into_bytes()
    });
    let prepared = PreparedRun::host_planned(plan, Box::new(input), Some(len), Some(after_input));
    let mut report = UploadReport::above(progress.clone());
    let status = run_on_target(target, prepared, &mut report).await;
    progress.finish_and_clear();
    let status = status?;
    if status != 0 {
        return Err(remote_failure(status, report.messages()).into());
    }
    if !report.verified() {
        report_warning(UNVERIFIED);
    }
    Ok(())
}

/// The one warning of a copy the container could not check.
const UNVERIFIED: &str =
    "cp: the container has no sha256sum, so the copy was not verified end to end";

async fn download(target: &CpTarget, remote: &str, local: &Path, what: What) -> anyhow::Result<()> {
    let destination_error = |source| CpError::LocalDestination {
        path: local.to_owned(),
        source,
    };
    if what == What::Tree && local.symlink_metadata().is_ok() {
        let exists = io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it already exists: remove it or name a new path",
        );
        return Err(destination_error(exists).into());
    }
    let directory = match local.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = local.file_name().map(OsStr::to_owned).unwrap_or_default();
    let mut prefix = OsString::from(".");
    prefix.push(&name);
    prefix.push(".ecs-exec-part-");
    // Removed on every way out unless persisted: no half-written destination.
    let temporary = tempfile::Builder::new()
        .prefix(&prefix)
        .tempfile_in(&directory)
        .map_err(destination_error)?;
    let file = temporary.reopen().map_err(destination_error)?;
    let progress = progress_bar(None);
    let mut sink = DownloadSink::new(
        io::BufWriter::with_capacity(256 * 1024, file),
        BarProgress(progress.clone()),
    );
    let nonce = crate::adapter::new_nonce();
    let plan = match what {
        What::File => script::download_plan(remote, &nonce),
        What::Tree => script::download_tree_plan(remote, &nonce),
    };
    let prepared = PreparedRun::host_planned(plan, Box::new(tokio::io::empty()), Some(0), None);
    let status = run_on_target(target, prepared, &mut sink).await;
    progress.finish_and_clear();
    let status = status?;
    if status != 0 {
        return Err(remote_failure(status, sink.messages().to_vec()).into());
    }
    let header = match sink.verdict() {
        DownloadVerdict::Verified(header) => header,
        DownloadVerdict::Unverified(header) => {
            report_warning(UNVERIFIED);
            header
        }
        DownloadVerdict::Failed(why) => return Err(CpError::NotVerified(why).into()),
    };
    let file = sink
        .into_file()
        .into_inner()
        .map_err(|error| destination_error(error.into_error()))?;
    file.sync_all().map_err(destination_error)?;
    match what {
        What::File => {
            std::fs::set_permissions(
                temporary.path(),
                std::fs::Permissions::from_mode(header.mode),
            )
            .map_err(destination_error)?;
            temporary
                .persist(local)
                .map_err(|error| destination_error(error.error))?;
        }
        What::Tree => unpack_tree(temporary.path(), &directory, &prefix, local, header.mode)
            .map_err(destination_error)?,
    }
    Ok(())
}

/// Unpacks a verified archive into a temporary directory beside `local`, gives it `mode` and
/// renames it into place. The tar crate refuses entries that would land outside the directory
/// (absolute paths, `..`, links), so a hostile container cannot write elsewhere.
fn unpack_tree(
    archive: &Path,
    directory: &Path,
    prefix: &OsStr,
    local: &Path,
    mode: u32,
) -> io::Result<()> {
    let staging = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(directory)?;
    let mut unpacker = tar::Archive::new(io::BufReader::new(std::fs::File::open(archive)?));
    unpacker.set_preserve_permissions(true);
    unpacker.set_overwrite(false);
    unpacker.unpack(staging.path())?;
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(mode))?;
    let path = staging.keep();
    std::fs::rename(&path, local).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&path);
    })
}

/// Resolves the target and runs the prepared copy there; the remote status comes back.
async fn run_on_target(
    target: &CpTarget,
    prepared: PreparedRun,
    output: &mut dyn run::output::RunOutput,
) -> anyhow::Result<i32> {
    let request = run::TargetRequest {
        aws: &target.settings,
        cluster: &target.cluster,
        selector: &target.selector,
        container: target.container.as_deref(),
    };
    run::resolve_and_execute(request, prepared, output).await
}

/// The container's script stopped with `status`: its last message says why.
fn remote_failure(status: i32, messages: Vec<String>) -> CpError {
    let message = messages.into_iter().last().unwrap_or_else(|| {
        format!(
            "the copy stopped with status {status} and said nothing (is `sh` there, with `base64`?)"
        )
    });
    CpError::Remote {
        status,
        message: crate::adapter::terminal_safe(&message),
    }
}

/// A progress bar on stderr when it is a terminal (bytes, rate, ETA); hidden otherwise. A
/// download learns its total from the header ([`Progress::start`]).
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_bar}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The download's byte count on the progress bar.
struct BarProgress(indicatif::ProgressBar);

impl Progress for BarProgress {
    fn start(&mut self, total: u64) {
        self.0.set_length(total);
    }

    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// The upload's input: the file, hashed (SHA-256) and counted as it is read.
struct HashingReader<R> {
    inner: R,
    digest: Arc<Mutex<digest::Context>>,
    progress: indicatif::ProgressBar,
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            if let Ok(mut digest) = this.digest.lock() {
                digest.update(fresh);
            }
            this.progress.inc(fresh.len() as u64);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(word: &str) -> OsString {
        OsString::from(word)
    }

    #[test]
    fn exactly_one_side_is_remote() {
        assert_eq!(
            direction(&os("./dump.sql"), &os(":/tmp/dump.sql")).unwrap(),
            Direction::Upload {
                local: PathBuf::from("./dump.sql"),
                remote: "/tmp/dump.sql".to_owned()
            }
        );
        assert_eq!(
            direction(&os(":/var/log/app.log"), &os("app.log")).unwrap(),
            Direction::Download {
                remote: "/var/log/app.log".to_owned(),
                local: PathBuf::from("app.log")
            }
        );
        assert!(
            matches!(direction(&os(":/a"), &os(":/b")), Err(CpError::Usage(m)) if m.contains("both"))
        );
        assert!(
            matches!(direction(&os("a"), &os("b")), Err(CpError::Usage(m)) if m.contains(":PATH"))
        );
        assert!(matches!(
            direction(&os("a"), &os(":/tmp/a\nb")),
            Err(CpError::Usage(_))
        ));
    }

    #[test]
    fn a_directory_destination_keeps_the_source_name() {
        assert_eq!(
            direction(&os("dir/dump.sql"), &os(":/tmp/")).unwrap(),
            Direction::Upload {
                local: PathBuf::from("dir/dump.sql"),
                remote: "/tmp/dump.sql".to_owned()
            }
        );
        let here = tempfile::tempdir().unwrap();
        let local = here.path().to_str().unwrap();
        assert_eq!(
            direction(&os(":/var/log/app.log"), &os(local)).unwrap(),
            Direction::Download {
                remote: "/var/log/app.log".to_owned(),
                local: here.path().join("app.log")
            }
        );
        assert!(direction(&os(":/"), &os(local)).is_err());
    }

    #[test]
    fn a_remote_failure_exits_with_the_containers_status_and_says_its_last_word() {
        let error = remote_failure(
            73,
            vec![
                "motd".to_owned(),
                "cannot create a file beside /x".to_owned(),
            ],
        );
        assert_eq!(error.exit_status(), 73);
        assert_eq!(
            error.to_string(),
            "cp: in the container: cannot create a file beside /x"
        );
        assert_eq!(CpError::NotVerified("x".to_owned()).exit_status(), 74);
    }
}
