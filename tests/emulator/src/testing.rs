//! Helpers for tests that use the emulator (here, and in the host's suite): which programs are
//! on this machine, and child processes that cannot outlive a deadline.
//!
//! Programs a test needs (ruby, clojure, tmux, the AWS CLI…): present, the test runs; absent, it
//! is skipped with a note, so the test command passes on a fresh machine with only Rust. Under
//! `CI=true` (set by CI, whose `.ci/run` installs them) a missing one fails the test instead, so
//! CI never passes by skipping.
//!
//! Processes: [`Spawned`] puts a watchdog on a child from its start, so a hang becomes a failure
//! that says what was being waited for, and a failing test leaves no process behind.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

/// Whether `tool` is on PATH. When it is not: under `CI=true` this panics (the tool is
/// required there); otherwise it prints a note naming the test and returns false, and the test
/// returns early: `if !require_tool("clojure") { return; }`.
#[track_caller]
pub fn require_tool(tool: &str) -> bool {
    match verdict(on_path(tool), in_ci(), Need::Required) {
        Verdict::Run => true,
        Verdict::Skip => {
            skip_note(tool, "set CI=true to make it required; .ci/run installs it");
            false
        }
        Verdict::Fail => panic!(
            "`{tool}` is not on PATH, and CI=true requires every tool the tests use \
             (.ci/run installs it)"
        ),
    }
}

/// As [`require_tool`], for a tool that CI cannot install either (it is in no package registry
/// CI reaches, e.g. `session-manager-plugin`): absent, the test is skipped with a note even
/// under `CI=true`.
pub fn optional_tool(tool: &str) -> bool {
    match verdict(on_path(tool), in_ci(), Need::Optional) {
        Verdict::Run => true,
        Verdict::Skip | Verdict::Fail => {
            skip_note(tool, "it is optional, also in CI");
            false
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Run,
    Skip,
    Fail,
}

fn verdict(present: bool, ci: bool, need: Need) -> Verdict {
    match (present, ci, need) {
        (true, _, _) => Verdict::Run,
        (false, true, Need::Required) => Verdict::Fail,
        (false, _, _) => Verdict::Skip,
    }
}

/// Whether this is a CI run: `CI` set to `true` (any case) or `1`, as CI services set it.
pub fn in_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

fn ci_value_means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// An executable file named `tool` in some directory of PATH (`tool` itself if it has a `/`).
pub fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return is_executable(Path::new(tool));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(OsStr::new(tool))))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Written to the process's stderr directly, not through `eprintln!`, which the test harness
/// captures and hides for a passing test: a skip must be visible.
fn skip_note(tool: &str, hint: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr().lock(),
        "note: skipped {test}: `{tool}` is not on PATH ({hint})"
    );
}

/// How long a test's child process may run before it counts as a hang and is killed: minutes,
/// far above the slowest run in the suites (64 MiB through `cat` in a debug build on a loaded
/// 2-core machine), so only a hang reaches it.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(600);

/// Kills the process group of a group leader still running after a limit (the whole group, so
/// that helpers it started cannot keep its pipes open). Disarmed before the leader is reaped,
/// since after that its pid may belong to someone else.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: thread::JoinHandle<bool>,
}

impl Watchdog {
    fn arm(leader: Pid, limit: Duration) -> Watchdog {
        let (done, finished) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            let expired = finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout);
            if expired {
                let _ = kill(Pid::from_raw(-leader.as_raw()), Signal::SIGKILL);
            }
            expired
        });
        Watchdog { done, thread }
    }

    /// Stops the watchdog; true if it had fired.
    fn disarm(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(true)
    }
}

/// A child process in a process group of its own, under a watchdog from its start: still
/// running after its limit, the group is killed, so every read of its output ends and
/// [`Spawned::wait`] fails the test. Dropped without a wait (a failed assertion), the group is
/// killed and the child reaped.
pub struct Spawned {
    child: Child,
    watchdog: Option<Watchdog>,
    limit: Duration,
}

impl Spawned {
    /// Spawns `command` in a process group of its own under a watchdog of
    /// [`PROCESS_DEADLINE`], which kills the whole group.
    #[track_caller]
    pub fn spawn(command: &mut Command) -> Spawned {
        Spawned::spawn_within(command, PROCESS_DEADLINE)
    }

    /// As [`Spawned::spawn`], with another limit.
    #[track_caller]
    pub fn spawn_within(command: &mut Command, limit: Duration) -> Spawned {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
        let pid = Pid::from_raw(child.id() as i32);
        Spawned {
            child,
            watchdog: Some(Watchdog::arm(pid, limit)),
            limit,
        }
    }

    /// The child, for its pipes and its pid. Do not wait for it through this.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Reads what is left of stderr (if it was piped and not taken), waits for the exit and
    /// returns both. A process the watchdog had to kill fails the test, naming `what` was
    /// being waited for and what the process had printed on stderr.
    #[track_caller]
    pub fn wait(mut self, what: &str) -> (ExitStatus, String) {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let (status, fired) = self.reap();
        assert!(
            !fired,
            "{what}: still running after {:?}, so it was killed; its stderr:\n{stderr}",
            self.limit
        );
        (status, stderr)
    }

    /// Waits for the exit without reaping (the pid stays ours), disarms, then reaps.
    fn reap(&mut self) -> (ExitStatus, bool) {
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(Pid::from_raw(self.child.id() as i32)), flags) {
                Err(nix::errno::Errno::EINTR) => continue,
                _ => break,
            }
        }
        let fired = self.watchdog.take().is_some_and(Watchdog::disarm);
        let status = self.child.wait().expect("reap the child");
        (status, fired)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            // The group's id is the leader's pid, still ours: the leader is not reaped yet.
            let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
            self.reap();
        }
    }
}

/// Runs `command` with `stdin` as its input (fed from a thread, so a large input cannot
/// deadlock against a full output pipe) and collects its output, as [`Command::output`] does,
/// but killed after `limit`: that fails the test with what it had printed.
#[track_caller]
pub fn output_within(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    collect_within(command, Some(stdin.to_vec()), limit)
}

/// As [`output_within`], with the program's stdin read from `file` (a regular file: the program
/// can tell the input's length before reading it).
#[track_caller]
pub fn output_from_file_within(command: &mut Command, file: File, limit: Duration) -> Output {
    command.stdin(file);
    collect_within(command, None, limit)
}

/// Feeds `stdin` (when given; else the command's own stdin stays) and collects the output.
#[track_caller]
fn collect_within(command: &mut Command, stdin: Option<Vec<u8>>, limit: Duration) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut spawned =
        Spawned::spawn_within(command.stdout(Stdio::piped()).stderr(Stdio::piped()), limit);
    let writer = stdin.map(|input| {
        let mut child_stdin = spawned.child.stdin.take().expect("piped stdin");
        thread::spawn(move || {
            // The program may end without reading everything: a broken pipe is fine.
            let _ = child_stdin.write_all(&input);
        })
    });
    let mut child_stderr = spawned.child.stderr.take().expect("piped stderr");
    let stderr_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = child_stderr.read_to_end(&mut bytes);
        bytes
    });
    let mut stdout = Vec::new();
    let _ = spawned
        .child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut stdout);
    let (status, fired) = spawned.reap();
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stderr = stderr_reader.join().unwrap_or_default();
    assert!(
        !fired,
        "{program} was still running after {limit:?}, so it was killed; it had printed {} bytes \
         on stdout, ending with {:?}; its stderr:\n{}",
        stdout.len(),
        tail(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// [`output_within`] with no input and [`PROCESS_DEADLINE`]: a bounded [`Command::output`].
#[track_caller]
pub fn output(command: &mut Command) -> Output {
    output_within(command, b"", PROCESS_DEADLINE)
}

/// The last 2 KiB of `bytes` as text, for a failure message.
pub fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(2048);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_is_on_path_and_a_made_up_name_is_not() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-tool-for-ecs-exec-tests"));
        assert!(on_path("/bin/sh"));
    }

    #[test]
    fn a_missing_required_tool_fails_only_in_ci() {
        assert_eq!(verdict(true, true, Need::Required), Verdict::Run);
        assert_eq!(verdict(false, false, Need::Required), Verdict::Skip);
        assert_eq!(verdict(false, true, Need::Required), Verdict::Fail);
        assert_eq!(verdict(false, true, Need::Optional), Verdict::Skip);
    }

    #[test]
    fn a_hanging_process_is_killed_at_the_deadline_and_fails_the_test() {
        let result = std::panic::catch_unwind(|| {
            output_within(
                Command::new("sh").args(["-c", "echo partial; exec sleep 600"]),
                b"",
                Duration::from_millis(300),
            )
        });
        let message = result.expect_err("a hang fails");
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("still running after"), "{message}");
        assert!(message.contains("partial"), "{message}");
    }

    #[test]
    fn a_process_that_ends_gives_its_output_and_status() {
        let output = output_within(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            b"in",
            PROCESS_DEADLINE,
        );
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"in");
        assert_eq!(output.stderr, b"err\n");
    }

    #[test]
    fn ci_is_true_or_one() {
        assert!(ci_value_means_ci(Some("true")));
        assert!(ci_value_means_ci(Some("TRUE")));
        assert!(ci_value_means_ci(Some("1")));
        assert!(!ci_value_means_ci(Some("false")));
        assert!(!ci_value_means_ci(Some("")));
        assert!(!ci_value_means_ci(None));
    }
}
