#!/usr/bin/env python3
"""Checks deploy/ecs/*.task-definition.json against Fargate's rules, the templates and the binaries.

Run by scripts/validate-deploy.sh (stdlib only, from anywhere):

    python3 scripts/deploy/check_task_definitions.py

For every task definition:
- it parses as JSON and has the Fargate fields: family, networkMode awsvpc, requiresCompatibilities
  FARGATE, a valid cpu/memory combination, task and execution roles;
- every container has an image, an awslogs (or FireLens) log configuration, a stopTimeout of at most
  120 s (Fargate's limit) and 5 s above the program's DRAIN_TIMEOUT / SHUTDOWN_TIMEOUT (set, or its
  default), and a health check in exec form
  (`CMD`, not `CMD-SHELL`: the image has no shell) that runs `<its binary> healthcheck`;
- its program is one of the workspace's example binaries (entryPoint /usr/local/bin/<package>),
  whose sources have a healthcheck subcommand;
- every environment variable is one that program reads: a clap `env = "NAME"` in
  examples/<package>/src, KINESIS_PRODUCER_<KEY> for a key that kinesis-producer's config.rs accepts
  (only if the program embeds the producer and reads its environment), RUST_LOG (if it uses an
  EnvFilter from the environment) or a variable of the AWS SDK (AWS_SDK_VARIABLES below). An unknown
  name fails the check: a misspelt variable is otherwise silently ignored;
- every ${Name} placeholder is an unconditional Output of a template in deploy/cloudformation/, or a
  deploy-time value (DEPLOY_TIME_VALUES below), and deploy/render_task_definition.py fills them all.
Also, every ContainerName of services.yaml is a container of some task definition, with that port.

The YAML templates are read line by line (block style, two-space indent, as ours are): enough to
find the Outputs without a YAML library, which the CloudFormation short tags (!Ref) would trip anyway.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "deploy" / "cloudformation"
TASK_DEFINITIONS = ROOT / "deploy" / "ecs"
BIN_DIR = "/usr/local/bin/"

# Placeholders that are no stack Output: the deploy pipeline supplies them (render --set).
DEPLOY_TIME_VALUES = {"ImageTag": "the tag pushed to ImageRepositoryUri"}

# Variables the AWS SDK for Rust reads itself (region, endpoints, retries, credentials chain). The
# container credentials variables are set by ECS, not by task definitions, and are left out.
AWS_SDK_VARIABLES = {
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS",
    "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_CLOUDWATCH",
    "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_STS_REGIONAL_ENDPOINTS", "AWS_SDK_UA_APP_ID",
}

# Shutdown deadlines of the programs, in seconds: stopTimeout must exceed them.
GRACE_VARIABLES = ("DRAIN_TIMEOUT", "SHUTDOWN_TIMEOUT")

# Fargate (Linux) task sizes: cpu units -> allowed memory in MiB.
FARGATE_SIZES = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4096 + 1, 1024)),
    1024: set(range(2048, 8192 + 1, 1024)),
    2048: set(range(4096, 16384 + 1, 1024)),
    4096: set(range(8192, 30720 + 1, 1024)),
    8192: set(range(16384, 61440 + 1, 4096)),
    16384: set(range(32768, 122880 + 1, 8192)),
}

# A clap subcommand enum with a `Healthcheck` variant (clap names it `healthcheck`).
HEALTHCHECK_SUBCOMMAND = re.compile(
    r"derive\([^)]*\bSubcommand\b[^)]*\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([a-z]+\))?\s+)?"
    r"enum\s+\w+\s*\{(?:[^{}]|\{[^{}]*\})*?\bHealthcheck\b"
)
CLAP_ENV = re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"')
# The match arms of kinesis-producer's Config::apply_env: `"KEY" =>` or `"A" | "B" =>`.
PRODUCER_ARM = re.compile(r'^\s*((?:"[A-Z][A-Z0-9_]*"\s*\|\s*)*"[A-Z][A-Z0-9_]*")\s*=>', re.M)


def template_outputs() -> tuple[dict[str, str], set[str]]:
    """Output name -> template file, and the names of outputs that exist only under a Condition."""
    outputs: dict[str, str] = {}
    conditional: set[str] = set()
    for path in sorted(TEMPLATES.glob("*.yaml")):
        in_outputs = False
        current = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line.startswith(" "):
                in_outputs = line.rstrip() == "Outputs:"
                current = None
                continue
            if not in_outputs:
                continue
            m = re.fullmatch(r"  ([A-Za-z0-9]+):\s*", line)
            if m:
                current = m.group(1)
                if current in outputs:
                    raise SystemExit(
                        f"Output {current} is in both {outputs[current]} and {path.name}: "
                        "placeholders need unique names"
                    )
                outputs[current] = path.name
            elif current and re.fullmatch(r"    Condition:\s*\S+\s*", line):
                conditional.add(current)
    return outputs, conditional


def load_renderer():
    sys.dont_write_bytecode = True  # no __pycache__ inside deploy/
    path = ROOT / "deploy" / "render_task_definition.py"
    spec = importlib.util.spec_from_file_location("render_task_definition", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rust_sources(package: str) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8")
        for p in sorted((ROOT / "examples" / package / "src").rglob("*.rs"))
    )


def accepted_variables(package: str) -> set[str]:
    src = rust_sources(package)
    names = set(CLAP_ENV.findall(src)) | AWS_SDK_VARIABLES
    if "EnvFilter" in src and ("from_default_env" in src or "RUST_LOG" in src):
        names.add("RUST_LOG")
    manifest = (ROOT / "examples" / package / "Cargo.toml").read_text(encoding="utf-8")
    if re.search(r"^kinesis-producer\b", manifest, re.M) and "from_env" in src:
        config = (ROOT / "crates" / "kinesis-producer" / "src" / "config.rs").read_text(
            encoding="utf-8"
        )
        body = config.split("fn apply_env", 1)[-1].split("#[cfg(test)]", 1)[0]
        for arm in PRODUCER_ARM.findall(body):
            names.update("KINESIS_PRODUCER_" + key for key in re.findall(r'"([A-Z0-9_]+)"', arm))
    return names


def seconds(value: str) -> float | None:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*", value)
    if not m:
        return None
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "ms" else n


def check_container(c: dict, where: str, errors: list[str]) -> None:
    def err(msg: str) -> None:
        errors.append(f"{where}: {msg}")

    for field in ("name", "image"):
        if not isinstance(c.get(field), str) or not c[field]:
            err(f"{field} is required")
    program = (c.get("entryPoint") or c.get("command") or [None])[0]
    if not isinstance(program, str) or not program.startswith(BIN_DIR):
        err(f"entryPoint must start with {BIN_DIR}<program> (the image has no default program)")
        return
    package = program[len(BIN_DIR):]
    if not (ROOT / "examples" / package / "Cargo.toml").is_file():
        err(f"{program}: no package examples/{package} builds that program")
        return

    log = c.get("logConfiguration") or {}
    driver = log.get("logDriver")
    if driver == "awslogs":
        options = log.get("options") or {}
        for key in ("awslogs-group", "awslogs-region", "awslogs-stream-prefix"):
            if not options.get(key):
                err(f"logConfiguration.options.{key} is required (Fargate)")
    elif driver != "awsfirelens":
        err("logConfiguration with logDriver awslogs (or awsfirelens) is required")

    health = c.get("healthCheck") or {}
    command = health.get("command") or []
    if command[:1] != ["CMD"]:
        err('healthCheck.command must be exec form ["CMD", ...]: the image has no shell')
    elif command[1:] != [program, "healthcheck"]:
        err(f'healthCheck.command must be ["CMD", "{program}", "healthcheck"], not {command}')
    elif not HEALTHCHECK_SUBCOMMAND.search(rust_sources(package)):
        err(f"examples/{package}/src has no healthcheck subcommand (a Healthcheck variant of "
            "a #[derive(Subcommand)] enum)")
    for key, low, high in (("interval", 5, 300), ("timeout", 2, 60), ("retries", 1, 10),
                           ("startPeriod", 0, 300)):
        v = health.get(key)
        if v is not None and not (isinstance(v, int) and low <= v <= high):
            err(f"healthCheck.{key} must be an integer in {low}..={high}")

    stop = c.get("stopTimeout")
    if not isinstance(stop, int) or not 2 <= stop <= 120:
        err("stopTimeout must be set, 2..=120 s (Fargate's maximum is 120)")
        stop = None

    env = c.get("environment") or []
    names = [e.get("name") for e in env]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        err(f"environment variable {dup} is set twice")
    for e in env:
        if not isinstance(e.get("value"), str):
            err(f"environment variable {e.get('name')}: the value must be a string")
    accepted = accepted_variables(package)
    for name in names:
        if name not in accepted:
            err(f"environment variable {name} is not read by {package}: no env = \"{name}\" "
                f"in examples/{package}/src, and not a kinesis-producer KINESIS_PRODUCER_* key "
                "(if it embeds the producer), RUST_LOG or an AWS SDK variable")
    # The program's own shutdown deadline (set here, or its clap default) must end before ECS
    # kills the container, or the drain it was given is a lie.
    values = {e.get("name"): e.get("value") for e in env}
    src = rust_sources(package)
    for var in GRACE_VARIABLES:
        value = values.get(var)
        if value is None:
            m = re.search(r'env\s*=\s*"' + var + r'"\s*,\s*default_value(?:_t)?\s*=\s*"?([0-9.]+)',
                          src)
            value = m.group(1) if m else None
        if value is None or stop is None:
            continue
        d = seconds(value)
        if d is None:
            err(f"{var} {value!r} is not a number of seconds")
        elif stop < d + 5:
            err(f"stopTimeout {stop} s leaves less than 5 s after {var} {value}")


def check_task_definition(path: Path, outputs: dict[str, str], conditional: set[str],
                          renderer, errors: list[str]) -> dict:
    where = path.relative_to(ROOT).as_posix()

    def err(msg: str) -> None:
        errors.append(f"{where}: {msg}")

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        err(f"not JSON: {e}")
        return {}
    if not isinstance(doc.get("family"), str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,255}",
                                                                   doc["family"]):
        err("family is required (letters, digits, - and _)")
    if doc.get("networkMode") != "awsvpc":
        err("networkMode must be awsvpc (Fargate)")
    if "FARGATE" not in (doc.get("requiresCompatibilities") or []):
        err("requiresCompatibilities must include FARGATE")
    try:
        cpu, memory = int(doc.get("cpu")), int(doc.get("memory"))
        if memory not in FARGATE_SIZES.get(cpu, set()):
            err(f"cpu {cpu} / memory {memory} is not a Fargate task size")
    except (TypeError, ValueError):
        err("task-level cpu and memory are required (integers, as strings or numbers)")
    for role in ("taskRoleArn", "executionRoleArn"):
        if not doc.get(role):
            err(f"{role} is required (the application's role; the agent's for ECR and logs)")
    containers = doc.get("containerDefinitions") or []
    if not containers:
        err("containerDefinitions is empty")
    for i, c in enumerate(containers):
        check_container(c, f"{where} container {c.get('name', i)}", errors)

    known = set(outputs) | set(DEPLOY_TIME_VALUES)
    found = renderer.placeholders(doc)
    for name in sorted(found - known):
        err(f"${{{name}}} is not an Output of deploy/cloudformation/*.yaml "
            f"nor a deploy-time value ({', '.join(DEPLOY_TIME_VALUES)})")
    for name in sorted(found & conditional):
        err(f"${{{name}}} is a conditional Output ({outputs[name]}): it may not exist")
    # The renderer fills every placeholder and keeps the document valid JSON.
    if found <= known:
        values = {n: f"value-of-{n}" for n in known}
        rendered = json.dumps(renderer.render(doc, values))
        if "${" in rendered:
            err("a placeholder survives rendering")
    return doc


def main() -> int:
    errors: list[str] = []
    outputs, conditional = template_outputs()
    if not outputs:
        errors.append(f"no Outputs found in {TEMPLATES.relative_to(ROOT)}/*.yaml")
    renderer = load_renderer()
    paths = sorted(TASK_DEFINITIONS.glob("*.task-definition.json"))
    if not paths:
        errors.append(f"no task definitions in {TASK_DEFINITIONS.relative_to(ROOT)}")
    ports: dict[str, set[int]] = {}
    for path in paths:
        doc = check_task_definition(path, outputs, conditional, renderer, errors)
        for c in doc.get("containerDefinitions") or []:
            ports[c.get("name")] = {p.get("containerPort") for p in c.get("portMappings") or []}

    # services.yaml registers containers in load balancers by name and port.
    services = TEMPLATES / "services.yaml"
    if services.is_file():
        text = services.read_text(encoding="utf-8")
        for name, port in re.findall(r"ContainerName:\s*(\S+)\s*\n\s*ContainerPort:\s*(\d+)",
                                     text):
            if int(port) not in ports.get(name, set()):
                errors.append(f"services.yaml: container {name} port {port} is in no task "
                              "definition's portMappings")

    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"check_task_definitions: {len(errors)} problem(s) in {len(paths)} task "
              "definition(s)", file=sys.stderr)
        return 1
    print(f"check_task_definitions: {len(paths)} task definitions OK "
          f"({len(outputs)} template outputs: {', '.join(sorted(outputs))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
