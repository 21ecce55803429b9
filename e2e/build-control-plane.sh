#!/usr/bin/env bash
# Build a real Kubernetes control plane from the Go module proxy into a versioned cache
# outside the repository. Pieces already built are skipped, so a warm run takes seconds.
# Prints the cache's bin directory on the last line of stdout.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
CACHE_ROOT=${COCOON_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocoon-e2e}
CACHE="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
BIN="$CACHE/bin"
STAGES="$CACHE/kwok-stages"
mkdir -p "$BIN" "$STAGES"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
have() { [ -x "$BIN/$1" ]; }

k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
staging_version="v0.${K8S_VERSION#v1.}"
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

if ! (have kube-apiserver && have kube-controller-manager && have kube-scheduler && have kubectl); then
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION"
  src="$CACHE/src/kubernetes"
  rm -rf "$src"; mkdir -p "$src/cmd"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
  cd "$src"
  info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  gomod=$(printf '%s' "$info" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  upstream=$(printf '%s' "$info" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  go mod init cocoon.dev/e2e-control-plane >/dev/null 2>&1
  go_line=$(grep -E '^go [0-9]' "$gomod" | head -1 | awk '{print $2}')
  go mod edit -go="$go_line"
  grep -E '^godebug ' "$gomod" | while read -r _ kv; do go mod edit -godebug="$kv"; done
  grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | while read -r mod; do
    go mod edit -replace "$mod=$mod@$staging_version"
  done
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  # the upstream main packages, taken from the module itself so they always match the version
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    find "$upstream/cmd/$cmd" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "cmd/$cmd/" \;
    chmod u+w cmd/$cmd/*.go
  done
  go mod tidy >&2
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  go build -trimpath -ldflags "$ld" -o "$BIN/" ./cmd/... >&2
fi

if ! have etcd; then
  log "building etcd $ETCD_VERSION"
  src="$CACHE/src/etcd"
  rm -rf "$src"; mkdir -p "$src"; cd "$src"
  go mod init cocoon.dev/e2e-etcd >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" . >&2
fi

if ! have kwok; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
fi
if [ ! -s "$STAGES/stages.yaml" ]; then
  stage_dir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  [ -d "$stage_dir" ] || go mod download "sigs.k8s.io/kwok@$KWOK_VERSION"
  # the default node and pod lifecycle stages, one multi-document file
  find "$stage_dir" -name '*.yaml' ! -name 'kustomization.yaml' ! -path '*/testdata/*' \
    \( -path '*/node/fast/*' -o -path '*/node/heartbeat-with-lease/*' -o -path '*/pod/fast/*' \) \
    | sort > "$STAGES/list"
  : > "$STAGES/stages.yaml.tmp"
  while read -r f; do printf -- '---\n' >> "$STAGES/stages.yaml.tmp"; cat "$f" >> "$STAGES/stages.yaml.tmp"; done < "$STAGES/list"
  mv "$STAGES/stages.yaml.tmp" "$STAGES/stages.yaml"
fi

if ! have helm; then
  log "building helm $HELM_VERSION"
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi

echo "$BIN"
