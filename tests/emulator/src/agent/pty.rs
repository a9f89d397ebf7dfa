//! Running a command "in a container": split shell-style, exec'd directly (no shell) as the
//! leader of a new session whose controlling terminal is a fresh PTY, with the container's
//! working directory, environment and PATH, `TERM=xterm-256color` and `LANG=C.UTF-8` if unset.
//!
//! [`PtyMaster`] is the non-blocking master side (async read, write, resize); [`ProcessGroup`]
//! owns the child and kills its whole process group when dropped, so no command outlives its
//! session or the emulator. The emulator's own `AWS_*` variables never reach a command.
//!
//! The command's exit is seen through a pidfd without reaping it: the leader stays a zombie
//! until its group has been killed and the group is dropped. A reaped leader frees its pid, the
//! group's id, for the next process; a later `killpg` on it then killed whatever new session
//! had been given that pid (here `pid_max` is 32768 and a test run starts thousands of
//! processes).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

use crate::counters::Counters;
use crate::world::ExecEnvironment;

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, Winsize);

/// PATH used when the emulator itself has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a command could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The command string does not split (e.g. an unclosed quote) or is empty.
    #[error("cannot split command: {0}")]
    Split(String),
    /// openpty or fcntl failed.
    #[error("cannot create a pty: {0}")]
    Pty(#[source] nix::Error),
    /// The program could not be started (not found, not executable, bad directory…).
    #[error("cannot start {program}: {source}")]
    Exec {
        /// argv[0].
        program: String,
        /// The OS error.
        source: io::Error,
    },
}

/// The master side of the PTY, non-blocking.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

/// The command's process group; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ProcessGroup {
    /// The leader's pid, which is also the group's id (the leader called setsid).
    pid: Pid,
    /// Readable once the leader has exited.
    exit: AsyncFd<OwnedFd>,
    exited: bool,
    counters: Arc<Counters>,
}

/// Starts `command` under a new PTY of the given size.
pub fn spawn(
    command: &str,
    exec: &ExecEnvironment,
    size: Winsize,
    counters: Arc<Counters>,
) -> Result<(PtyMaster, ProcessGroup), SpawnError> {
    let argv = shell_words::split(command).map_err(|e| SpawnError::Split(e.to_string()))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(SpawnError::Split("empty command".into()));
    };
    let pty = openpty(Some(&size), None).map_err(SpawnError::Pty)?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(SpawnError::Pty)?;
    }
    fcntl(pty.master.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(SpawnError::Pty)?;
    // SAFETY: `pty.master` is an open descriptor owned by the AsyncFd from here on; nothing
    // else closes or replaces it while the AsyncFd lives.
    let master = unsafe { AsyncFd::register(pty.master) }.map_err(|e| SpawnError::Exec {
        program: program.clone(),
        source: e.into_parts().1,
    })?;

    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    configure_environment(&mut cmd, exec);
    if let Some(dir) = &exec.working_directory {
        cmd.current_dir(dir);
    }
    let stdio = |fd: &OwnedFd| -> Result<Stdio, SpawnError> {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|source| SpawnError::Exec {
                program: program.clone(),
                source,
            })
    };
    cmd.stdin(stdio(&pty.slave)?)
        .stdout(stdio(&pty.slave)?)
        .stderr(stdio(&pty.slave)?);
    // SAFETY: between fork and exec only async-signal-safe calls are made (signal, setsid,
    // ioctl).
    unsafe {
        cmd.pre_exec(|| {
            // A container's processes start with the default dispositions. Ignored signals are
            // inherited across exec, and a shell cannot trap a signal it was started ignoring:
            // an emulator launched in the background of a script (SIGINT and SIGQUIT ignored)
            // would otherwise run commands that Ctrl-C cannot reach.
            for signal in [nix::libc::SIGINT, nix::libc::SIGQUIT] {
                nix::libc::signal(signal, nix::libc::SIG_DFL);
            }
            nix::unistd::setsid().map_err(io::Error::from)?;
            // Make the PTY (already on fd 0) the controlling terminal of the new session.
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // A std child is never reaped behind our back (tokio's would be, once dropped).
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: program.clone(),
        source,
    })?;
    // The parent's copies of the slave must go, or the master never sees the end of output.
    drop(cmd);
    drop(pty.slave);
    // `child` is only a pid from here on: the group waits for it and reaps it.
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let exit = pidfd(pid).map_err(|source| {
        kill_and_reap(pid);
        SpawnError::Exec {
            program: program.clone(),
            source,
        }
    })?;
    Counters::bump(&counters.processes_spawned);
    Counters::bump(&counters.processes_running);
    let group = ProcessGroup {
        pid,
        exit,
        exited: false,
        counters,
    };
    Ok((PtyMaster { fd: master }, group))
}

/// A pidfd for `pid`, readable once it exits (Linux 5.3 or later).
fn pidfd(pid: Pid) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: the AsyncFd owns `fd` from here on; nothing else closes or replaces it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

fn configure_environment(cmd: &mut std::process::Command, exec: &ExecEnvironment) {
    cmd.env_clear();
    let mut path = None;
    if exec.inherit_environment {
        for (key, value) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("AWS_") {
                continue;
            }
            if name == "PATH" {
                path = Some(value);
                continue;
            }
            cmd.env(&key, &value);
        }
    }
    let base = path.unwrap_or_else(|| FALLBACK_PATH.into());
    let mut dirs: Vec<std::path::PathBuf> = exec.path_prepend.clone();
    dirs.extend(std::env::split_paths(&base));
    if let Ok(joined) = std::env::join_paths(dirs) {
        cmd.env("PATH", joined);
    }
    let mut has_lang = exec.inherit_environment && std::env::var_os("LANG").is_some();
    for (key, value) in &exec.environment {
        if key == "PATH" {
            // An explicit PATH replaces everything but the prepended directories.
            let mut dirs = exec.path_prepend.clone();
            dirs.extend(std::env::split_paths(value));
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("PATH", joined);
            }
            continue;
        }
        has_lang |= key == "LANG";
        cmd.env(key, value);
    }
    cmd.env("TERM", "xterm-256color");
    if !has_lang {
        cmd.env("LANG", "C.UTF-8");
    }
}

impl PtyMaster {
    /// Reads what the command wrote; `Ok(0)` once every writer has closed the terminal
    /// (Linux reports that as EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| read_retrying(fd.get_ref(), buf)) {
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads without waiting: `None` when nothing is available.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match read_retrying(self.fd.get_ref(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// Writes some of `data` (the terminal takes what fits), waiting until it can.
    ///
    /// Fails with `BrokenPipe` once every process has closed the terminal while it is full:
    /// Linux then reports the master writable for good (hang-up) yet refuses the bytes with
    /// EAGAIN, so waiting for room would spin forever and the input could never be read.
    pub async fn write(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            let hung_up = guard.ready().is_write_closed();
            match guard.try_io(|fd| {
                loop {
                    match nix::unistd::write(fd.get_ref(), data) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => return other.map_err(io::Error::from),
                    }
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) if hung_up => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the terminal is full and nobody holds it open any more",
                    ));
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Applies a window size (TIOCSWINSZ); the kernel sends SIGWINCH to the foreground group.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is an open PTY master for the life of `self`, and `size` is a valid
        // winsize that outlives the call.
        unsafe { set_window_size(self.fd.get_ref().as_raw_fd(), &size) }
            .map(|_| ())
            .map_err(io::Error::from)
    }
}

fn read_retrying(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

impl ProcessGroup {
    /// Waits for the command itself to exit; returns its exit code (128+signal if killed). The
    /// leader is left unreaped (see the module's comment).
    pub async fn wait(&mut self) -> io::Result<i32> {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        loop {
            let mut guard = self.exit.readable().await?;
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            let status = match waitid(Id::PIDFd(self.exit.get_ref().as_fd()), flags) {
                Ok(WaitStatus::StillAlive) => {
                    guard.clear_ready();
                    continue;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                other => other.map_err(io::Error::from)?,
            };
            if !self.exited {
                self.exited = true;
                Counters::drop_one(&self.counters.processes_running);
                self.counters.notify();
            }
            return Ok(match status {
                WaitStatus::Exited(_, code) => code,
                WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
                _ => -1,
            });
        }
    }

    /// Sends a signal to the whole process group (ignored if it is gone). Safe while the group
    /// lives: its unreaped leader keeps the group's id from going to another process.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(self.pid, signal);
    }
}

/// Kills the group led by `pid`, including anything the command left in the background, then
/// reaps the leader: SIGKILL cannot be caught, so this returns as soon as the kernel has torn it
/// down, and nobody sees a command outlive its session.
fn kill_and_reap(pid: Pid) {
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        kill_and_reap(self.pid);
        if !self.exited {
            Counters::drop_one(&self.counters.processes_running);
            self.counters.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> ExecEnvironment {
        ExecEnvironment {
            working_directory: None,
            environment: vec![("GREETING".into(), "hello there".into())],
            path_prepend: vec![],
            inherit_environment: true,
        }
    }

    fn size() -> Winsize {
        Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }

    async fn read_all(master: &PtyMaster) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = master.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn runs_under_a_tty_with_the_container_environment() {
        let counters = Arc::new(Counters::default());
        let dir = std::env::temp_dir();
        let mut exec = env();
        exec.working_directory = Some(dir.clone());
        let (master, mut group) = spawn(
            "sh -c 'test -t 0 && echo tty; echo \"$GREETING|$TERM|$LANG\"; pwd; exit 3'",
            &exec,
            size(),
            Arc::clone(&counters),
        )
        .unwrap();
        let output = String::from_utf8(read_all(&master).await).unwrap();
        assert_eq!(group.wait().await.unwrap(), 3);
        assert!(output.contains("tty\r\n"), "{output:?}");
        assert!(output.contains("hello there|xterm-256color|"), "{output:?}");
        let canonical = dir.canonicalize().unwrap();
        assert!(output.contains(canonical.to_str().unwrap()), "{output:?}");
        assert_eq!(counters.snapshot().processes_running, 0);
    }

    #[tokio::test]
    async fn no_shell_is_involved() {
        let counters = Arc::new(Counters::default());
        // Without a shell, `$HOME` and `;` are plain arguments.
        let (master, mut group) = spawn("echo '$HOME' ; x", &env(), size(), counters).unwrap();
        let output = read_all(&master).await;
        assert_eq!(group.wait().await.unwrap(), 0);
        assert_eq!(output, b"$HOME ; x\r\n");
    }

    #[tokio::test]
    async fn input_and_resize_reach_the_command() {
        let counters = Arc::new(Counters::default());
        let (master, mut group) = spawn(
            "sh -c 'read line; stty size; echo got:$line'",
            &env(),
            size(),
            counters,
        )
        .unwrap();
        master.resize(100, 30).unwrap();
        let mut written = 0;
        let input = b"abc\r";
        while written < input.len() {
            written += master.write(&input[written..]).await.unwrap();
        }
        let output = String::from_utf8(read_all(&master).await).unwrap();
        assert_eq!(group.wait().await.unwrap(), 0);
        assert!(output.contains("30 100"), "{output:?}");
        assert!(output.contains("got:abc"), "{output:?}");
    }

    #[test]
    fn input_for_a_terminal_nobody_holds_fails_instead_of_waiting_forever() {
        // On a thread of its own: a write that spins never yields, so no timer could stop it.
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let result = rt.block_on(async {
                let counters = Arc::new(Counters::default());
                let (master, mut group) =
                    spawn("sh -c 'stty raw -echo'", &env(), size(), counters)?;
                assert_eq!(group.wait().await?, 0);
                // The kernel buffers some input for nobody; past that, the write must fail.
                let chunk = [b'x'; 16 * 1024];
                for _ in 0..1000 {
                    master.write(&chunk).await?;
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            });
            let _ = done.send(result.map_err(|e| e.to_string()));
        });
        let result = outcome
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a write to an abandoned, full terminal waited instead of failing");
        let error = result.expect_err("16 MiB went into a terminal nobody reads");
        assert!(
            error.contains("nobody holds it open") || error.contains("EIO"),
            "{error}"
        );
    }

    #[test]
    fn bad_commands_are_errors() {
        let counters = Arc::new(Counters::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        assert!(matches!(
            spawn("echo 'unclosed", &env(), size(), Arc::clone(&counters)),
            Err(SpawnError::Split(_))
        ));
        assert!(matches!(
            spawn("   ", &env(), size(), Arc::clone(&counters)),
            Err(SpawnError::Split(_))
        ));
        assert!(matches!(
            spawn(
                "/nonexistent/program",
                &env(),
                size(),
                Arc::clone(&counters)
            ),
            Err(SpawnError::Exec { .. })
        ));
        assert_eq!(counters.snapshot().processes_running, 0);
    }

    /// The state letter of `pid` in /proc (`Z` for a zombie), `None` once it is gone.
    fn process_state(pid: Pid) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[tokio::test]
    async fn the_leader_keeps_its_pid_until_the_group_is_dropped() {
        let counters = Arc::new(Counters::default());
        let (_master, mut group) = spawn("true", &env(), size(), Arc::clone(&counters)).unwrap();
        let pid = group.pid;
        assert_eq!(group.wait().await.unwrap(), 0);
        assert_eq!(counters.snapshot().processes_running, 0);
        // Exited but not reaped: its pid, the group's id, cannot go to another process, so
        // killing the group later cannot hit a stranger.
        assert_eq!(process_state(pid), Some('Z'));
        group.signal(Signal::SIGKILL);
        assert_eq!(process_state(pid), Some('Z'));
        drop(group);
        assert_ne!(
            process_state(pid),
            Some('Z'),
            "reaped when the group is dropped"
        );
    }

    #[tokio::test]
    async fn dropping_the_group_kills_background_children() {
        let counters = Arc::new(Counters::default());
        let (master, group) = spawn("sleep 1000", &env(), size(), Arc::clone(&counters)).unwrap();
        assert_eq!(counters.snapshot().processes_running, 1);
        drop(group);
        // Once the group is dead, the terminal reports end of output.
        assert!(read_all(&master).await.is_empty());
        assert_eq!(counters.snapshot().processes_running, 0);
    }
}
