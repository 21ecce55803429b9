#!/usr/bin/env bash
# Build every image in images/ with buildah, without a container registry: the base images are
# Debian root filesystems made by mmdebstrap from the machine's own apt mirror, the Dockerfiles
# build unchanged on them (their base is a build argument), and each image is exported as a
# docker-archive into a versioned cache outside the repository.
#
# An image is rebuilt only when its inputs change: the Dockerfile, its .dockerignore, the files
# it copies, its base image and the version. Prints the archive directory on the last line.
# Needs root, buildah and mmdebstrap (`make setup` installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/cocoon/Chart.yaml)}
REGISTRY=${REGISTRY:-ghcr.io/cocoon-k8s}
SUITE=${SUITE:-bookworm}
CACHE=${COCOON_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocoon-images}
ARCHIVES="$CACHE/$VERSION"
STORE=(--root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver overlay)
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$ARCHIVES" "$CACHE/base"

log() { printf '[images] %s\n' "$*" >&2; }
sha() { sha256sum | cut -c1-16; }
bah() { buildah "${STORE[@]}" "$@"; }

# The first Debian mirror in the machine's apt sources (deb822 or one-line format).
mirror() {
  local uri
  uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security | head -1 || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
          /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# base NAME PACKAGES: a minbase Debian root filesystem with PACKAGES, committed as
# localhost/cocoon-base-NAME:SUITE-HASH; the tag is printed. Reused while the inputs match.
base() {
  local name=$1 packages=$2 url tag ctr
  url=$(mirror)
  tag="localhost/cocoon-base-$name:$SUITE-$(printf '%s|%s|%s' "$SUITE" "$packages" "$url" | sha)"
  if ! bah inspect --type image "$tag" >/dev/null 2>&1; then
    log "base $name: mmdebstrap $SUITE ($packages) from $url"
    local rootfs="$CACHE/base/$name.tar"
    mmdebstrap --quiet --variant=minbase --include="$packages" --format=tar \
      "$SUITE" "$rootfs" "deb $url $SUITE main" >&2
    ctr=$(bah from scratch)
    bah add "$ctr" "$rootfs" / >/dev/null
    bah config --env PATH=/usr/local/bin:/usr/bin:/bin --cmd /bin/bash "$ctr"
    bah commit --quiet --rm "$ctr" "$tag" >/dev/null
    rm -f "$rootfs"
  fi
  echo "$tag"
}

# image NAME DOCKERFILE "ARG=BASE..." CONTEXT_PATH...: build, tag REGISTRY/NAME:VERSION and
# export NAME.tar unless the archive's recorded inputs are unchanged.
image() {
  local name=$1 dockerfile=$2 bases=$3; shift 3
  local ref="$REGISTRY/$name:$VERSION" archive="$ARCHIVES/$name.tar" inputs pair args=()
  for pair in $bases; do args+=(--build-arg "$pair"); done
  inputs=$( {
    echo "$ref"
    for pair in $bases; do bah inspect --type image --format '{{.FromImageID}}' "${pair#*=}"; done
    sha256sum "$dockerfile" "$dockerfile.dockerignore" images/build.sh
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*/node_modules/*' \
      -print0 | sort -z | xargs -0 sha256sum
  } | sha)
  if [ -s "$archive" ] && [ "$(cat "$archive.inputs" 2>/dev/null)" = "$inputs" ]; then
    log "$ref: unchanged (inputs $inputs)"
    return
  fi
  log "$ref: building ($dockerfile with $bases)"
  bah bud --quiet --layers --format docker --network host --pull-never \
    --volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
    "${args[@]}" \
    --ignorefile "$dockerfile.dockerignore" \
    -f "$dockerfile" -t "$ref" . >&2
  rm -f "$archive" "$archive.inputs"
  bah push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >&2
  mv "$archive.tmp" "$archive"
  echo "$inputs" > "$archive.inputs"
}

python_base=$(base python "python3,python3-venv,python3-pip,libpython3.11,python-is-python3,ca-certificates")
node_build_base=$(base node-build "nodejs,npm,ca-certificates")
node_base=$(base node "nodejs,ca-certificates")

image cocoon images/Dockerfile "PYTHON_IMAGE=$python_base" pyproject.toml README.md operator
image cocoon-triton images/triton.Dockerfile "PYTHON_IMAGE=$python_base" images/triton.Dockerfile
image cocoon-chain-emulator images/chain-emulator.Dockerfile \
  "NODE_IMAGE=$node_build_base NODE_RUNTIME_IMAGE=$node_base" \
  contracts/package.json contracts/package-lock.json contracts/emulator

echo "$ARCHIVES"
