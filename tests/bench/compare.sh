#!/usr/bin/env bash
# Compares two builds of ecs-exec in one run against one emulator, for choosing build settings:
#   - a cold one-off `echo hi` (no adapter cache, read-only home) of each, beside one
#     `aws ecs list-tasks` call (hyperfine), and the peak RSS of six cold runs of each;
#   - 64 MiB remote -> stdout and stdin -> remote (`--pipe sha256sum`) through each, alternating
#     A and B, with each process's wall time and CPU (GNU time).
# Usage: tests/bench/compare.sh A/ecs-exec B/ecs-exec [emulator]   (emulator: target/release)
# Needs hyperfine, GNU time as /usr/bin/time and the AWS CLI, as tests/bench/oneoff.sh does.
# SIZE_MIB sets the transfer size, RUNS the hyperfine runs (default 30), TRANSFERS the runs of
# each transfer (default 4); ONEOFF_ONLY=1 skips the transfers, OUTPUT_ONLY=1 the stdin one.
set -euo pipefail
a=$1
b=$2
emulator=${3:-target/release/ecs-exec-emulator}
mib=${SIZE_MIB:-64}
source "$(dirname "$0")/emulator.sh"
args="--endpoint-url $endpoint --cluster demo --service-name web"
mkdir "$work/ro-home"
chmod 0555 "$work/ro-home"
cold="HOME=$work/ro-home XDG_CACHE_HOME="
printf 'echo hi' >"$work/echo-hi"

echo "== cold one-off 'echo hi', whole process"
hyperfine --warmup 3 --runs "${RUNS:-30}" \
  --command-name "A: $a" "$cold $a $args < $work/echo-hi" \
  --command-name "B: $b" "$cold $b $args < $work/echo-hi" \
  --command-name "baseline: aws ecs list-tasks" "aws ecs list-tasks --cluster demo --endpoint-url $endpoint"
for bin in "$a" "$b"; do
  rss=()
  for _ in 1 2 3 4 5 6; do
    env HOME="$work/ro-home" XDG_CACHE_HOME= /usr/bin/time -f '%M' -o "$work/rss" \
      "$bin" $args <"$work/echo-hi" >/dev/null
    rss+=("$(awk '{ printf "%.2f", $1 / 1024 }' "$work/rss")")
  done
  echo "peak RSS (MiB), $bin: ${rss[*]}"
done
[ -z "${ONEOFF_ONLY:-}" ] || exit 0

head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/data"
transfers=$(seq 1 "${TRANSFERS:-4}")
echo "== ${mib} MiB each way, A and B alternating"
for _ in $transfers; do
  for bin in "$a" "$b"; do
    /usr/bin/time -f "remote -> stdout, $bin: %e s wall, %U + %S s CPU" \
      "$bin" $args --pipe "head -c $((mib * 1024 * 1024)) /dev/zero" </dev/null >/dev/null
  done
done
[ -z "${OUTPUT_ONLY:-}" ] || exit 0
for _ in $transfers; do
  for bin in "$a" "$b"; do
    /usr/bin/time -f "stdin -> remote, $bin: %e s wall, %U + %S s CPU" \
      "$bin" $args --pipe sha256sum <"$work/data" >/dev/null
  done
done
