#!/usr/bin/env bash
# Builds the real control plane the realkube tests run (kube-apiserver, kube-controller-manager,
# etcd) from the Go modules pinned in e2e/realkube/go.mod, once per machine, into a cache outside
# the clone keyed by those versions. Exits at once when the binaries are already there. Prints the
# directory that holds them as its last line.
#
# The cache root is ${CONVOY_REALKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/convoy/realkube};
# e2e/kubesim/src/realkube/binaries.rs computes the same path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

version_of() { awk -v m="$1" '$1 == m { print $2; exit }' "$here/go.mod"; }
kube=$(version_of k8s.io/kubernetes)
etcd=$(version_of go.etcd.io/etcd/server/v3)
root=${CONVOY_REALKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/convoy/realkube}
dir=$root/kube-$kube-etcd-$etcd
bin=$dir/bin

built() { [[ -x $bin/kube-apiserver && -x $bin/kube-controller-manager && -x $bin/etcd ]]; }
if built; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
# One build at a time per machine: a second caller waits, then finds the binaries built.
exec 9>"$dir/.lock"
flock 9
if built; then
  echo "$bin"
  exit 0
fi

# Every core (the test script builds this before anything else; set GOFLAGS=-p=1 around it to
# leave cores to other work). No VCS stamp: the programs are keyed by their module versions, and a
# clone need not be a trusted git directory.
export GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0
staging=$dir/.staging
rm -rf "$staging"
mkdir -p "$staging"
# The version the servers report at /version, as Kubernetes' own release build stamps it.
minor=${kube#v1.}
minor=${minor%%.*}
ldflags="-s -w
  -X k8s.io/component-base/version.gitVersion=$kube
  -X k8s.io/component-base/version.gitMajor=1
  -X k8s.io/component-base/version.gitMinor=$minor
  -X k8s.io/component-base/version.gitTreeState=clean
  -X k8s.io/client-go/pkg/version.gitVersion=$kube
  -X k8s.io/client-go/pkg/version.gitMajor=1
  -X k8s.io/client-go/pkg/version.gitMinor=$minor"
start=$SECONDS
cd "$here"
echo "realkube: building kube-apiserver, kube-controller-manager $kube and etcd $etcd into $bin (the first build takes a while: about 30 minutes on one core)" >&2
for program in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager; do
  go build -trimpath -ldflags "$ldflags" -o "$staging/${program##*/}" "$program"
  echo "realkube: built ${program##*/} ($((SECONDS - start))s so far)" >&2
done
go build -trimpath -ldflags "-s -w" -o "$staging/etcd" go.etcd.io/etcd/server/v3
echo "realkube: built etcd ($((SECONDS - start))s)" >&2
rm -rf "$bin"
mv "$staging" "$bin"
echo "$bin"
