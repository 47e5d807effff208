#!/usr/bin/env bash
# Validates deploy/ (CI step "deploy templates"; run it after editing anything there):
#   1. cfn-lint on every CloudFormation template, informational rules included: any finding fails.
#   2. scripts/deploy/check_task_definitions.py: the ECS task definitions have the Fargate fields,
#      name only template Outputs, and set only environment variables the binaries read.
#   3. With DEPLOY_DOCKER_BUILD=1 and a Docker engine: builds deploy/Dockerfile (off by default: a
#      cold release build of both binaries takes many minutes on 2 cores).
#
#   bash scripts/validate-deploy.sh
#
# cfn-lint and its dependencies come from PyPI, pinned in scripts/deploy/requirements.txt, into the
# git-ignored venv .cache/py/cfn-lint (reused while the requirements file is unchanged). Nothing
# else needs the network: cfn-lint's resource specifications ship inside the package.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

py="${PYTHON:-python3}"
venv="$root/.cache/py/cfn-lint"
requirements="scripts/deploy/requirements.txt"
stamp="$venv/.installed"
want="$(cksum < "$requirements")"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -x "$venv/bin/cfn-lint" ]]; then
    echo "validate-deploy: installing cfn-lint into $venv" >&2
    [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
fi

templates=(deploy/cloudformation/*.yaml)
echo "cfn-lint $("$venv/bin/cfn-lint" --version | awk '{print $2}'): ${templates[*]}"
# --include-checks I: informational findings too (e.g. stateful resources without an explicit
# DeletionPolicy). No rule is ignored; a template that needs an exception says so in a Metadata
# cfn-lint block next to the resource, with the reason.
"$venv/bin/cfn-lint" --include-checks I -- "${templates[@]}"
echo "cfn-lint: no findings"

"$py" scripts/deploy/check_task_definitions.py

if [[ "${DEPLOY_DOCKER_BUILD:-0}" == 1 ]]; then
    if ! docker info >/dev/null 2>&1; then
        echo "validate-deploy: DEPLOY_DOCKER_BUILD=1 but no Docker engine answers" >&2
        exit 1
    fi
    DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t kinesis-rs:validate .
fi
