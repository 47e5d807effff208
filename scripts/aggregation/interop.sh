#!/usr/bin/env bash
# Interop check for CI: aggregates encoded by kinesis-aggregation must decode, record for
# record, with Python aws-kinesis-agg 1.2.3. Run from anywhere (CI: from the repo root):
#   bash scripts/aggregation/interop.sh
# Honours CARGO_TARGET_DIR. Installs aws-kinesis-agg into .cache/py/agg if needed.
# Exit status non-zero on any mismatch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bash scripts/aggregation/setup-venvs.sh agg

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo run --quiet -p kinesis-aggregation --example write_interop -- "$work/ours.json"
.cache/py/agg/bin/python scripts/aggregation/interop_check.py "$work/ours.json"
