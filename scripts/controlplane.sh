#!/usr/bin/env bash
# Builds the test control plane (etcd + kube-apiserver from their Go
# modules, tests/controlplane) into .tools/bin/controlplane. Skips the
# build when the binary matches the sources (a stamp of their hashes).
# The first build downloads the modules and compiles kube-apiserver: about
# 8 minutes on 2 cores; later builds reuse Go's module and build caches.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "Go is needed to build the test control plane (tests/controlplane); this machine has none" >&2
  exit 1
fi

src=tests/controlplane
out=.tools/bin/controlplane
stamp=.tools/bin/controlplane.stamp
want="$(go version) $(cat "$0" "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -d' ' -f1)"
if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "control plane up to date: $out"
  exit 0
fi
mkdir -p .tools/bin
start=$(date +%s)
# The server reports the release it was built from (helm checks a chart's
# kubeVersion against it); module builds carry no version stamp otherwise.
version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$src/go.mod")
minor=$(echo "$version" | cut -d. -f2)
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
(cd "$src" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "$ldflags" -o "../../$out" .)
echo "$want" > "$stamp"
echo "built $out in $(( $(date +%s) - start )) s"
