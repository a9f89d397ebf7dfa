//! The run path end to end: the adapter plans before AWS is called, and a stdin that fails in
//! the middle of a stream ends the run with one line instead of leaving the remote program
//! waiting for the rest of its input.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::time::Duration;

use crate::e2e_support::{World, run_with_stdin_file};

/// Longer than any healthy run here, even on a loaded CI machine; only a hang reaches it.
const HANG_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_bad_adapter_is_refused_before_any_aws_call() {
    let world = World::start();
    let mut command = world.ecs_exec();
    command.args(["--adapter", "no-such-adapter"]);
    let outcome = world.run_within(command, b"echo hi\n", HANG_LIMIT);
    assert_eq!(outcome.code(), 78, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("no-such-adapter"),
        "{}",
        outcome.stderr
    );
    assert_eq!(
        world.emulator.counters().api_requests,
        0,
        "the plan is local and comes first: nothing may reach the ECS API"
    );
}

#[test]
fn a_stdin_that_fails_mid_stream_ends_the_run_with_one_line() {
    let world = World::start();
    // 8 KiB read back, then an I/O error: more than the inline limit, so the input streams.
    let failing = FailingInput::new(8192);
    let mut command = world.ecs_exec();
    command.args(["--pipe", "cat"]);
    let outcome = run_with_stdin_file(command, failing.reader(), HANG_LIMIT);

    assert_eq!(outcome.code(), 74, "{}", outcome.stderr);
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", outcome.stderr);
    assert!(
        lines[0].starts_with("ecs-exec: error: reading standard input failed"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("interrupted"), "{}", lines[0]);
    assert!(
        failing.data().starts_with(&outcome.stdout),
        "stdout holds only what cat echoed of the input"
    );
}

/// A stdin that reads `len` bytes and then fails with EIO: a window of this process's memory
/// read through `/proc/self/mem`, where the bytes after `len` are a mapping past the end of
/// its file, which the kernel cannot read.
struct FailingInput {
    map: *mut libc::c_void,
    map_len: usize,
    len: usize,
}

impl FailingInput {
    fn new(len: usize) -> FailingInput {
        let page = 4096;
        assert_eq!(len % page, 0);
        // SAFETY: plain libc calls on a fresh memfd; every return value is checked, and the
        // mapping is only touched within the file's length.
        unsafe {
            let fd = libc::memfd_create(c"failing-stdin".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0, "memfd_create");
            assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0, "ftruncate");
            let map_len = len + page;
            let map = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(map, libc::MAP_FAILED, "mmap");
            libc::close(fd);
            let bytes = std::slice::from_raw_parts_mut(map.cast::<u8>(), len);
            for (index, byte) in bytes.iter_mut().enumerate() {
                *byte = b'a' + (index % 26) as u8;
            }
            FailingInput { map, map_len, len }
        }
    }

    fn data(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are backed by the file and were written in `new`.
        unsafe { std::slice::from_raw_parts(self.map.cast::<u8>(), self.len) }
    }

    /// A file positioned at the window; the child inherits it as stdin.
    fn reader(&self) -> File {
        let mut mem = File::open("/proc/self/mem").expect("open /proc/self/mem");
        mem.seek(SeekFrom::Start(self.map as u64))
            .expect("seek to the window");
        mem
    }
}

impl Drop for FailingInput {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

#[test]
fn the_failing_input_fails_where_it_says() {
    // The seam itself: without it the test above could pass for the wrong reason.
    let failing = FailingInput::new(4096);
    let mut mem = File::open("/proc/self/mem").expect("open");
    mem.seek(SeekFrom::Start(failing.map as u64)).expect("seek");
    let mut buffer = vec![0; 4096 * 2];
    let first = mem.read(&mut buffer).expect("the file's bytes read");
    assert_eq!(&buffer[..first], &failing.data()[..first]);
    let mut rest = first;
    let error = loop {
        match mem.read(&mut buffer[rest..]) {
            Ok(0) => panic!("end of file instead of an error"),
            Ok(read) => rest += read,
            Err(error) => break error,
        }
    };
    assert_eq!(rest, 4096);
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
}
