//! A person at a terminal, played by tmux: the binary runs in a detached tmux pane on a private
//! server socket; tests type with `send-keys`, read the screen with `capture-pane` and resize the
//! window. Waits poll the screen until a condition holds or a deadline passes, so they are
//! bounded without depending on how fast anything is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long any one expectation about the screen may take. Generous: a JVM (clojure) starting on
/// a loaded 2-core CI machine is the slowest thing waited for; only a hang reaches it.
pub const SCREEN_DEADLINE: Duration = Duration::from_secs(180);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const SESSION: &str = "e2e";

/// One tmux server with one session running one command.
pub struct Terminal {
    dir: tempfile::TempDir,
}

impl Terminal {
    /// Runs `command` (program, arguments and environment are taken from it; nothing else of
    /// the test's environment leaks in) in a new `cols`×`rows` window. When it exits, its exit
    /// status is written where [`Terminal::wait_for_exit`] finds it.
    pub fn start(command: &Command, cols: u16, rows: u16) -> Terminal {
        let dir = tempfile::tempdir().expect("tmux temp dir");
        let script = dir.path().join("run.sh");
        std::fs::write(&script, launcher_script(command, dir.path())).expect("write run.sh");
        let terminal = Terminal { dir };
        terminal.tmux(&[
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "sh",
            script.to_str().expect("utf-8 temp path"),
        ]);
        terminal
    }

    /// Types `text` literally (no key names), without Enter.
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", SESSION, "-l", text]);
    }

    /// Types `line` and presses Enter.
    pub fn type_line(&self, line: &str) {
        self.type_text(line);
        self.press("Enter");
    }

    /// Presses one key by tmux name: `Enter`, `C-c`, `C-d`.
    pub fn press(&self, key: &str) {
        self.tmux(&["send-keys", "-t", SESSION, key]);
    }

    /// Resizes the window, as a person dragging the terminal's corner.
    pub fn resize(&self, cols: u16, rows: u16) {
        self.tmux(&[
            "resize-window",
            "-t",
            SESSION,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// The visible screen and its scrollback, one string per line, trailing blanks trimmed.
    pub fn screen(&self) -> Vec<String> {
        let output = self.try_tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", SESSION]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect()
    }

    /// Waits until some screen line, trimmed, equals `line`; panics with the screen if it never
    /// does.
    pub fn wait_for_line(&self, line: &str) {
        self.wait_for(&format!("a line {line:?}"), |screen| {
            screen.iter().any(|candidate| candidate.trim() == line)
        });
    }

    /// Waits until the screen contains `text` anywhere.
    pub fn wait_for_text(&self, text: &str) {
        self.wait_for(&format!("the text {text:?}"), |screen| {
            screen.iter().any(|line| line.contains(text))
        });
    }

    /// Waits until `condition` holds for the screen.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return;
            }
            if self.exit_status().is_some() || Instant::now() > deadline {
                panic!(
                    "the screen never showed {what}; ecs-exec exit status: {:?}; screen:\n{}",
                    self.exit_status(),
                    screen.join("\n")
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits for the command to end and returns its exit status.
    pub fn wait_for_exit(&self) -> i32 {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "ecs-exec did not exit; screen:\n{}",
                    self.screen().join("\n")
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn exit_status(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.status_path()).ok()?;
        text.trim().parse().ok()
    }

    fn status_path(&self) -> PathBuf {
        self.dir.path().join("status")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn tmux(&self, args: &[&str]) {
        let output = self.try_tmux(args);
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    fn try_tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|error| {
                panic!("running tmux failed ({error}); install it: apt-get install tmux")
            })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.try_tmux(&["kill-server"]);
    }
}

/// A POSIX shell script that runs `command` with exactly its environment, then records the exit
/// status atomically (written, then renamed) for [`Terminal::wait_for_exit`]. The command runs
/// as a child, not by `exec`, so that the shell outlives it to record the status.
fn launcher_script(command: &Command, dir: &Path) -> String {
    // Inside tmux the terminal type is tmux's; keep it so the program sees a real terminal.
    let mut line = String::from("env -i \"TERM=$TERM\"");
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            line.push(' ');
            line.push_str(&shell_words::quote(&format!(
                "{}={}",
                name.to_string_lossy(),
                value.to_string_lossy()
            )));
        }
    }
    line.push(' ');
    line.push_str(&shell_words::quote(
        &command.get_program().to_string_lossy(),
    ));
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&shell_words::quote(&arg.to_string_lossy()));
    }
    let status = dir.join("status");
    let pending = dir.join("status.pending");
    format!(
        "{line}\necho $? > {pending}\nmv {pending} {status}\n",
        pending = shell_words::quote(&pending.to_string_lossy()),
        status = shell_words::quote(&status.to_string_lossy()),
    )
}
