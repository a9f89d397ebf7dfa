//! The built-in adapters' plans, executed for real the way the ECS agent executes them.
//!
//! Each test asks a built-in adapter (the real wasm guest, through the public API) for a plan,
//! splits the command with `shell-words` and executes it directly (no shell) under a fresh pseudo-
//! terminal in canonical mode with echo and ONLCR on, exactly as the agent does. It then reads the
//! output and feeds the input with the host's own transforms (`ecs_exec::plan_io`): the way the
//! command announces with its ready marker decides how the input is framed (raw bytes, chunks or
//! base64 lines), and the checks are that the program saw the input byte for byte, that its
//! output and stderr come back byte for byte before the exit trailer, and that the trailer
//! carries its exit status. Programs that this machine lacks (rails, clojure, bundle) are small
//! fake scripts in a temporary PATH.

use crate::adapter_common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use ecs_exec::adapter::{AdapterSet, Invocation, Plan, StdinMode, new_nonce};
use ecs_exec::plan_io::{InputFraming, OutputDecoder};

/// What came back from one executed plan.
#[derive(Debug)]
struct Outcome {
    /// Output before the exit trailer (after the ready marker).
    output: Vec<u8>,
    /// What the program wrote to its stderr, from the plan's stderr frames.
    stderr: Vec<u8>,
    /// The status the trailer reported.
    status: i32,
    /// The stdin mode of the way the command took.
    stdin: StdinMode,
}

/// Inputs that break naive quoting or terminals.
fn nasty_inputs() -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"plain line\n".to_vec(),
        b"no trailing newline".to_vec(),
        b"it's \"quoted\" $HOME `id` $(id) \\ \\n %s %d ; | & > < * ? ~ # !\n".to_vec(),
        b"-n leading dash".to_vec(),
        b"\r\ncr lf\r\rcr\n\n".to_vec(),
        b"nul\0in\0the\0middle\0".to_vec(),
        vec![0xff, 0xfe, 0xc3, 0x28, 0x80, b'\n', 0xf0, 0x9f, 0x98],
        b"\x03\x04\x1a\x1c\x11\x13\x7f\x15 control bytes\n".to_vec(),
    ];
    inputs.push((0..=255u8).cycle().take(1024).collect()); // largest inline input
    inputs.push((0..=255u8).cycle().take(1025).collect()); // smallest streamed one
    inputs.push(
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    inputs
}

/// A temporary directory of fake programs, put first on PATH for the executed plans.
struct FakeBin {
    dir: tempfile::TempDir,
}

impl FakeBin {
    fn new() -> Self {
        let fake = FakeBin {
            dir: tempfile::tempdir().unwrap(),
        };
        // Prints its argv (one `<word>` each) then copies stdin, then exits 3.
        let echo_args = "#!/bin/sh\nprintf '<%s>' \"$@\"; printf '\\n'; cat; exit 3\n";
        fake.add("rails", echo_args);
        fake.add(
            "bundle",
            "#!/bin/sh\n[ \"$1\" = exec ] || exit 99\nshift\nexec \"$@\"\n",
        );
        fake
    }

    fn add(&self, name: &str, script: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// Opens a pseudo-terminal with the kernel's default settings (canonical, echo, ONLCR).
///
/// Both descriptors are close-on-exec from the start: tests run in parallel threads, and a
/// descriptor without it leaks into whatever another test spawns at that moment (a tmux
/// server, an `ecs-exec`), which then holds this terminal open and its reader never sees the
/// end. The child gets the slave through `Stdio`, which clears the flag on fds 0-2.
fn open_pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(
            slave >= 0,
            "open slave: {}",
            std::io::Error::last_os_error()
        );
        (master, OwnedFd::from_raw_fd(slave))
    }
}

/// Splits the plan's command like the agent and starts it on a new pty; returns the master side.
fn spawn_on_pty(plan: &Plan, path_var: &str) -> (std::fs::File, std::process::Child) {
    let argv = shell_words::split(&plan.command).expect("the plan's command splits shell-style");
    let (program, args) = argv.split_first().expect("the command has a program");
    let (master, slave) = open_pty();
    let mut command = Command::new(program);
    command
        .args(args)
        .env("PATH", path_var)
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec: default dispositions, a new
    // session, then make the pty (already on fd 0) its controlling terminal, as the agent does.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            // As a container would: Ctrl-C must work even when the tests run with SIGINT
            // ignored (from the background of a script), since a shell cannot trap a signal it
            // was started ignoring.
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("the plan's program starts");
    drop(command); // closes our copies of the slave, so the master reads EIO once the child is done
    (std::fs::File::from(master), child)
}

/// Reads the master until the pty is closed, sending chunks as they come.
fn read_all_in_background(mut master: std::fs::File) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        // Linux reports EIO on the master once every slave descriptor is closed: that is EOF.
        while let Ok(count @ 1..) = master.read(&mut buffer) {
            if sender.send(buffer[..count].to_vec()).is_err() {
                break;
            }
        }
    });
    receiver
}

/// How long a program under test may stay silent before the test calls it a hang.
const OUTPUT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Receives until `needle` has appeared in `seen`; returns the index just past it.
fn receive_until(receiver: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>, needle: &[u8]) -> usize {
    loop {
        if let Some(at) = find(seen, needle) {
            return at + needle.len();
        }
        match receiver.recv_timeout(OUTPUT_LIMIT) {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(_) => panic!(
                "output ended or stalled before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

/// Receives until the program's terminal is closed (the reader thread then ends).
fn receive_to_end(receiver: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>) {
    loop {
        match receiver.recv_timeout(OUTPUT_LIMIT) {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "the terminal stayed open and silent; got {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Executes a one-off plan with `input` (of the length the plan was made for) and returns the
/// program's output, stderr and status.
fn execute(plan: &Plan, input: &[u8], path_var: &str) -> Outcome {
    let (master, mut child) = spawn_on_pty(plan, path_var);
    let mut writer = Some(master.try_clone().unwrap());
    let receiver = read_all_in_background(master);
    let mut decoder = OutputDecoder::for_plan(plan);
    let (mut output, mut stderr) = (Vec::new(), Vec::new());
    let mut way = None;
    loop {
        match receiver.recv_timeout(OUTPUT_LIMIT) {
            Ok(chunk) => decoder.push(&chunk, &mut output, &mut stderr),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "the terminal stayed open and silent; output so far {:?}",
                String::from_utf8_lossy(&output)
            ),
        }
        if let (None, Some(index)) = (&way, decoder.way()) {
            let taken = match index {
                0 => plan.own_way(),
                k => plan
                    .alternative_way(k - 1)
                    .expect("an announced alternative"),
            };
            if let Some(mut framing) = InputFraming::new(taken.stdin, Some(input.len() as u64)) {
                let mut wire = Vec::new();
                framing.push(input, &mut wire).unwrap();
                framing.finish(&mut wire).unwrap();
                let mut writer = writer.take().expect("the input is sent once");
                // From another thread: the pty may push back while we are not reading.
                std::thread::spawn(move || writer.write_all(&wire));
            }
            way = Some(taken);
        }
    }
    decoder.finish(&mut output);
    child.wait().unwrap();
    let status = decoder.exit_status().unwrap_or_else(|| {
        panic!(
            "no exit status in the output; got {:?}",
            String::from_utf8_lossy(&output)
        )
    });
    Outcome {
        output,
        stderr,
        status,
        stdin: way.expect("every one-off plan announces its way").stdin,
    }
}

/// What the host tells the adapter about the input, as `ecs-exec` does with and without
/// `--inline-input`, and for a pipe.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Offer {
    /// The bytes themselves when small (`--inline-input`).
    Inline,
    /// Only the length (the default for input that ended, or a file).
    Length,
    /// Nothing: a pipe still being written.
    Unknown,
}

fn plan_for(adapters: &mut AdapterSet, pipe: Option<&str>, args: &[&str], input: &[u8]) -> Plan {
    plan_offered(adapters, pipe, args, input, Offer::Inline)
}

fn plan_offered(
    adapters: &mut AdapterSet,
    pipe: Option<&str>,
    args: &[&str],
    input: &[u8],
    offer: Offer,
) -> Plan {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let adapter = adapters.select(pipe, None).unwrap();
    let pipe = pipe.map(str::to_owned);
    let invocation = match offer {
        Offer::Inline => Invocation::one_off_with_input(pipe, args, input),
        Offer::Length => Invocation::one_off_streamed(pipe, args, Some(input.len() as u64)),
        Offer::Unknown => Invocation::one_off_streamed(pipe, args, None),
    };
    adapter.plan(&invocation, &new_nonce()).unwrap()
}

#[test]
fn shell_pipes_carry_every_input_byte_exact_and_report_the_status() {
    let mut adapters = adapter_common::builtin();
    let fake = FakeBin::new();
    let pipe = Some("sh -c 'cat; printf \"e\\0r\\377\" >&2; exit 7'");
    for offer in [Offer::Inline, Offer::Length, Offer::Unknown] {
        for input in nasty_inputs() {
            let plan = plan_offered(&mut adapters, pipe, &[], &input, offer);
            let expected_mode = match (offer, input.len()) {
                (Offer::Unknown, _) => StdinMode::StreamChunks,
                (_, 0) => StdinMode::None,
                (Offer::Inline, 1..=1024) => StdinMode::Inline,
                _ => StdinMode::StreamBytes,
            };
            let case = format!("{offer:?}, input of {} bytes", input.len());
            assert_eq!(plan.stdin, expected_mode, "{case}");
            let outcome = execute(&plan, &input, &fake.path_var());
            assert_eq!(outcome.stdin, expected_mode, "{case}: the plan's own way");
            assert_eq!(outcome.status, 7, "{case}");
            assert!(
                outcome.output == input,
                "{case}: came back as {:?}",
                String::from_utf8_lossy(&outcome.output)
            );
            assert_eq!(outcome.stderr, b"e\0r\xff", "{case}: stderr apart");
        }
    }
}

#[test]
fn no_pipe_runs_the_input_as_a_bash_script_with_args() {
    let mut adapters = adapter_common::builtin();
    let fake = FakeBin::new();
    let script = b"printf '<%s>' \"$@\"\necho \"it's\" `echo back`ticks\nexit 42\n";
    let args = ["it's", "$HOME", "a b", "-n", "#x", ""];
    let plan = plan_for(&mut adapters, None, &args, script);
    let outcome = execute(&plan, script, &fake.path_var());
    assert_eq!(
        String::from_utf8_lossy(&outcome.output),
        "<it's><$HOME><a b><-n><#x><>it's backticks\n"
    );
    assert_eq!(outcome.status, 42);
    // A large script (streamed) behaves the same.
    let mut big = b"x=0\n".to_vec();
    for _ in 0..2000 {
        big.extend_from_slice(b"x=$((x+1))\n");
    }
    big.extend_from_slice(b"echo $x\nexit 5\n");
    let plan = plan_for(&mut adapters, None, &[], &big);
    assert_eq!(plan.stdin, StdinMode::StreamBytes);
    let outcome = execute(&plan, &big, &fake.path_var());
    assert_eq!(
        (outcome.output.as_slice(), outcome.status),
        (&b"2000\n"[..], 5)
    );
}

#[test]
fn rails_runs_runner_dash_also_behind_bundle_exec() {
    let mut adapters = adapter_common::builtin();
    let fake = FakeBin::new();
    let cases = [
        ("rails runner -", "<runner><-><extra arg>\n"),
        ("bundle exec rails runner", "<runner><-><extra arg>\n"),
        ("bundle exec rails", "<runner><-><extra arg>\n"),
        (
            "rails runner script/x.rb",
            "<runner><script/x.rb><extra arg>\n",
        ),
    ];
    for (pipe, expected_args) in cases {
        for input in [b"puts 'hi' # it's\n".to_vec(), vec![b'p'; 5000]] {
            let plan = plan_for(&mut adapters, Some(pipe), &["extra arg"], &input);
            let outcome = execute(&plan, &input, &fake.path_var());
            let mut expected = expected_args.as_bytes().to_vec();
            expected.extend_from_slice(&input);
            assert_eq!(outcome.output, expected, "pipe {pipe}");
            assert_eq!(outcome.status, 3, "pipe {pipe}");
        }
    }
}

#[test]
fn python_reads_the_program_from_stdin_unbuffered() {
    let mut adapters = adapter_common::builtin();
    let fake = FakeBin::new();
    let program = b"import sys\nsys.stdout.write('out \\'q\\' $x\\n')\nsys.stdout.buffer.write(bytes([0, 255, 13, 10]))\nprint(sys.argv[1:])\nsys.exit(4)\n";
    for pipe in ["python3", "python3 -", "/usr/bin/env python3"] {
        let plan = plan_for(&mut adapters, Some(pipe), &["-a", "b c"], program);
        assert!(
            plan.command.contains(" -u "),
            "unbuffered: {}",
            plan.command
        );
        let outcome = execute(&plan, program, &fake.path_var());
        let mut expected = b"out 'q' $x\n\0\xff\r\n".to_vec();
        expected.extend_from_slice(b"['-a', 'b c']\n");
        assert_eq!(
            outcome.output,
            expected,
            "pipe {pipe}: {:?}",
            String::from_utf8_lossy(&outcome.output)
        );
        assert_eq!(outcome.status, 4);
    }
}

#[test]
fn clojure_detects_cli_tools_or_debian_launcher_at_run_time() {
    let mut adapters = adapter_common::builtin();
    for (launcher, expected_args) in [
        // The Clojure CLI tools' script mentions -Sdeps: it must get `-M -`.
        (
            "#!/bin/sh\n# usage: clojure [-Sdeps EDN] ...\nprintf '<%s>' \"$@\"; printf '\\n'; cat; exit 6\n",
            "<-M><->\n",
        ),
        // Debian's plain launcher runs clojure.main directly: it must get `-`.
        (
            "#!/bin/sh\n# exec java -cp clojure.jar clojure.main \"$@\"\nprintf '<%s>' \"$@\"; printf '\\n'; cat; exit 6\n",
            "<->\n",
        ),
    ] {
        let fake = FakeBin::new();
        fake.add("clojure", launcher);
        for input in [b"(println \"hi\")\n".to_vec(), vec![b';'; 3000]] {
            let plan = plan_for(&mut adapters, Some("clojure"), &[], &input);
            let outcome = execute(&plan, &input, &fake.path_var());
            let mut expected = expected_args.as_bytes().to_vec();
            expected.extend_from_slice(&input);
            assert_eq!(
                outcome.output,
                expected,
                "{:?}",
                String::from_utf8_lossy(&outcome.output)
            );
            assert_eq!(outcome.status, 6);
        }
    }
}

#[test]
fn interactive_plans_survive_ctrl_c_and_report_the_status() {
    let mut adapters = adapter_common::builtin();
    let fake = FakeBin::new();
    // A REPL-like program without job control: Ctrl-C reaches the wrapper shell too.
    // (A read cut short by the signal is retried, a few times at most.)
    fake.add(
        "repl",
        "#!/bin/sh\ntrap 'echo interrupted' INT\nprintf 'ready> '\nn=0\nwhile [ $n -lt 5 ]; do\n  if read -r line; then [ \"$line\" = quit ] && exit 9; printf 'ready> '; else n=$((n+1)); fi\ndone\nexit 1\n",
    );
    let adapter = adapters.select(Some("repl"), None).unwrap();
    let plan = adapter
        .plan(
            &Invocation::interactive(Some("repl".to_owned()), vec![]),
            &new_nonce(),
        )
        .unwrap();
    assert_eq!(plan.stdin, StdinMode::Raw);
    let (master, mut child) = spawn_on_pty(&plan, &fake.path_var());
    let mut writer = master.try_clone().unwrap();
    let receiver = read_all_in_background(master);
    let mut seen = Vec::new();
    receive_until(&receiver, &mut seen, b"ready> ");
    writer.write_all(&[0x03]).unwrap(); // Ctrl-C: SIGINT to the whole foreground group
    receive_until(&receiver, &mut seen, b"interrupted");
    writer.write_all(b"quit\n").unwrap();
    receive_to_end(&receiver, &mut seen);
    child.wait().unwrap();
    let trailer = plan.exit_trailer.unwrap();
    let expected_end = format!("{trailer}9\r\n");
    assert!(
        seen.ends_with(expected_end.as_bytes()),
        "output {:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn plans_are_accepted_by_the_shell_words_splitter_for_every_builtin_adapter() {
    let mut adapters = adapter_common::builtin();
    let pipes = [
        None,
        Some("bash -x"),
        Some("rails c"),
        Some("python3 -c 'print(1)'"),
        Some("clj -M -"),
    ];
    for pipe in pipes {
        for interactive in [false, true] {
            let adapter = adapters.select(pipe, None).unwrap();
            let invocation = if interactive {
                Invocation::interactive(pipe.map(str::to_owned), vec!["a'b".to_owned()])
            } else {
                Invocation::one_off_streamed(pipe.map(str::to_owned), vec!["a'b".to_owned()], None)
            };
            let plan = adapter.plan(&invocation, &new_nonce()).unwrap();
            let words = shell_words::split(&plan.command).unwrap();
            assert_eq!(words.first().map(String::as_str), Some("sh"), "{pipe:?}");
            assert_eq!(
                words.last().map(String::as_str),
                Some("a'b"),
                "{pipe:?}: {words:?}"
            );
        }
    }
}

#[test]
fn the_template_adapter_works_as_written() {
    let mut adapters = adapter_common::builtin();
    let template = adapter_common::test_guest("ecs_exec_adapter_template");
    let adapter = adapters
        .select(Some("cat"), Some(template.to_str().unwrap()))
        .unwrap();
    assert_eq!(adapter.info().name, "template");
    let fake = FakeBin::new();
    for input in nasty_inputs() {
        let invocation = Invocation::one_off_with_input(Some("cat".to_owned()), vec![], &input);
        let plan = adapter.plan(&invocation, &new_nonce()).unwrap();
        assert_eq!(plan.stdin, StdinMode::StreamBase64);
        let outcome = execute(&plan, &input, &fake.path_var());
        assert_eq!((outcome.output, outcome.status), (input, 0));
    }
}
