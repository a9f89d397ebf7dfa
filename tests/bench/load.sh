#!/usr/bin/env bash
# Load: N one-offs at once (default 50) against one emulator process on loopback, each sending
# 1 MiB of random bytes through `cat`. Prints the wall time of the whole batch, the peak RSS of
# the largest ecs-exec and of the emulator, and whether every run came back byte-exact.
# Baseline in the same run: one single one-off alone.
# Usage: tests/bench/load.sh [target/release]   (needs /usr/bin/time)
set -euo pipefail
bin_dir=${1:-target/release}
ecs_exec="$bin_dir/ecs-exec"
emulator="$bin_dir/ecs-exec-emulator"
runs=${RUNS:-50}

work=$(mktemp -d)
trap 'pkill -P "$emulator_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
/usr/bin/time -f '%M' -o "$work/emulator.rss" "$emulator" --listen 127.0.0.1:0 \
  >"$work/listen" 2>"$work/emulator.log" &
emulator_pid=$!
until [ -s "$work/listen" ]; do sleep 0.05; done
endpoint=$(sed 's/^listening on //' "$work/listen")
export AWS_ACCESS_KEY_ID=AKIAEMULATOREXAMPLE1 AWS_SECRET_ACCESS_KEY=emulator-secret-key
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export XDG_CACHE_HOME="$work/cache"
run=("$ecs_exec" --endpoint-url "$endpoint" --cluster demo --service-name web --pipe cat)

head -c $((1024 * 1024)) /dev/urandom >"$work/data"
"${run[@]}" <"$work/data" >/dev/null   # warm the compiled-adapter cache once

one_start=$(date +%s.%N)
"${run[@]}" <"$work/data" >"$work/single.out"
one_end=$(date +%s.%N)
cmp -s "$work/data" "$work/single.out" || { echo "load: the single run differs" >&2; exit 1; }

start=$(date +%s.%N)
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f '%M' -o "$work/rss.$i" "${run[@]}" <"$work/data" >"$work/out.$i" 2>"$work/err.$i" &
done
wait_failed=0
for job in $(jobs -p); do
  [ "$job" = "$emulator_pid" ] && continue
  wait "$job" || wait_failed=$((wait_failed + 1))
done
end=$(date +%s.%N)

exact=0
for i in $(seq 1 "$runs"); do
  cmp -s "$work/data" "$work/out.$i" && exact=$((exact + 1))
done
max_rss=$(cat "$work"/rss.* | sort -n | tail -1)
# GNU time ignores SIGINT while it waits: stop the emulator itself, its child.
pkill -INT -P "$emulator_pid"; wait "$emulator_pid" 2>/dev/null || true
echo "== $runs concurrent one-offs of 1 MiB through cat"
printf 'batch wall time: %.2f s (baseline, one run alone: %.2f s)\n' \
  "$(echo "$end - $start" | bc)" "$(echo "$one_end - $one_start" | bc)"
echo "byte-exact: $exact of $runs; failed exits: $wait_failed"
echo "peak RSS: largest ecs-exec $((max_rss / 1024)) MiB; emulator $(( $(cat "$work/emulator.rss") / 1024 )) MiB"
echo "emulator errors logged: $(grep -c -E 'ERROR|WARN' "$work/emulator.log" || true)"
