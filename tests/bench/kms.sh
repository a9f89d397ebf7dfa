#!/usr/bin/env bash
# KMS-encrypted sessions against plain ones, whole processes against one emulator on loopback,
# each KMS figure beside the plain figure of the same run:
#   - a one-off `echo hi` on the `secure` cluster (KMS handshake: GenerateDataKey, the agent's
#     Decrypt, the challenge) beside the same one-off on `demo` (no handshake);
#   - remote output to stdout and stdin to the remote program, SIZE_MIB (default 256) each,
#     on `secure` beside `demo`.
# Usage: tests/bench/kms.sh [target/release]   (needs hyperfine)
set -euo pipefail
bin_dir=${1:-target/release}
ecs_exec="$bin_dir/ecs-exec"
emulator="$bin_dir/ecs-exec-emulator"
command -v hyperfine >/dev/null || { echo "bench: hyperfine is missing" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "$emulator_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$emulator" --listen 127.0.0.1:0 >"$work/listen" 2>"$work/emulator.log" &
emulator_pid=$!
until [ -s "$work/listen" ] && grep -q '^kms listening on ' "$work/emulator.log"; do sleep 0.05; done
endpoint=$(sed 's/^listening on //' "$work/listen")
kms_endpoint=$(sed -n 's/^kms listening on //p' "$work/emulator.log" | head -1)
export AWS_ACCESS_KEY_ID=AKIAEMULATOREXAMPLE1 AWS_SECRET_ACCESS_KEY=emulator-secret-key
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_ENDPOINT_URL_KMS="$kms_endpoint"
export XDG_CACHE_HOME="$work/cache"
plain=("$ecs_exec" --endpoint-url "$endpoint" --cluster demo --service-name web)
kms=("$ecs_exec" --endpoint-url "$endpoint" --cluster secure --service-name web)

printf 'echo hi' >"$work/echo-hi"
"${plain[@]}" <"$work/echo-hi" >/dev/null   # warm the compiled-adapter cache once
"${kms[@]}" <"$work/echo-hi" >/dev/null     # and check that the KMS cluster works at all

echo "== one-off 'echo hi', whole process: KMS cluster beside the plain one"
hyperfine --warmup 3 --runs 30 \
  --command-name "kms: ecs-exec one-off echo hi (secure)" "${kms[*]} < $work/echo-hi" \
  --command-name "plain: ecs-exec one-off echo hi (demo)" "${plain[*]} < $work/echo-hi"

size_mib=${SIZE_MIB:-256}
bytes=$((size_mib * 1024 * 1024))
echo "== ${size_mib} MiB remote -> stdout (head -c from /dev/zero)"
hyperfine --runs 3 \
  --command-name "kms: remote head -c" "${kms[*]} --pipe 'head -c $bytes /dev/zero' < /dev/null > /dev/null" \
  --command-name "plain: remote head -c" "${plain[*]} --pipe 'head -c $bytes /dev/zero' < /dev/null > /dev/null"
head -c "$bytes" /dev/urandom >"$work/data"
echo "== ${size_mib} MiB stdin -> remote (sha256sum)"
hyperfine --runs 3 \
  --command-name "kms: --pipe sha256sum" "${kms[*]} --pipe sha256sum < $work/data" \
  --command-name "plain: --pipe sha256sum" "${plain[*]} --pipe sha256sum < $work/data"
