//! The local terminal: raw mode and its restoration, window size, resize and termination signals.
//!
//! [`RawModeGuard`] puts stdin's tty in raw mode (only when stdin is a tty) and puts it back on
//! drop, from a panic hook, or through [`restore`] on a signal path. [`ResizeEvents`] turns
//! SIGWINCH bursts into few window sizes using the pure [`ResizeDebouncer`]; [`TerminationSignals`]
//! reports SIGTERM/SIGHUP/SIGINT so the run layer can restore the tty and exit 128+n.
//! Nothing here panics, prints, or reads stdin; it only uses libc and tokio.

use std::io::{self, IsTerminal};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    io::stdin().is_terminal()
}

/// Whether stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    io::stdout().is_terminal()
}

/// The size of a terminal in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// The window size of the controlling terminal: from stdin, stdout or stderr, whichever is a
/// tty, else from `/dev/tty`; `None` without a terminal (or with a zero-sized one).
pub fn window_size() -> Option<WindowSize> {
    [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO]
        .into_iter()
        .find_map(window_size_of)
        .or_else(|| {
            let tty = std::fs::File::open("/dev/tty").ok()?;
            window_size_of(std::os::fd::AsRawFd::as_raw_fd(&tty))
        })
}

fn window_size_of(fd: RawFd) -> Option<WindowSize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass; an fd that is not a
    // tty just makes the call fail with ENOTTY.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0 && size.ws_row > 0).then_some(WindowSize {
        cols: size.ws_col,
        rows: size.ws_row,
    })
}

/// The terminal settings to put back: `Some` while raw mode is on.
static SAVED_TERMIOS: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

fn saved_termios() -> MutexGuard<'static, Option<(RawFd, libc::termios)>> {
    SAVED_TERMIOS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Raw mode on stdin's terminal for as long as the guard lives.
///
/// In raw mode Ctrl-C, Ctrl-Z, Ctrl-\ and Ctrl-D are plain bytes for the remote program, and
/// nothing is echoed or line-buffered locally. The previous settings come back when the guard
/// drops, when a panic unwinds or aborts through the panic hook, or when [`restore`] is called.
#[derive(Debug)]
pub struct RawModeGuard {
    _private: (),
}

impl RawModeGuard {
    /// Enters raw mode if stdin is a terminal; `Ok(None)` when it is not (a pipe or a file) or
    /// when raw mode is already on (the outer guard restores).
    pub fn enter() -> io::Result<Option<RawModeGuard>> {
        if !stdin_is_tty() {
            return Ok(None);
        }
        Self::enter_on(libc::STDIN_FILENO)
    }

    /// Raw mode on the terminal `fd` (stdin in production; a pty in tests).
    fn enter_on(fd: RawFd) -> io::Result<Option<RawModeGuard>> {
        install_panic_hook();
        let mut saved = saved_termios();
        if saved.is_some() {
            return Ok(None);
        }
        // SAFETY: termios is plain old data; tcgetattr fills it completely on success.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and a valid pointer to a termios.
        if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = original;
        // SAFETY: cfmakeraw only edits the struct we own.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: valid fd and a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        *saved = Some((fd, original));
        Ok(Some(RawModeGuard { _private: () }))
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was before raw mode. Idempotent; returns whether it restored
/// something. Never panics; safe to call on any exit path (signal, error, normal end).
pub fn restore() -> bool {
    let original = saved_termios().take();
    apply(original)
}

/// The panic hook's restore: `try_lock`, so a panic while the lock is held cannot deadlock.
fn restore_from_panic() {
    let original = match SAVED_TERMIOS.try_lock() {
        Ok(mut saved) => saved.take(),
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().take(),
        Err(TryLockError::WouldBlock) => None,
    };
    apply(original);
}

fn apply(original: Option<(RawFd, libc::termios)>) -> bool {
    match original {
        // SAFETY: a termios that tcgetattr returned for this fd.
        Some((fd, termios)) => unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) == 0 },
        None => false,
    }
}

/// Installs (once) a panic hook that restores the terminal, then runs the previous hook, so the
/// panic message is printed on a sane terminal.
pub fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_from_panic();
            previous(info);
        }));
    });
}

/// How long a resize burst is coalesced: at most one size per this period is sent.
pub const RESIZE_QUIET: Duration = Duration::from_millis(50);

/// Coalesces SIGWINCH bursts: the first signal is sent at once (leading edge), signals within
/// the quiet period after a send are merged into one send when it ends (trailing edge).
///
/// Sans-IO: the caller passes the time. Call order: [`handle_signal`](Self::handle_signal) for
/// each signal, wait until [`poll_timeout`](Self::poll_timeout), then
/// [`handle_timeout`](Self::handle_timeout); each returns whether to send the size now.
#[derive(Clone, Debug)]
pub struct ResizeDebouncer {
    quiet: Duration,
    quiet_until: Option<Instant>,
    pending: bool,
}

impl ResizeDebouncer {
    /// A debouncer with the given quiet period.
    pub fn new(quiet: Duration) -> Self {
        ResizeDebouncer {
            quiet,
            quiet_until: None,
            pending: false,
        }
    }

    /// A resize signal arrived at `now`; `true` means send the size now.
    pub fn handle_signal(&mut self, now: Instant) -> bool {
        match self.quiet_until {
            Some(until) if now < until => {
                self.pending = true;
                false
            }
            _ => {
                self.quiet_until = now.checked_add(self.quiet);
                self.pending = false;
                true
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due; `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending { self.quiet_until } else { None }
    }

    /// The timer fired at `now`; `true` means send the (merged) size now. Early or extra calls
    /// do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.quiet_until {
            Some(until) if self.pending && now >= until => {
                self.pending = false;
                self.quiet_until = now.checked_add(self.quiet);
                true
            }
            _ => false,
        }
    }
}

/// Window sizes to send to the remote terminal, one per SIGWINCH burst, never the same twice.
#[derive(Debug)]
pub struct ResizeEvents {
    signal: Signal,
    debouncer: ResizeDebouncer,
    last_sent: Option<WindowSize>,
}

impl ResizeEvents {
    /// Starts listening for SIGWINCH, then reads the size (in that order, so that no resize is
    /// missed between the two). Needs a tokio runtime.
    pub fn new() -> io::Result<ResizeEvents> {
        let signal = signal(SignalKind::window_change())?;
        Ok(ResizeEvents {
            signal,
            debouncer: ResizeDebouncer::new(RESIZE_QUIET),
            last_sent: window_size(),
        })
    }

    /// The size at start, to send before any input; `None` without a terminal.
    pub fn initial(&self) -> Option<WindowSize> {
        self.last_sent
    }

    /// Waits for the next size to send. Cancel-safe (use it in `select!`). `None` once the
    /// signal stream has ended.
    pub async fn next(&mut self) -> Option<WindowSize> {
        loop {
            let deadline = self.debouncer.poll_timeout();
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let sleep_until = deadline.map(tokio::time::Instant::from_std).unwrap_or(far);
            let send = tokio::select! {
                received = self.signal.recv() => {
                    received?;
                    self.debouncer.handle_signal(Instant::now())
                }
                () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                    self.debouncer.handle_timeout(Instant::now())
                }
            };
            if send
                && let Some(size) = window_size()
                && self.last_sent != Some(size)
            {
                self.last_sent = Some(size);
                return Some(size);
            }
        }
    }
}

/// A signal that asks `ecs-exec` to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// SIGTERM.
    Terminate,
    /// SIGHUP: the terminal went away.
    Hangup,
    /// SIGINT (only reaches us when the terminal is not in raw mode, or from `kill`).
    Interrupt,
}

impl Termination {
    /// The signal number.
    pub fn signal_number(self) -> i32 {
        match self {
            Termination::Terminate => libc::SIGTERM,
            Termination::Hangup => libc::SIGHUP,
            Termination::Interrupt => libc::SIGINT,
        }
    }

    /// The conventional exit status after this signal: 128 + its number.
    pub fn exit_status(self) -> i32 {
        128 + self.signal_number()
    }
}

/// SIGTERM, SIGHUP and SIGINT as a stream, so the run layer can restore the terminal and exit.
///
/// Once created these signals no longer end the process by themselves: the owner must act on
/// [`recv`](Self::recv) (typically: drop the [`RawModeGuard`], close the channel, exit with
/// [`Termination::exit_status`]).
#[derive(Debug)]
pub struct TerminationSignals {
    terminate: Signal,
    hangup: Signal,
    interrupt: Signal,
}

impl TerminationSignals {
    /// Registers the handlers. Needs a tokio runtime.
    pub fn new() -> io::Result<TerminationSignals> {
        Ok(TerminationSignals {
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next termination signal. Cancel-safe.
    pub async fn recv(&mut self) -> Termination {
        loop {
            let received = tokio::select! {
                r = self.terminate.recv() => r.map(|()| Termination::Terminate),
                r = self.hangup.recv() => r.map(|()| Termination::Hangup),
                r = self.interrupt.recv() => r.map(|()| Termination::Interrupt),
            };
            if let Some(termination) = received {
                return termination;
            }
            // A stream only ends when the runtime shuts down; wait for the others.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn first_signal_is_sent_at_once() {
        let start = Instant::now();
        let mut debouncer = ResizeDebouncer::new(Duration::from_millis(50));
        assert!(debouncer.handle_signal(start));
        assert_eq!(
            debouncer.poll_timeout(),
            None,
            "nothing pending after a lone signal"
        );
    }

    #[test]
    fn a_burst_becomes_one_leading_and_one_trailing_send() {
        let start = Instant::now();
        let mut debouncer = ResizeDebouncer::new(Duration::from_millis(50));
        assert!(debouncer.handle_signal(start));
        for ms in [5, 10, 20, 40] {
            assert!(!debouncer.handle_signal(at(start, ms)));
        }
        assert_eq!(debouncer.poll_timeout(), Some(at(start, 50)));
        assert!(
            !debouncer.handle_timeout(at(start, 49)),
            "early timeout does nothing"
        );
        assert!(debouncer.handle_timeout(at(start, 50)));
        assert!(
            !debouncer.handle_timeout(at(start, 51)),
            "extra timeout does nothing"
        );
        assert_eq!(debouncer.poll_timeout(), None);
    }

    #[test]
    fn a_long_drag_sends_once_per_quiet_period() {
        let start = Instant::now();
        let mut debouncer = ResizeDebouncer::new(Duration::from_millis(50));
        let mut sends = 0;
        let mut now = start;
        for step in 0..60u64 {
            now = at(start, step * 5);
            if let Some(due) = debouncer.poll_timeout()
                && due <= now
                && debouncer.handle_timeout(due)
            {
                sends += 1;
            }
            if debouncer.handle_signal(now) {
                sends += 1;
            }
        }
        if let Some(due) = debouncer.poll_timeout() {
            assert!(debouncer.handle_timeout(due.max(now)));
            sends += 1;
        }
        // 300 ms of signals every 5 ms: about one send per 50 ms, not 60.
        assert!((6..=8).contains(&sends), "sends = {sends}");
    }

    #[test]
    fn signal_after_quiet_period_is_sent_at_once_again() {
        let start = Instant::now();
        let mut debouncer = ResizeDebouncer::new(Duration::from_millis(50));
        assert!(debouncer.handle_signal(start));
        assert!(debouncer.handle_signal(at(start, 60)));
    }

    fn local_flags(fd: RawFd) -> libc::tcflag_t {
        // SAFETY: zeroed termios filled by tcgetattr on a valid pty fd.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut termios) }, 0);
        termios.c_lflag
    }

    /// One test covers the whole raw-mode lifecycle, because the saved state is process-global.
    #[test]
    fn raw_mode_on_a_pty_is_entered_once_and_restored_by_drop_and_restore() {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two fds; null name, termios and winsize are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        let cooked = local_flags(slave);
        assert_ne!(
            cooked & libc::ICANON,
            0,
            "a new pty starts in canonical mode"
        );

        let guard = RawModeGuard::enter_on(slave)
            .unwrap()
            .expect("raw mode on a pty");
        let raw = local_flags(slave);
        assert_eq!(
            raw & (libc::ICANON | libc::ECHO | libc::ISIG),
            0,
            "raw: no line editing, echo or signals"
        );
        assert!(
            RawModeGuard::enter_on(slave).unwrap().is_none(),
            "nested enter leaves it to the outer guard"
        );
        drop(guard);
        assert_eq!(local_flags(slave), cooked, "drop restores");
        assert!(!restore(), "nothing left to restore after drop");

        let _guard = RawModeGuard::enter_on(slave)
            .unwrap()
            .expect("raw mode again");
        assert!(restore(), "explicit restore (signal path)");
        assert_eq!(local_flags(slave), cooked);
        assert!(!restore(), "restore is idempotent");

        let guard = RawModeGuard::enter_on(slave)
            .unwrap()
            .expect("raw mode for the panic path");
        let panicked = std::panic::catch_unwind(|| {
            assert_eq!(local_flags(slave) & libc::ICANON, 0);
            panic!("deliberate panic to exercise the hook");
        });
        assert!(panicked.is_err());
        assert_eq!(
            local_flags(slave),
            cooked,
            "the panic hook restored the terminal"
        );
        assert!(!restore(), "nothing left for the guard");
        drop(guard);
        // SAFETY: closing the fds openpty gave us.
        unsafe {
            libc::close(slave);
            libc::close(master);
        }
    }

    #[test]
    fn raw_mode_is_refused_without_a_tty() {
        // Under `cargo test` stdin is not a terminal (or, if it is, the guard restores it).
        if !stdin_is_tty() {
            assert!(RawModeGuard::enter().unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn termination_signals_are_reported_instead_of_killing() {
        let mut signals = TerminationSignals::new().unwrap();
        // SAFETY: raising a signal whose handler tokio has just installed.
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        assert_eq!(signals.recv().await, Termination::Hangup);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert_eq!(signals.recv().await, Termination::Terminate);
    }

    #[test]
    fn termination_exit_status_is_128_plus_signal() {
        assert_eq!(Termination::Terminate.exit_status(), 143);
        assert_eq!(Termination::Hangup.exit_status(), 129);
        assert_eq!(Termination::Interrupt.exit_status(), 130);
    }
}
