#!/usr/bin/env bash
# Runs bench_aiokpl.py against a fresh `local-aws` process (the same emulator binary the Rust
# bench uses), then stops it with SIGTERM.
#
#   bash scripts/producer/setup-aiokpl.sh
#   LOCAL_AWS_BIN=$CARGO_TARGET_DIR/release/local-aws bash scripts/producer/bench-aiokpl.sh --records 100000
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LOCAL_AWS_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/local-aws}
py="$root/.cache/py/aiokpl/bin/python"
env_file=$(mktemp)
"$bin" > "$env_file" 2>/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$env_file"' EXIT
for _ in $(seq 100); do
    grep -q AWS_ENDPOINT_URL_S3 "$env_file" && break
    sleep 0.1
done
# shellcheck disable=SC1090
. "$env_file"
"$py" "$root/scripts/producer/bench_aiokpl.py" "$@"
