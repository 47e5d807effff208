#!/usr/bin/env bash
# Install the CI tools (currently only cargo-audit) into a cache outside the clone, idempotently.
#
#   scripts/install-tools.sh            # installs what is missing, prints the bin dir
#   export PATH="$(scripts/install-tools.sh --print-bin-dir):$PATH"
#
# Tools go to ${KINESIS_RS_TOOLS:-$HOME/.cache/kinesis-rs-tools} with `cargo install --locked --root`, so a
# CI run on the same machine after a session reuses them (a cold cargo-audit build took 10m20s here on
# 2 cores while other builds ran; 4-9 min on a quiet machine). Already installed: ~0.1 s.
# A pinned version already present there is not rebuilt. The last line on stdout is the bin dir to put on
# PATH; progress goes to stderr.
#
# Pins: cargo-audit 0.22.2 (newest on crates.io as of 2026-11, rust-version 1.88: builds on our 1.95).
# Built without default features: `binary-scanning` (auditing compiled binaries) is not used here and
# pulls in object/syn for nothing.
set -euo pipefail

TOOLS_ROOT="${KINESIS_RS_TOOLS:-$HOME/.cache/kinesis-rs-tools}"
BIN_DIR="$TOOLS_ROOT/bin"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
    echo "$BIN_DIR"
    exit 0
fi

# name version [extra cargo install args...]
TOOLS=(
    "cargo-audit 0.22.2 --no-default-features"
)

log() { echo "install-tools: $*" >&2; }

installed_version() {
    # `cargo install --list --root` prints lines like "cargo-audit v0.22.2:".
    local name="$1"
    cargo install --list --root "$TOOLS_ROOT" 2>/dev/null |
        awk -v n="$name" '$1 == n { v = $2; sub(/^v/, "", v); sub(/:$/, "", v); print v }'
}

mkdir -p "$TOOLS_ROOT"
for entry in "${TOOLS[@]}"; do
    read -r name version extra <<<"$entry"
    have="$(installed_version "$name")"
    if [[ "$have" == "$version" && -x "$BIN_DIR/$name" ]]; then
        log "$name $version already installed in $BIN_DIR"
        continue
    fi
    log "installing $name $version into $TOOLS_ROOT (was: ${have:-none}); this can take several minutes"
    start=$SECONDS
    # A separate target dir so that a shared CARGO_TARGET_DIR is not polluted, and --force so a
    # different installed version is replaced.
    # shellcheck disable=SC2086
    CARGO_TARGET_DIR="$TOOLS_ROOT/build" cargo install --locked --force --root "$TOOLS_ROOT" \
        "$name" --version "=$version" $extra
    rm -rf "$TOOLS_ROOT/build"
    log "installed $name $version in $((SECONDS - start)) s"
done

echo "$BIN_DIR"
