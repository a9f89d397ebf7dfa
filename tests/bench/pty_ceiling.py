#!/usr/bin/env python3
"""The ceilings of the terminal path, without ecs-exec, the network or the protocol.

`--raw`: input the way contract 0.2's raw modes carry it. This runs `head -c N | sha256sum` under a
local pty put in raw mode (`stty raw -echo`, as the adapters' bootstrap does), writes N MiB of
random bytes into the master side as they are, and prints the rate and whether the digest matches.
Compare it with `tests/bench/stdio.sh`'s stdin -> remote figures. Usage: pty_ceiling.py --raw [MiB]

`--output`: the other direction. A one-off's output leaves the remote program through the same
pseudo-terminal, which the agent reads; this runs `head -c N MiB /dev/zero` under a local pty
(`stty -echo -opost`, as the adapters' bootstrap sets it), reads the master side to the end and
prints the rate and the average read size. Compare it with `tests/bench/oneoff.sh`'s remote ->
stdout figure. Usage: tests/bench/pty_ceiling.py --output [MiB]

Input (the default):

A one-off's stdin reaches the remote program the way the SSM agent delivers it: written into a
pseudo-terminal as base64 lines of 4092 characters, read by `base64 -d`. This script does only
that, locally: it writes N MiB of random bytes, base64-encoded in such lines, into a pty whose
program is `base64 -d | sha256sum`, and prints the payload rate. Compare it with
`tests/bench/oneoff.sh`'s stdin -> remote figure. Usage: tests/bench/pty_ceiling.py [MiB]
"""
import base64
import hashlib
import os
import pty
import sys
import tempfile
import time


def output_ceiling(size):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("sh", ["sh", "-c", f"stty -echo -opost; head -c {size}M /dev/zero"])
    start = time.monotonic()
    total = reads = 0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        total += len(chunk)
        reads += 1
    os.waitpid(pid, 0)
    elapsed = time.monotonic() - start
    print(f"{size} MiB of head -c /dev/zero read from a pty: {elapsed:.2f} s, "
          f"{total / 1048576 / elapsed:.1f} MiB/s, {reads} reads of {total / max(reads, 1):.0f} "
          f"bytes on average, {'all' if total == size * 1048576 else 'NOT all'} bytes")


def machine_cpu_ms():
    """CPU time of the whole machine so far, from /proc/stat: (busy, stolen by the hypervisor)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    ms = 1000 // os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) * ms, steal * ms


def through_pty(setup, reader, data, pieces):
    """Runs `setup; reader | sha256sum` under a pty, waits until `setup` has run (as the adapter's
    ready marker makes ecs-exec wait), writes `pieces` into the master side, and returns the
    seconds that took, whether the digest is that of `data`, and the machine's CPU time (busy,
    stolen) in milliseconds meanwhile."""
    with tempfile.TemporaryDirectory() as work:
        result = os.path.join(work, "sum")
        ready = os.path.join(work, "ready")
        pid, fd = pty.fork()
        if pid == 0:
            os.execvp("sh", ["sh", "-c", f"{setup}; : > {ready}; {reader} | sha256sum > {result}"])
        while not os.path.exists(ready):
            time.sleep(0.01)
        busy0, steal0 = machine_cpu_ms()
        start = time.monotonic()
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view[:65536]):]
        os.waitpid(pid, 0)
        elapsed = time.monotonic() - start
        busy1, steal1 = machine_cpu_ms()
        with open(result) as f:
            ok = f.read().split()[0] == hashlib.sha256(data).hexdigest()
        return elapsed, ok, (busy1 - busy0, steal1 - steal0)


def raw_ceiling(size):
    data = os.urandom(size * 1024 * 1024)
    elapsed, ok, (busy, steal) = through_pty("stty raw -echo", f"head -c {len(data)}", data, [data])
    print(f"{size} MiB through a raw pty into head -c | sha256sum: {elapsed:.2f} s, "
          f"{size / elapsed:.1f} MiB/s, digest {'matches' if ok else 'DIFFERS'}; the machine's "
          f"CPU meanwhile: busy {busy} ms, stolen by the hypervisor {steal} ms")


if len(sys.argv) > 1 and sys.argv[1] == "--raw":
    raw_ceiling(int(sys.argv[2]) if len(sys.argv) > 2 else 256)
    sys.exit(0)
if len(sys.argv) > 1 and sys.argv[1] == "--output":
    output_ceiling(int(sys.argv[2]) if len(sys.argv) > 2 else 256)
    sys.exit(0)
size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
data = os.urandom(size * 1024 * 1024)
encoded = base64.b64encode(data)
lines = [encoded[i:i + 4092] + b"\n" for i in range(0, len(encoded), 4092)]
elapsed, ok, _ = through_pty("stty -echo -opost", "base64 -d", data, lines + [b"\x04"])
print(f"{size} MiB through a pty into base64 -d | sha256sum: {elapsed:.2f} s, "
      f"{size / elapsed:.1f} MiB/s, digest {'matches' if ok else 'DIFFERS'}")
