#!/usr/bin/env bash
# Installs the Python peer of the producer benchmark, aiokpl 0.2.0 (PyPI), into its own venv:
# it pins an old botocore, which must not leak into other tools' environments.
#
#   bash scripts/producer/setup-aiokpl.sh      # → .cache/py/aiokpl/bin/python
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/py/aiokpl"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check 'aiokpl==0.2.0'
"$venv/bin/python" -c 'import aiokpl, botocore; print("aiokpl ok, botocore", botocore.__version__)'
