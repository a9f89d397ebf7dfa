//! One one-off on many tasks (`--all-tasks`, `--tasks`). The input is read once into a
//! temporary file and replayed to each task from there, so memory stays flat whatever its size
//! and however many tasks there are; at most `max_parallel` tasks run at a time; each task's
//! output goes out as whole lines marked with its task ([`super::output`]); a task that fails
//! (gone, not connected, a lost channel) does not stop the others.

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream;

use crate::ecs::{EcsError, Target};
use crate::exit::Exit;

use super::output::{OutputFormat, OutputRecord, SharedWriter, TaskLines, task_labels};
use super::{RunError, RunRequest, Services, execute, prepare_with_input};

/// How a fan-out runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanoutOptions {
    /// At most this many tasks at a time (`--max-parallel`).
    pub max_parallel: usize,
    /// `--output text|json`.
    pub format: OutputFormat,
}

/// How one task's run ended, for the summary and the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEnd {
    /// The remote program ran and exited with this status.
    Exited(i32),
    /// The run failed before a status was known; `ecs-exec` alone would have exited with this.
    Failed(Exit),
}

/// What a fan-out reports about one task.
#[derive(Debug)]
pub struct TaskReport {
    pub task_id: String,
    pub label: String,
    pub end: TaskEnd,
    /// The error, as one line, when the run failed.
    pub error: Option<String>,
    pub duration: Duration,
}

/// The input, read once from stdin and kept in an unnamed-for-others temporary file.
pub struct SpooledInput {
    file: tempfile::NamedTempFile,
    len: u64,
}

impl SpooledInput {
    /// Copies all of stdin into a temporary file (in `$TMPDIR`, removed when dropped).
    pub async fn from_stdin() -> Result<SpooledInput, RunError> {
        tokio::task::spawn_blocking(|| {
            let mut file = tempfile::NamedTempFile::new()?;
            let len = io::copy(&mut io::stdin().lock(), &mut file)?;
            Ok(SpooledInput { file, len })
        })
        .await?
        .map_err(RunError::Stdin)
    }

    /// Plans once from the input, locally, so that an adapter that fails or refuses stops the
    /// fan-out before any AWS call; each task still gets its own plan (and nonce) later.
    /// Returns the warning to print once when a third-party adapter takes over the run.
    pub async fn check_plan(&self, req: &RunRequest) -> Result<Option<String>, RunError> {
        let file = tokio::fs::File::open(self.path())
            .await
            .map_err(RunError::Stdin)?;
        let prepared = prepare_with_input(req, Box::new(file), Some(self.len)).await?;
        Ok(prepared.takeover_warning().map(str::to_owned))
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Runs the prepared request on every target, `options.max_parallel` at a time, and reports on
/// each in the order given. `describe` turns a failure into its one-line text and exit code
/// (the CLI's rules, shared with a single run).
pub async fn run_on_tasks(
    services: &Services<'_>,
    req: &RunRequest,
    input: &SpooledInput,
    targets: Vec<(String, Result<Target, EcsError>)>,
    options: FanoutOptions,
    describe: &(dyn Fn(&anyhow::Error) -> (String, Exit) + Sync),
) -> Vec<TaskReport> {
    let ids: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
    let labels = task_labels(&ids);
    let shared = SharedWriter::new(options.format);
    let runs =
        targets
            .into_iter()
            .zip(labels)
            .enumerate()
            .map(|(index, ((task_id, target), label))| {
                let shared = &shared;
                async move {
                    let started = Instant::now();
                    let mut lines = TaskLines::new(task_id.clone(), label.clone(), shared.clone());
                    let result = match target {
                        Ok(target) => run_task(services, req, input, &target, &mut lines).await,
                        Err(error) => Err(error.into()),
                    };
                    let report = report(task_id, label, result, started.elapsed(), describe);
                    announce(shared, &report);
                    (index, report)
                }
            });
    let mut reports: Vec<(usize, TaskReport)> = stream::iter(runs)
        .buffer_unordered(options.max_parallel.max(1))
        .collect()
        .await;
    reports.sort_by_key(|(index, _)| *index);
    reports.into_iter().map(|(_, report)| report).collect()
}

async fn run_task(
    services: &Services<'_>,
    req: &RunRequest,
    input: &SpooledInput,
    target: &Target,
    lines: &mut TaskLines,
) -> anyhow::Result<i32> {
    // Each task reads the input from its own handle, so each has its own position in it.
    let file = tokio::fs::File::open(input.path())
        .await
        .map_err(RunError::Stdin)?;
    let prepared = prepare_with_input(req, Box::new(file), Some(input.len)).await?;
    execute(services, prepared, target, lines).await
}

fn report(
    task_id: String,
    label: String,
    result: anyhow::Result<i32>,
    duration: Duration,
    describe: &(dyn Fn(&anyhow::Error) -> (String, Exit) + Sync),
) -> TaskReport {
    let (end, error) = match result {
        Ok(status) => (TaskEnd::Exited(status), None),
        Err(error) => {
            let (text, exit) = describe(&error);
            (TaskEnd::Failed(exit), Some(text))
        }
    };
    TaskReport {
        task_id,
        label,
        end,
        error,
        duration,
    }
}

/// As each task ends: its result record (JSON), or its error line on stderr (text).
fn announce(shared: &Mutex<SharedWriter>, report: &TaskReport) {
    let mut shared = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match shared.format() {
        OutputFormat::Json => {
            let (exit_status, exit_code) = match report.end {
                TaskEnd::Exited(status) => (Some(status), status_byte(status)),
                TaskEnd::Failed(exit) => (None, exit.code()),
            };
            shared.record(&OutputRecord::Result {
                task: &report.task_id,
                exit_status,
                duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                error: report.error.as_deref(),
                exit_code,
            });
        }
        OutputFormat::Text => {
            if let Some(error) = &report.error {
                crate::cli::report_error(&format!("task {}: {error}", report.label));
            }
        }
    }
}

/// A process status byte for a remote status (one outside 0..=255 cannot be one: 70).
fn status_byte(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(Exit::Software.code())
}

/// The fan-out's exit status: 0 when every task ran and exited 0; otherwise that of the first
/// task, in the order given, that did not: its remote exit status, or the exit code of the
/// failure that stopped it.
pub fn overall_status(reports: &[TaskReport]) -> u8 {
    reports
        .iter()
        .find_map(|report| match report.end {
            TaskEnd::Exited(0) => None,
            TaskEnd::Exited(status) => Some(status_byte(status)),
            TaskEnd::Failed(exit) => Some(exit.code()),
        })
        .unwrap_or(0)
}

/// One line for stderr: how many tasks ran, and which did not exit 0.
pub fn summary(reports: &[TaskReport]) -> String {
    let ok = reports
        .iter()
        .filter(|report| report.end == TaskEnd::Exited(0))
        .count();
    let mut parts = vec![format!("{ok} exited 0")];
    let nonzero: Vec<String> = reports
        .iter()
        .filter_map(|report| match report.end {
            TaskEnd::Exited(status) if status != 0 => Some(format!("{} {status}", report.label)),
            _ => None,
        })
        .collect();
    if !nonzero.is_empty() {
        parts.push(format!(
            "{} exited non-zero ({})",
            nonzero.len(),
            nonzero.join(", ")
        ));
    }
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|report| match report.end {
            TaskEnd::Failed(exit) => Some(format!("{} exit {}", report.label, exit.code())),
            TaskEnd::Exited(_) => None,
        })
        .collect();
    if !failed.is_empty() {
        parts.push(format!("{} failed ({})", failed.len(), failed.join(", ")));
    }
    format!(
        "ran on {} task{}: {}",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(label: &str, end: TaskEnd) -> TaskReport {
        TaskReport {
            task_id: format!("{label}-full-id"),
            label: label.to_owned(),
            end,
            error: None,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn every_task_exiting_zero_is_zero() {
        let reports = [task("a", TaskEnd::Exited(0)), task("b", TaskEnd::Exited(0))];
        assert_eq!(overall_status(&reports), 0);
        assert_eq!(summary(&reports), "ran on 2 tasks: 2 exited 0");
        assert_eq!(overall_status(&[]), 0);
    }

    #[test]
    fn the_first_task_in_order_that_did_not_exit_zero_decides() {
        let reports = [
            task("a", TaskEnd::Exited(0)),
            task("b", TaskEnd::Failed(Exit::Unavailable)),
            task("c", TaskEnd::Exited(3)),
        ];
        assert_eq!(overall_status(&reports), 69);
        assert_eq!(
            summary(&reports),
            "ran on 3 tasks: 1 exited 0; 1 exited non-zero (c 3); 1 failed (b exit 69)"
        );
        let reports = [task("c", TaskEnd::Exited(3)), task("b", TaskEnd::Exited(7))];
        assert_eq!(overall_status(&reports), 3);
    }

    #[test]
    fn a_status_that_is_no_process_status_is_not_success() {
        assert_eq!(overall_status(&[task("a", TaskEnd::Exited(256))]), 70);
        assert_eq!(overall_status(&[task("a", TaskEnd::Exited(-1))]), 70);
    }
}
