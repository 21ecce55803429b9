#!/usr/bin/env bash
# Build a real Kubernetes control plane from the Go module proxy into a versioned cache
# outside the repository. Pieces already built are skipped, so a warm run takes seconds.
# Prints the cache's bin directory on the last line of stdout.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.4}
CACHE_ROOT=${COCOON_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocoon-e2e}
CACHE="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
BIN="$CACHE/bin"
STAGES="$CACHE/kwok-stages"
mkdir -p "$BIN" "$STAGES"
# one build at a time per cache: parallel runs would delete each other's module directory
exec 9>"$CACHE/.build.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
have() { [ -x "$BIN/$1" ]; }

k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
staging_version="v0.${K8S_VERSION#v1.}"
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# k8s_module: a wrapper module in $CACHE/src/kubernetes that requires k8s.io/kubernetes with its
# staging replaces turned into module versions, and the upstream main packages of CMDS in cmd/.
k8s_module() {
  src="$CACHE/src/kubernetes"
  info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  upstream=$(printf '%s' "$info" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  if [ ! -s "$src/go.sum" ]; then
    gomod=$(printf '%s' "$info" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
    rm -rf "$src"; mkdir -p "$src"; cd "$src"
    go mod init cocoon.dev/e2e-control-plane >/dev/null 2>&1
    go_line=$(grep -E '^go [0-9]' "$gomod" | head -1 | awk '{print $2}')
    go mod edit -go="$go_line"
    grep -E '^godebug ' "$gomod" | while read -r _ kv; do go mod edit -godebug="$kv"; done
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | while read -r mod; do
      go mod edit -replace "$mod=$mod@$staging_version"
    done
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  fi
  cd "$src"
  # the upstream main packages, taken from the module itself so they always match the version
  for cmd in "$@"; do
    rm -rf "cmd/$cmd"; mkdir -p "cmd/$cmd"
    find "$upstream/cmd/$cmd" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "cmd/$cmd/" \;
    chmod u+w cmd/"$cmd"/*.go
  done
  go mod tidy >&2
}

k8s_build() {  # k8s_build CMD...: build those upstream commands into $BIN, version-stamped
  local ld="-s -w" pkgs=() cmd
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  for cmd in "$@"; do pkgs+=("./cmd/$cmd"); done
  go build -trimpath -ldflags "$ld" -o "$BIN/" "${pkgs[@]}" >&2
}

control_plane=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
if ! (have kube-apiserver && have kube-controller-manager && have kube-scheduler && have kubectl); then
  log "building ${control_plane[*]} $K8S_VERSION"
  rm -rf "$CACHE/src/kubernetes"
  k8s_module "${control_plane[@]}"
  k8s_build "${control_plane[@]}"
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

# -- a real node: kubelet and kube-proxy from the same module, CoreDNS with only the plugins
# the local stack uses, and the static sleeper that containerd runs as each pod's sandbox.
node=(kubelet kube-proxy)
if ! (have kubelet && have kube-proxy); then
  log "building ${node[*]} $K8S_VERSION"
  k8s_module "${node[@]}"
  k8s_build "${node[@]}"
fi

if ! { have coredns && "$BIN/coredns" -version 2>/dev/null | grep -q "CoreDNS-${COREDNS_VERSION#v}"; }; then
  log "building coredns $COREDNS_VERSION"
  src="$CACHE/src/coredns"
  rm -rf "$src"; mkdir -p "$src"; cd "$src"
  go mod init cocoon.dev/e2e-coredns >/dev/null 2>&1
  cat > main.go <<'GO'
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
  go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" . >&2
fi

if ! have pause; then
  log "building pause"
  src="$CACHE/src/pause"
  rm -rf "$src"; mkdir -p "$src"; cd "$src"
  go mod init cocoon.dev/e2e-pause >/dev/null 2>&1
  cat > main.go <<'GO'
// Command pause holds a pod's namespaces open until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
GO
  go build -trimpath -ldflags "-s -w" -o "$BIN/pause" . >&2
fi

echo "$BIN"
