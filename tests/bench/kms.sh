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

source "$(dirname "$0")/emulator.sh"
until grep -q '^kms listening on ' "$work/emulator.log"; do sleep 0.05; done
kms_endpoint=$(sed -n 's/^kms listening on //p' "$work/emulator.log" | head -1)
export AWS_ENDPOINT_URL_KMS="$kms_endpoint"
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
