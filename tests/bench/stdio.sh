#!/usr/bin/env bash
# The one-off data path of adapter contract 0.2, against one emulator on loopback, each figure
# beside the bare terminal's own rate measured in the same run (tests/bench/pty_ceiling.py):
#   - stdin -> remote (`--pipe sha256sum`), SIZE_MIB (default 256) of random bytes, from a file
#     (length known: stream-bytes, `head -c N`) and from a pipe (stream-chunks, `dd`), against a
#     local pty in raw mode carrying the same bytes into `head -c N | sha256sum`;
#   - where the CPU of one stdin run goes: ecs-exec, the emulator, and the rest of the machine
#     (the remote terminal and the programs reading it), against the cores' capacity, and what
#     the hypervisor took meanwhile (steal: on a shared virtual machine the figures swing with it);
#   - remote -> stdout (`head -c N /dev/zero`), against a local pty read to the end;
#   - stderr apart: SIZE_MIB / 16 written to the remote fd 2, which comes back framed (`od | sed`);
#   - peak RSS of ecs-exec moving 1 GiB (BIG_MIB) each way (memory must not grow with the size).
# Usage: tests/bench/stdio.sh [target/release]
# Needs hyperfine (apt-get install hyperfine), GNU time as /usr/bin/time (apt-get install time)
# and python3.
set -euo pipefail
bin_dir=${1:-target/release}
ecs_exec="$bin_dir/ecs-exec"
emulator="$bin_dir/ecs-exec-emulator"
here=$(dirname "$0")
for tool in hyperfine /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

source "$here/emulator.sh"
run="$ecs_exec --endpoint-url $endpoint --cluster demo --service-name web"

size_mib=${SIZE_MIB:-256}
bytes=$((size_mib * 1024 * 1024))
head -c "$bytes" /dev/urandom >"$work/data"
want=$(sha256sum <"$work/data")
[ "$($run --pipe sha256sum <"$work/data")" = "$want" ] || { echo "bench: digest differs (file)" >&2; exit 1; }
[ "$(cat "$work/data" | $run --pipe sha256sum)" = "$want" ] || { echo "bench: digest differs (pipe)" >&2; exit 1; }

echo "== the bare terminal's own rates (no ecs-exec, no network): the baselines"
python3 "$here/pty_ceiling.py" --raw "$size_mib"
python3 "$here/pty_ceiling.py" --output "$size_mib"
echo "== ${size_mib} MiB stdin -> remote (sha256sum)"
hyperfine --runs 3 \
  --command-name "ecs-exec, stdin a file (stream-bytes)" "$run --pipe sha256sum < $work/data" \
  --command-name "ecs-exec, stdin a pipe (stream-chunks)" "cat $work/data | $run --pipe sha256sum" \
  --command-name "baseline: local sha256sum" "sha256sum < $work/data"
# Where the CPU goes in one run from a file: ecs-exec, the emulator (which plays the agent, here
# on the same two cores) and the rest of the machine (the remote terminal, `head`, `sha256sum`).
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
stolen() { awk '/^cpu /{ print $9 }' /proc/stat; }
emulator_cpu() { awk '{ print $14 + $15 }' "/proc/$emulator_pid/stat"; }
ticks=$(getconf CLK_TCK)
machine0=$(busy); steal0=$(stolen); emulator0=$(emulator_cpu); start=$(date +%s%N)
/usr/bin/time -f '%U %S' -o "$work/cpu" $run --pipe sha256sum <"$work/data" >/dev/null
wall=$(( ($(date +%s%N) - start) / 1000000 ))
machine=$(( ($(busy) - machine0) * 1000 / ticks )); steal=$(( ($(stolen) - steal0) * 1000 / ticks )); emulator_ms=$(( ($(emulator_cpu) - emulator0) * 1000 / ticks ))
ecs_exec_ms=$(awk '{ printf "%d", ($1 + $2) * 1000 }' "$work/cpu")
echo "== CPU of one ${size_mib} MiB run from a file, in ${wall} ms: ecs-exec ${ecs_exec_ms} ms, emulator ${emulator_ms} ms, everything else $((machine - ecs_exec_ms - emulator_ms)) ms; $(nproc) cores busy ${machine} ms of $((wall * $(nproc))) ms; stolen by the hypervisor ${steal} ms"
echo "== ${size_mib} MiB remote -> stdout (head -c from /dev/zero)"
hyperfine --runs 3 \
  --command-name "ecs-exec remote head -c" "$run --pipe 'head -c $bytes /dev/zero' < /dev/null > /dev/null" \
  --command-name "baseline: local head -c" "head -c $bytes /dev/zero > /dev/null"
err_bytes=$((bytes / 16))
echo "== $((err_bytes / 1048576)) MiB to the remote stderr, back apart (od | sed framing)"
hyperfine --runs 3 \
  --command-name "ecs-exec remote head -c >&2" "$run --pipe 'sh -c \"head -c $err_bytes /dev/zero >&2\"' < /dev/null 2> /dev/null" \
  --command-name "same bytes to the remote stdout" "$run --pipe 'head -c $err_bytes /dev/zero' < /dev/null > /dev/null"

peak_rss() { /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null; awk '{ printf "%.1f MiB", $1 / 1024 }' "$work/rss"; }
big=$(( ${BIG_MIB:-1024} * 1024 * 1024 ))
rm -f "$work/data"
head -c "$big" /dev/zero >"$work/big"
echo "== peak RSS at $((big / 1048576)) MiB: stdin a file: $(peak_rss $run --pipe sha256sum <"$work/big"); stdin a pipe: $(cat "$work/big" | peak_rss $run --pipe sha256sum); remote -> stdout: $(peak_rss $run --pipe "head -c $big /dev/zero" </dev/null)"
