#!/usr/bin/env bash
# Times whole processes against one emulator on loopback, each beside its baseline:
#   - a one-off `echo hi` through ecs-exec (a whole process: API calls, data channel, adapter),
#     cold (no adapter cache and a read-only home, as in a fresh container) and warm (a cache
#     written by an earlier run), against one `aws ecs list-tasks` call (the AWS CLI alone, one
#     API call), and the peak RSS of each; and the same one-off streamed (the default) beside
#     --inline-input;
#   - stdin to the remote program and remote output to stdout, 256 MiB each way,
#     against `cat` of the same bytes through a local pipe;
#   - peak RSS of ecs-exec for a 1 GiB transfer each way.
# Usage: tests/bench/oneoff.sh [target/release]
# Needs hyperfine (Debian: apt-get install hyperfine), GNU time as /usr/bin/time (Debian:
# apt-get install time) and the AWS CLI (pip install awscli). ONEOFF_ONLY=1 stops after the
# one-off figures (skips the 256 MiB and 1 GiB transfers).
set -euo pipefail
bin_dir=${1:-target/release}
ecs_exec="$bin_dir/ecs-exec"
emulator="$bin_dir/ecs-exec-emulator"
for tool in hyperfine /usr/bin/time aws; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool is missing (hyperfine: apt-get install hyperfine; /usr/bin/time: apt-get install time; aws: pip install awscli)" >&2
    exit 1
  }
done

source "$(dirname "$0")/emulator.sh"
run=("$ecs_exec" --endpoint-url "$endpoint" --cluster demo --service-name web)

printf 'echo hi' >"$work/echo-hi"
"${run[@]}" <"$work/echo-hi" >/dev/null   # warm the compiled-adapter cache once, as a user's second run

# Cold: no cache directory at all and a home nobody may write to (mode 0555). As root the mode
# stops nothing, so the script checks afterwards that nothing was written there.
mkdir "$work/ro-home"
chmod 0555 "$work/ro-home"
cold_env=(HOME="$work/ro-home" XDG_CACHE_HOME=)
cold=(env "${cold_env[@]}" "${run[@]}")

# Input comes by shell redirection (Debian's hyperfine has no --input); hyperfine subtracts the
# shell's own start-up time from every figure.
echo "== one-off 'echo hi', whole process"
hyperfine --warmup 3 --runs 30 \
  --command-name "ecs-exec one-off echo hi, cold (no cache, read-only home)" "${cold_env[*]} ${run[*]} < $work/echo-hi" \
  --command-name "ecs-exec one-off echo hi, warm cache" "${run[*]} < $work/echo-hi" \
  --command-name "baseline: aws ecs list-tasks" "aws ecs list-tasks --cluster demo --endpoint-url $endpoint"
# What inlining a small input saves (the wait for the ready marker), and so what streaming it by
# default costs; both warm, in the same run.
echo "== one-off 'echo hi', input streamed (the default) beside --inline-input"
hyperfine --warmup 3 --runs 30 \
  --command-name "ecs-exec echo hi, streamed (default)" "${run[*]} < $work/echo-hi" \
  --command-name "ecs-exec echo hi, --inline-input" "${run[*]} --inline-input < $work/echo-hi"
if [ -n "$(find "$work/ro-home" -mindepth 1 -print -quit)" ]; then
  echo "bench: the cold runs wrote into the read-only home:" >&2
  find "$work/ro-home" -mindepth 1 >&2
  exit 1
fi

peak_rss() { # prints the peak RSS in MiB (KiB / 1024, one decimal) of the command given
  /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null
  awk '{ printf "%.1f MiB", $1 / 1024 }' "$work/rss"
}
rss_runs() { # the peak RSS of five runs of the command given, stdin from echo-hi
  local figures=()
  for _ in 1 2 3 4 5; do figures+=("$(peak_rss "$@" <"$work/echo-hi")"); done
  local IFS=,
  echo "${figures[*]}"
}
echo "== peak RSS, five runs each"
echo "cold echo hi: $(rss_runs "${cold[@]}")"
echo "warm echo hi: $(rss_runs "${run[@]}")"
echo "aws ecs list-tasks: $(peak_rss aws ecs list-tasks --cluster demo --endpoint-url "$endpoint" </dev/null)"
[ -z "${ONEOFF_ONLY:-}" ] || exit 0

size_mib=${SIZE_MIB:-256}
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/data"
echo "== ${size_mib} MiB stdin -> remote (sha256sum)"
hyperfine --runs 3 \
  --command-name "ecs-exec --pipe sha256sum" "${run[*]} --pipe sha256sum < $work/data" \
  --command-name "baseline: local sha256sum" "sha256sum < $work/data"
echo "== the bare terminal's own rates (no ecs-exec, no network), the baselines of the two transfers"
python3 "$(dirname "$0")/pty_ceiling.py" "$size_mib"
python3 "$(dirname "$0")/pty_ceiling.py" --output "$size_mib"
echo "== ${size_mib} MiB remote -> stdout (head -c from /dev/zero)"
hyperfine --runs 3 \
  --command-name "ecs-exec remote head -c" "${run[*]} --pipe 'head -c $((size_mib * 1024 * 1024)) /dev/zero' < /dev/null > /dev/null" \
  --command-name "baseline: local head -c" "head -c $((size_mib * 1024 * 1024)) /dev/zero > /dev/null"

big=$((1024 * 1024 * 1024))
echo "== peak RSS at 1 GiB: stdin -> remote: $(head -c $big /dev/zero | peak_rss "${run[@]}" --pipe 'sha256sum'); remote -> stdout: $(peak_rss "${run[@]}" --pipe "head -c $big /dev/zero" </dev/null)"
