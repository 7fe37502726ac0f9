#!/usr/bin/env bash
# Installs what building, pushing and checking the container images needs, from Debian, when it
# is missing: buildah (daemonless builds, run as root with the vfs storage driver) and
# docker-registry (a local OCI registry the image test pushes to and pulls back from by digest).
# Called by images/build.sh and by e2e/peers.sh (so `bash e2e/test.sh` installs it too).
set -euo pipefail
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "images/tools.sh: ${missing[*]} missing and only root can apt-get install them: run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
