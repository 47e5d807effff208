#!/usr/bin/env python3
"""Fill the ${Name} placeholders of an ECS task definition and print it (stdlib only).

The task definitions in deploy/ecs/ name CloudFormation Outputs of data.yaml and platform.yaml
(`${SinkTaskRoleArn}`, `${StreamName}`, ...) plus `${ImageTag}`, which only the build knows:

    python3 deploy/render_task_definition.py deploy/ecs/s3-sink.task-definition.json \\
        --stack kinesis-rs-data --stack kinesis-rs-platform --set ImageTag=0.1.0 > sink.json
    aws ecs register-task-definition --cli-input-json file://sink.json

--stack reads a stack's Outputs with the AWS CLI; --outputs reads the same JSON from a file
(`aws cloudformation describe-stacks --query 'Stacks[0].Outputs'`), or a {"Name": "value"} object.
Placeholders are replaced inside JSON string values, so values are escaped correctly. A
placeholder without a value, or two sources giving one name different values, is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Any

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")


class RenderError(Exception):
    pass


def placeholders(value: Any) -> set[str]:
    """Every placeholder name in the strings of a parsed JSON document."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    if isinstance(value, dict):
        found: set[str] = set()
        for k, v in value.items():
            found |= placeholders(k) | placeholders(v)
        return found
    return set()


def render(value: Any, values: dict[str, str]) -> Any:
    """A copy of `value` with every placeholder replaced; RenderError lists the missing names."""
    missing = sorted(placeholders(value) - values.keys())
    if missing:
        raise RenderError("no value for: " + ", ".join(missing))

    def fill(v: Any) -> Any:
        if isinstance(v, str):
            return PLACEHOLDER.sub(lambda m: values[m.group(1)], v)
        if isinstance(v, list):
            return [fill(x) for x in v]
        if isinstance(v, dict):
            return {fill(k): fill(x) for k, x in v.items()}
        return v

    return fill(value)


def outputs_from_json(doc: Any, source: str) -> dict[str, str]:
    """Stack outputs as describe-stacks prints them (a list), or a plain name -> value object."""
    if isinstance(doc, dict) and "Stacks" in doc:
        doc = doc["Stacks"][0].get("Outputs", [])
    if isinstance(doc, list):
        return {o["OutputKey"]: str(o["OutputValue"]) for o in doc}
    if isinstance(doc, dict):
        return {str(k): str(v) for k, v in doc.items()}
    raise RenderError(f"{source}: expected a list of outputs or an object")


def stack_outputs(stack: str, region: str | None) -> dict[str, str]:
    cmd = ["aws", "cloudformation", "describe-stacks", "--stack-name", stack,
           "--query", "Stacks[0].Outputs", "--output", "json"]
    if region:
        cmd += ["--region", region]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as e:
        raise RenderError("the AWS CLI (aws) is needed for --stack") from e
    except subprocess.CalledProcessError as e:
        raise RenderError(f"describe-stacks {stack}: {e.stderr.strip()}") from e
    return outputs_from_json(json.loads(out or "[]"), f"stack {stack}")


def merge(into: dict[str, str], new: dict[str, str], source: str) -> None:
    for k, v in new.items():
        if k in into and into[k] != v:
            raise RenderError(f"{k} is {into[k]!r} in one source and {v!r} in {source}")
        into[k] = v


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task_definition", help="deploy/ecs/<name>.task-definition.json")
    p.add_argument("--stack", action="append", default=[], help="a stack whose Outputs to use")
    p.add_argument("--outputs", action="append", default=[], help="a JSON file of outputs")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a value not in any stack (ImageTag); overrides the stacks")
    p.add_argument("--region", help="region of the stacks (default: the CLI's)")
    args = p.parse_args(argv)
    try:
        values: dict[str, str] = {}
        for stack in args.stack:
            merge(values, stack_outputs(stack, args.region), f"stack {stack}")
        for path in args.outputs:
            with open(path, encoding="utf-8") as f:
                merge(values, outputs_from_json(json.load(f), path), path)
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep or not PLACEHOLDER.fullmatch("${" + name + "}"):
                raise RenderError(f"--set {item!r}: expected NAME=VALUE")
            values[name] = value
        with open(args.task_definition, encoding="utf-8") as f:
            doc = json.load(f)
        json.dump(render(doc, values), sys.stdout, indent=2)
        sys.stdout.write("\n")
    except (RenderError, OSError, json.JSONDecodeError, KeyError) as e:
        print(f"render_task_definition: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
