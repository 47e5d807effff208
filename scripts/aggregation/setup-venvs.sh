#!/usr/bin/env bash
# Creates the Python peers' virtual environments under .cache/py/ (git-ignored), idempotently.
#   .cache/py/agg     aws-kinesis-agg 1.2.3 (+ six, which it imports but does not declare)
#   .cache/py/aiokpl  aiokpl 0.2.0 (its own venv: it pins an older botocore)
# Usage: bash scripts/aggregation/setup-venvs.sh [agg|aiokpl ...]   (default: both)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="${PYTHON:-python3}"
venvs=("$@")
[ ${#venvs[@]} -eq 0 ] && venvs=(agg aiokpl)

for name in "${venvs[@]}"; do
  case "$name" in
    agg) pkgs=("aws-kinesis-agg==1.2.3" "six") ;;
    aiokpl) pkgs=("aiokpl==0.2.0") ;;
    *) echo "unknown venv: $name" >&2; exit 2 ;;
  esac
  dir="$root/.cache/py/$name"
  stamp="$dir/.installed"
  want="${pkgs[*]}"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    continue
  fi
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}"
  echo "$want" > "$stamp"
  echo "venv $name ready: $want" >&2
done
