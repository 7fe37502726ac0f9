#!/usr/bin/env bash
# Installs buildah from Debian when it is missing: daemonless image builds, run as root with the
# vfs storage driver. Called by images/build.sh and by e2e/peers.sh (so `bash e2e/test.sh`
# installs it too; e2e/peers.sh also installs docker-registry, which the image test pushes to).
set -euo pipefail
if ! command -v buildah >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "images/tools.sh: buildah is missing and only root can apt-get install it: run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends buildah >/dev/null 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq \
         && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends buildah >/dev/null; }
fi
