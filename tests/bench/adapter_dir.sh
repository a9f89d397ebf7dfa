#!/usr/bin/env bash
# What a big third-party adapter directory costs a run that a built-in adapter serves:
#   - 2,000 adapter files (copies of the template adapter, about 100 KB each);
#   - 12 large ones (the template padded with a custom section to 4 MiB, the per-file limit);
# each beside the same run with no adapter directory (the baseline). A run here is
# `ecs-exec --explain --pipe 'rails runner -'`: the whole adapter step of a run (load the set,
# pick the adapter, plan) and nothing of AWS. The directory index and the compile cache are warm,
# as on a user's second run; the first (cold) run of each directory is timed once too.
# Usage: tests/bench/adapter_dir.sh [target/release]   (needs hyperfine, /usr/bin/time, python3)
set -euo pipefail
bin_dir=${1:-target/release}
ecs_exec="$bin_dir/ecs-exec"
template=$(ls "$bin_dir"/build/ecs-exec-*/out/guest-target/wasm32-wasip2/release/ecs_exec_adapter_template.wasm | head -1)
for tool in hyperfine /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_CACHE_HOME="$work/cache"
mkdir -p "$work/many" "$work/large" "$work/empty"
for i in $(seq -w 1 2000); do cp "$template" "$work/many/adapter-$i.wasm"; done
# A custom section (id 0) is valid anywhere in a component; it pads without adding code.
python3 - "$template" "$work/large/big-01.wasm" <<'EOF'
import sys
wasm = open(sys.argv[1], 'rb').read()
def leb(n):
    out = bytearray()
    while True:
        byte = n & 0x7f
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
name = b'padding'
room = 4 * 1024 * 1024 - len(wasm) - 1 - 5 - 1 - len(name)
body = leb(len(name)) + name + b'\0' * room
padded = wasm + b'\0' + leb(len(body)) + body
padded = padded[:4 * 1024 * 1024] if len(padded) > 4 * 1024 * 1024 else padded
open(sys.argv[2], 'wb').write(padded)
EOF
for i in $(seq -w 2 12); do cp "$work/large/big-01.wasm" "$work/large/big-$i.wasm"; done
echo "== files: many: $(ls "$work/many" | wc -l) x $(stat -c %s "$template") bytes; large: $(ls "$work/large" | wc -l) x $(stat -c %s "$work/large/big-01.wasm") bytes"

run() { # run DIR: the --explain command for a built-in-served run with DIR as the adapter dir
  echo "$ecs_exec --explain --cluster demo --service-name web --adapter-dir $1 --pipe 'rails runner -' < /dev/null > /dev/null"
}
for dir in many large; do
  echo "== first run with $dir (cold index and cache): $( { /usr/bin/time -f '%e s, %M KiB' bash -c "$(run "$work/$dir")"; } 2>&1 | tail -1)"
done
bash -c "$(run "$work/empty")"   # the baseline's own cold run

echo "== a run served by a built-in adapter, warm"
hyperfine --warmup 3 --runs 30 \
  --command-name "2,000 adapter files" "$(run "$work/many")" \
  --command-name "12 files of 4 MiB" "$(run "$work/large")" \
  --command-name "baseline: empty adapter dir" "$(run "$work/empty")"

peak_rss() { /usr/bin/time -f '%M' -o "$work/rss" bash -c "$1"; echo "$(( $(cat "$work/rss") / 1024 )) MiB"; }
echo "== peak RSS: 2,000 files: $(peak_rss "$(run "$work/many")"); 12 large: $(peak_rss "$(run "$work/large")"); baseline: $(peak_rss "$(run "$work/empty")")"
