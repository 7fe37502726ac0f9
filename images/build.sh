#!/usr/bin/env bash
# Builds the container images of convoy-hub, convoy-agent and the convoy CLI without a daemon
# (buildah, vfs storage, as root), from scratch: the stripped release binary, the glibc libraries
# it links and the dynamic loader (copied from this host), CA roots, NSS config for /etc/hosts and
# DNS, /etc/passwd with the non-root user 65532 the image runs as, and an SPDX SBOM of the crates
# and Debian packages it holds (/sbom.spdx.json, and next to the image in target/images/).
#
#   bash images/build.sh [OPTIONS] [hub|agent|cli]...     (default: all three)
#     --bin-dir DIR   take the binaries from DIR instead of building them (release; the agent with
#                     its `agent` profile, for size) (the e2e test
#                     builds the agent image from its debug binary)
#     --tag TAG       image tag (default: the crates' version, which is the charts' appVersion)
#     --registry R    repository prefix (default ghcr.io/convoy, as the charts expect)
#     --root DIR      buildah storage root (default: buildah's own, /var/lib/containers/storage)
#
# Images are named R/convoy-hub, R/convoy-agent and R/convoy-cli. Nothing is pulled; push with
# `buildah push --storage-driver vfs --digestfile FILE R/convoy-agent:TAG docker://…`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir="" tag="" registry="${CONVOY_IMAGE_REGISTRY:-ghcr.io/convoy}" components=()
buildah=(buildah --storage-driver vfs)
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$(realpath "$2")"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --registry) registry="$2"; shift 2 ;;
    --root) buildah+=(--root "$2" --runroot "$2/run"); shift 2 ;;
    hub|agent|cli) components+=("$1"); shift ;;
    *) echo "images/build.sh: unknown argument '$1' (components: hub, agent, cli; options: --bin-dir, --tag, --registry, --root)" >&2; exit 64 ;;
  esac
done
[ ${#components[@]} -gt 0 ] || components=(hub agent cli)
if [ "$(id -u)" != 0 ]; then
  echo "images/build.sh: buildah's vfs storage needs root here (no rootless setup): run as root" >&2
  exit 1
fi
bash images/tools.sh

target="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target/images"
mkdir -p "$out"
triple="$(rustc -vV | sed -n 's/^host: //p')"
metadata="$(cargo metadata --format-version 1 --locked --filter-platform "$triple")"
read -r version license < <(python3 -c 'import json, sys
agent = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "convoy-agent")
print(agent["version"], agent["license"])' <<<"$metadata")
tag="${tag:-$version}"
revision="$(git rev-parse HEAD)"
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
# Reproducible: every timestamp in the image is the commit's (or SOURCE_DATE_EPOCH).
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
source_url="${CONVOY_IMAGE_SOURCE:-https://github.com/convoy/convoy}"

package_of() { case "$1" in hub) echo convoy-hub ;; agent) echo convoy-agent ;; cli) echo convoy-cli ;; esac; }
binary_of() { case "$1" in hub) echo convoy-hub ;; agent) echo convoy-agent ;; cli) echo convoy ;; esac; }
mb() { awk -v bytes="$1" 'BEGIN { printf "%.1f MB", bytes / 1e6 }'; }

# The agent is built with its own profile (for size: see Cargo.toml), the others for release.
profile_of() { case "$1" in agent) echo agent ;; *) echo release ;; esac; }
if [ -z "$bin_dir" ]; then
  for profile in release agent; do
    cargo_args=()
    for c in "${components[@]}"; do
      [ "$(profile_of "$c")" = "$profile" ] && cargo_args+=(-p "$(package_of "$c")" --bin "$(binary_of "$c")")
    done
    [ ${#cargo_args[@]} -eq 0 ] || cargo build --profile "$profile" --locked "${cargo_args[@]}"
  done
fi

for c in "${components[@]}"; do
  package="$(package_of "$c")" binary="$(binary_of "$c")" image="convoy-$c"
  from="${bin_dir:-$target/$(profile_of "$c")}"
  [ -x "$from/$binary" ] || { echo "images/build.sh: $from/$binary is missing: build it first or drop --bin-dir" >&2; exit 1; }
  context="$out/context-$image"
  rm -rf "$context"
  mkdir -p "$context/rootfs/etc/convoy" "$context/volume"
  cp -a images/rootfs/. "$context/rootfs/"
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
  strip --strip-all -o "$context/rootfs/$binary" "$from/$binary"
  chmod 0755 "$context/rootfs/$binary"
  # The shared libraries the binary links and the dynamic loader, at the paths the loader looks.
  libraries=()
  while read -r lib; do
    libraries+=("$lib")
    install -D -m 0755 "$lib" "$context/rootfs$lib"
  done < <(ldd "$from/$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
  # The Containerfile copies `volume/` (empty) to each volume's mount point, owned by the
  # image's user; its parents come from rootfs/, owned by root.
  for dir in $(sed -n 's|^COPY --chown=65532:65532 volume/ \(.*\)/$|\1|p' "images/Containerfile.$c"); do
    mkdir -p "$context/rootfs$(dirname "$dir")"
  done
  python3 images/sbom.py --package "$package" --lockfile Cargo.lock --created "$created" --revision "$revision" \
    --source "$source_url" "${libraries[@]}" /etc/ssl/certs/ca-certificates.crt=ca-certificates \
    <<<"$metadata" >"$context/rootfs/sbom.spdx.json"
  cp "$context/rootfs/sbom.spdx.json" "$out/$image-$tag.spdx.json"
  ref="$registry/$image:$tag"
  "${buildah[@]}" bud --quiet --identity-label=false --timestamp "$epoch" --iidfile "$out/$image-$tag.id" --file "images/Containerfile.$c" --tag "$ref" \
    --label org.opencontainers.image.source="$source_url" \
    --label org.opencontainers.image.revision="$revision" \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.created="$created" \
    --label org.opencontainers.image.licenses="$license" \
    "$context" >/dev/null
  size="$(du -sb "$context/rootfs" | cut -f1)"
  echo "built $ref (image $(sed 's/^sha256://' "$out/$image-$tag.id" | cut -c1-12)): $(mb "$size") uncompressed," \
    "of which $binary $(mb "$(stat -c %s "$context/rootfs/$binary")") and ${#libraries[@]} libraries; SBOM $out/$image-$tag.spdx.json"
done
