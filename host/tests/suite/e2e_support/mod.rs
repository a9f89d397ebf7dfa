//! End-to-end harness: an in-process emulator and the real `ecs-exec` binary run against it.
//!
//! [`World::start`] starts the emulator on loopback with a container whose PATH holds the test
//! shims (`fixtures/container-bin`: a small `rails`) and whose environment has `CLUSTER_NAME`,
//! as a Hoop ECS connection's container would. [`World::ecs_exec`] builds a `Command` for the
//! binary with the emulator's credentials and endpoint, isolated from the user's AWS files.
#![allow(dead_code)]

pub mod tmux;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use ecs_exec_emulator::testing::{self, PROCESS_DEADLINE};
use ecs_exec_emulator::{Config, ContainerConfig, EmulatorHandle, Spawned};

pub const CLUSTER: &str = "demo";
pub const SERVICE: &str = "web";

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// stderr as text (lossy), for messages.
    pub stderr: String,
    /// stderr byte for byte, for what the remote program wrote to its fd 2.
    pub stderr_bytes: Vec<u8>,
}

impl Outcome {
    /// From what a run printed on stderr as text (a run whose stderr is known to be text).
    pub fn from_text(status: ExitStatus, stdout: Vec<u8>, stderr: String) -> Outcome {
        Outcome {
            status,
            stdout,
            stderr_bytes: stderr.clone().into_bytes(),
            stderr,
        }
    }

    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A running emulator plus the directories its container uses.
pub struct World {
    pub emulator: EmulatorHandle,
    pub workdir: tempfile::TempDir,
}

/// Compiled adapters are cached across every test process of the run, as on a user's machine.
pub fn shared_cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache");
        std::fs::create_dir_all(&dir).expect("create the adapter cache dir");
        dir
    })
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

impl World {
    pub fn start() -> World {
        World::start_with(|_| {})
    }

    /// Starts an emulator whose `web` containers run on this machine with the test shims on
    /// PATH; `tweak` may change the config further (faults, other services).
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> World {
        let workdir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        for cluster in &mut config.clusters {
            for service in &mut cluster.services {
                for container in &mut service.containers {
                    prepare_container(container, workdir.path());
                }
            }
        }
        tweak(&mut config);
        let emulator = EmulatorHandle::spawn_in_thread(config).expect("start the emulator");
        World { emulator, workdir }
    }

    /// `ecs-exec --cluster demo --service-name web`, pointed at the emulator.
    pub fn ecs_exec(&self) -> Command {
        let mut command = self.bare_command();
        command.args(["--cluster", CLUSTER, "--service-name", SERVICE]);
        command
    }

    /// Hoop's interactive connection command
    /// (`ecs-exec --interactive --cluster=$CLUSTER_NAME --service-name=$SERVICE_NAME`) with the
    /// user's words after it, as `hoop connect my-ecs -- WORDS` runs it.
    pub fn hoop_connect(&self, user_words: &[&str]) -> Command {
        let mut command = self.bare_command();
        command.args([
            "--interactive",
            &format!("--cluster={CLUSTER}"),
            &format!("--service-name={SERVICE}"),
        ]);
        command.args(user_words);
        command
    }

    /// The binary with the emulator's environment and no arguments.
    pub fn bare_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-exec"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.workdir.path())
            .env("XDG_CACHE_HOME", shared_cache_dir())
            .env("AWS_CONFIG_FILE", self.workdir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.workdir.path().join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (name, value) in self.emulator.aws_env() {
            command.env(name, value);
        }
        command
    }

    /// Runs `command` with `stdin` as its input and collects everything it printed. A run still
    /// going after [`PROCESS_DEADLINE`] is killed and fails the test.
    pub fn run(&self, mut command: Command, stdin: &[u8]) -> Outcome {
        run_with_input(&mut command, stdin)
    }

    /// As [`World::run`], but a run still going after `limit` is killed and fails the test:
    /// a hang must not stall the suite.
    pub fn run_within(&self, mut command: Command, stdin: &[u8], limit: Duration) -> Outcome {
        run_with_input_within(&mut command, stdin, limit)
    }

    /// As [`World::run`], with stdin read from a regular file holding `stdin`: the binary
    /// knows the input's length before it reads it.
    pub fn run_from_file(&self, command: Command, stdin: &[u8]) -> Outcome {
        let mut file = tempfile::tempfile().expect("a temporary file");
        std::io::Write::write_all(&mut file, stdin).expect("write the input");
        std::io::Seek::rewind(&mut file).expect("rewind the input");
        run_with_stdin_file(command, file, PROCESS_DEADLINE)
    }

    /// The ids of the RUNNING tasks of `web`.
    pub fn running_web_tasks(&self) -> Vec<String> {
        let world = self.emulator.world();
        let Some(cluster) = world.cluster(Some(CLUSTER)) else {
            return Vec::new();
        };
        cluster
            .tasks
            .iter()
            .filter(|task| task.service == SERVICE && task.status.as_str() == "RUNNING")
            .map(|task| task.id.clone())
            .collect()
    }
}

fn prepare_container(container: &mut ContainerConfig, workdir: &Path) {
    container.working_directory = Some(workdir.to_path_buf());
    container
        .path_prepend
        .push(fixtures_dir().join("container-bin"));
    container
        .environment
        .insert("CLUSTER_NAME".into(), CLUSTER.into());
    container
        .environment
        .insert("RAILS_ENV".into(), "production".into());
}

/// Deterministic bytes covering every value, without a random number generator.
pub fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Feeds `stdin` from a thread (so a large input cannot deadlock against a full stdout pipe)
/// and waits for the process; a run still going after [`PROCESS_DEADLINE`] is killed and fails
/// the test with what it printed.
pub fn run_with_input(command: &mut Command, stdin: &[u8]) -> Outcome {
    run_with_input_within(command, stdin, PROCESS_DEADLINE)
}

fn run_with_input_within(command: &mut Command, stdin: &[u8], limit: Duration) -> Outcome {
    outcome(testing::output_within(command, stdin, limit))
}

/// Runs `command` with `stdin` as its standard input and collects what it printed; a run still
/// going after `limit` is killed and fails the test.
pub fn run_with_stdin_file(mut command: Command, stdin: std::fs::File, limit: Duration) -> Outcome {
    outcome(testing::output_from_file_within(&mut command, stdin, limit))
}

fn outcome(output: std::process::Output) -> Outcome {
    Outcome {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        stderr_bytes: output.stderr,
    }
}

/// A world whose container PATH holds only busybox applets (`without` left out), as in an
/// Alpine or distroless-with-busybox image; the directory of applet links lives as long as the
/// returned guard.
pub fn busybox_world(without: &[&str]) -> (World, tempfile::TempDir) {
    let bin = tempfile::tempdir().unwrap();
    let busybox = PathBuf::from("/usr/bin/busybox");
    let listed = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("busybox runs");
    for applet in String::from_utf8_lossy(&listed.stdout).lines() {
        if !applet.is_empty() && !without.contains(&applet) {
            std::os::unix::fs::symlink(&busybox, bin.path().join(applet)).unwrap();
        }
    }
    let path = bin.path().display().to_string();
    let world = World::start_with(|config| {
        for cluster in &mut config.clusters {
            for service in &mut cluster.services {
                for container in &mut service.containers {
                    container.environment.insert("PATH".into(), path.clone());
                }
            }
        }
    });
    (world, bin)
}

/// A busybox userland whose `dd` is older than `iflag=count_bytes`: it refuses that flag, as a
/// `dd` without it does, and is busybox's `dd` otherwise.
pub fn busybox_world_with_a_dd_that_cannot_count_bytes() -> (World, tempfile::TempDir) {
    let (world, bin) = busybox_world(&["dd"]);
    let dd = bin.path().join("dd");
    std::fs::write(
        &dd,
        "#!/bin/sh\ncase \"$*\" in *count_bytes*) echo \"dd: invalid input flag\" >&2; exit 1;; esac\n\
         exec /usr/bin/busybox dd \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&dd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (world, bin)
}

/// Runs `command` with `input` on stdin and reads its peak RSS (VmHWM) while it runs: the
/// figure read last before it exits is a lower bound of the true peak, so a check on it can miss
/// a late spike but never fails without one.
pub fn run_measuring_peak_rss(
    mut command: Command,
    input: &[u8],
    limit: Duration,
) -> (Outcome, u64) {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut spawned = Spawned::spawn_within(&mut command, limit);
    let mut stdin = spawned.child().stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = spawned.child().id();
    let peak = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running) = (peak.clone(), running.clone());
        thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                if let Some(kib) = vm_hwm_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut stdout = Vec::new();
    let _ = spawned
        .child()
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout);
    let (status, stderr) = spawned.wait("ecs-exec, its peak RSS measured");
    running.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    writer.join().expect("stdin writer");
    let outcome = Outcome::from_text(status, stdout, stderr);
    (outcome, peak.load(Ordering::Relaxed))
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
