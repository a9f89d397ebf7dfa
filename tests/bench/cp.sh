#!/usr/bin/env bash
# Times `ecs-exec cp` against one emulator on loopback, each figure beside its baseline from the
# same run: a file into the container and back out (SIZE_MIB, default 256), against `cp` of the
# same file on the local disk; then the peak RSS of ecs-exec copying 1 GiB each way (memory must
# stay flat: the file is streamed, never held).
# Usage: tests/bench/cp.sh [target/release]
# Needs hyperfine (Debian: apt-get install hyperfine) and GNU time as /usr/bin/time (apt-get
# install time).
set -euo pipefail
bin_dir=${1:-target/release}
ecs_exec="$bin_dir/ecs-exec"
emulator="$bin_dir/ecs-exec-emulator"
for tool in hyperfine /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

source "$(dirname "$0")/emulator.sh"
cp_cmd="$ecs_exec cp --endpoint-url $endpoint --cluster demo --service-name web"

size_mib=${SIZE_MIB:-256}
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/data"
mkdir "$work/remote" "$work/back"
echo "== ${size_mib} MiB file: into the container, out of it, and a local cp"
hyperfine --runs 3 \
  --command-name "ecs-exec cp into the container" "$cp_cmd $work/data :$work/remote/data" \
  --command-name "ecs-exec cp out of the container" "$cp_cmd :$work/remote/data $work/back/data" \
  --command-name "baseline: local cp" "cp $work/data $work/back/local"
cmp "$work/data" "$work/back/data"

peak_rss() { /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null; awk '{ printf "%.1f MiB", $1 / 1024 }' "$work/rss"; }
rm -f "$work/data" "$work/remote/data" "$work/back/data"
big_mib=${BIG_MIB:-1024}
head -c $((big_mib * 1024 * 1024)) /dev/zero >"$work/big"
echo "== peak RSS at ${big_mib} MiB: into the container: $(peak_rss $cp_cmd "$work/big" ":$work/remote/big"); out of it: $(peak_rss $cp_cmd ":$work/remote/big" "$work/back/big")"
cmp "$work/big" "$work/back/big"
