# Sourced by the bench scripts: starts "$emulator" (the ecs-exec-emulator binary, set by the
# caller) on a free loopback port in a fresh work directory `$work`, removed with the emulator
# on exit, sets `$endpoint`, and exports the emulator's credentials with every AWS file and the
# metadata service out of the way and a compiled-adapter cache in `$work/cache`.
work=$(mktemp -d)
trap 'kill "$emulator_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$emulator" --listen 127.0.0.1:0 >"$work/listen" 2>"$work/emulator.log" &
emulator_pid=$!
until [ -s "$work/listen" ]; do sleep 0.05; done
endpoint=$(sed 's/^listening on //' "$work/listen")
export AWS_ACCESS_KEY_ID=AKIAEMULATOREXAMPLE1 AWS_SECRET_ACCESS_KEY=emulator-secret-key
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export XDG_CACHE_HOME="$work/cache"
