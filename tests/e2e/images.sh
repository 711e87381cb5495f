#!/usr/bin/env bash
# Container images for the local node, built without docker or a registry: a rootfs directory becomes a
# single-layer docker-archive tar (layer tar + sha256sum + JSON), cached outside the checkout, then
# imported into the node's containerd with `ctr -n k8s.io images import`.
#
#   bash tests/e2e/images.sh build NAME    # build (once) and print the cached tar's path
#   bash tests/e2e/images.sh ref NAME      # print the image reference (pods use imagePullPolicy: Never)
#   bash tests/e2e/images.sh import NAME   # build, import into the running cluster's containerd
#                                          # ($CONDA_STORE_CLUSTER_DIR, node started), print the reference
# NAME:
#   pause    the sandbox image: build/pause/linux/pause.c from the cached Kubernetes source, gcc -static
#   busybox  Debian's busybox-static (/bin/busybox and /bin/sh), PATH set: `busybox sh -c ...` works
#   conda-store  the project's image: the operator and gateway binaries ($CONDA_STORE_OPERATOR_BIN,
#            $CONDA_STORE_API_SERVER_BIN, default the debug builds in the shared target dir), debug
#            info stripped, the shared libraries ldd names, CA certificates, non-root user 65532,
#            no shell; built by the operator's own OCI writer. The tag is the binaries' digest.
#
# Environment: CONDA_STORE_K8S_CACHE (default /var/cache/conda-store-k8s; tars go to its images/ dir),
# CONDA_STORE_CLUSTER_DIR (default /tmp/conda-store-cluster; only for `import`).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${CONDA_STORE_K8S_CACHE:-/var/cache/conda-store-k8s}
IMAGES=$CACHE_ROOT/images
REPO=localhost/conda-store-test

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sha256() { sha256sum "$1" | awk '{print $1}'; }

# docker_archive ROOTFS REF CONFIG_JSON_FRAGMENT OUT: a single-layer docker-archive (what `docker save`
# writes) of ROOTFS tagged REF; the fragment is the image config's "config" object (Entrypoint, Env...).
docker_archive() {
  local rootfs=$1 ref=$2 config=$3 out=$4 work layer_sha config_sha
  work=$(mktemp -d "$IMAGES/.work.XXXXXX")
  # Reproducible layer: sorted, owned by root, timestamps at the epoch.
  tar --create --file "$work/layer.tar" --directory "$rootfs" --sort=name --numeric-owner \
    --owner=0 --group=0 --mtime=@0 --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
  layer_sha=$(sha256 "$work/layer.tar")
  mkdir -p "$work/archive/$layer_sha"
  mv "$work/layer.tar" "$work/archive/$layer_sha/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/e2e/images.sh"}]}' \
    "$config" "$layer_sha" >"$work/config.json"
  config_sha=$(sha256 "$work/config.json")
  mv "$work/config.json" "$work/archive/$config_sha.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' \
    "$config_sha" "$ref" "$layer_sha" >"$work/archive/manifest.json"
  tar --create --file "$work/image.tar" --directory "$work/archive" --sort=name --numeric-owner \
    --owner=0 --group=0 --mtime=@0 manifest.json "$config_sha.json" "$layer_sha"
  mv "$work/image.tar" "$out" # atomic: a cached tar is always complete
  rm -rf "$work"
}

pause_src() {
  local bin
  bin=$(bash "$HERE/build-k8s.sh") || die "build-k8s.sh failed"
  echo "${bin%/bin}/src/pause.c"
}

# The tag carries a digest of the inputs, so a changed input never reuses an old image in containerd.
pause_ref() { echo "$REPO/pause:$(sha256 "$(pause_src)" | cut -c1-12)"; }
busybox_version() {
  apt-cache policy busybox-static 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g'
}
busybox_ref() {
  local v
  v=$(busybox_version)
  [[ -n $v && $v != '(none)' ]] || die "apt-cache knows no busybox-static (run apt-get update?)"
  echo "$REPO/busybox:$v"
}

target_dir() { echo "${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}"; }
operator_bin() { echo "${CONDA_STORE_OPERATOR_BIN:-$(target_dir)/debug/conda-store-operator}"; }
api_server_bin() { echo "${CONDA_STORE_API_SERVER_BIN:-$(target_dir)/debug/conda-store-api-server}"; }
# uv (static), which the solve and install steps run for pip sections: the pinned wheel's binary.
uv_bin() { echo "${CONDA_STORE_UV_BIN:-$(bash "$HERE/../../scripts/install-uv.sh")}"; }
# conda-store-ui's bundle, which the gateway serves at {prefix}ui/: the pinned npm tarball's dist/.
ui_dir() { echo "${CONDA_STORE_UI_BUNDLE:-$(bash "$HERE/../../scripts/install-ui.sh")}"; }
conda-store_ref() {
  local op api uv ui
  op=$(operator_bin) api=$(api_server_bin) uv=$(uv_bin) ui=$(ui_dir)
  [[ -x $op ]] || die "no operator binary at $op (cargo build -p conda-store-operator)"
  [[ -x $api ]] || die "no gateway binary at $api (cargo build -p conda-store-api-server)"
  [[ -x $uv ]] || die "no uv at $uv (scripts/install-uv.sh)"
  [[ -f $ui/main.js ]] || die "no conda-store-ui bundle in $ui (scripts/install-ui.sh)"
  echo "$REPO/conda-store:$(cat "$op" "$api" "$uv" "$ui/main.js" | sha256sum | cut -c1-12)"
}

# The project's image, as the Dockerfile describes it (binaries in /usr/local/bin, user 65532,
# entrypoint the operator, no shell), written by the project's own OCI writer
# (`conda-store-operator rootfs-image`, the image step's layer code) instead of docker: a runtime
# layer (the dynamic loader and the libraries the binaries link, CA certificates, passwd) under
# a layer for each binary (uv's with the operator's), written in parallel at gzip level 1 (the image is only imported). Imported as an OCI archive named by its io.containerd.image.name.
build_conda-store() {
  local ref=$1 out=$2 op api work lib bin layer
  op=$(operator_bin) api=$(api_server_bin)
  work=$(mktemp -d "$IMAGES/.work.XXXXXX")
  mkdir -p "$work/runtime/etc/ssl/certs" "$work/runtime/tmp" "$work/runtime/home/conda-store" \
    "$work/operator/usr/local/bin" "$work/api-server/usr/local/bin" "$work/layout"
  chmod 1777 "$work/runtime/tmp"
  for bin in "$op" "$api"; do
    layer=$work/$(basename "$bin" | sed 's/^conda-store-//')/usr/local/bin
    strip --strip-debug -o "$layer/$(basename "$bin")" "$bin" 2>/dev/null || cp "$bin" "$layer/"
    # The dynamic loader and every library the binary links, at the paths the binary expects.
    while read -r lib; do
      mkdir -p "$work/runtime$(dirname "$lib")"
      cp -L "$lib" "$work/runtime$lib"
    done < <(ldd "$bin" | grep -o '/[^ ]*' | sort -u)
  done
  cp "$(uv_bin)" "$work/operator/usr/local/bin/uv"
  mkdir -p "$work/api-server/usr/share/conda-store-ui"
  cp "$(ui_dir)"/{index.html,main.js,main.css,main.js.LICENSE.txt,LICENSE} "$work/api-server/usr/share/conda-store-ui/"
  cp -L /etc/ssl/certs/ca-certificates.crt "$work/runtime/etc/ssl/certs/" 2>/dev/null || true
  printf 'root:x:0:0:root:/root:/sbin/nologin\nconda-store:x:65532:65532::/home/conda-store:/sbin/nologin\n' >"$work/runtime/etc/passwd"
  printf 'root:x:0:\nconda-store:x:65532:\n' >"$work/runtime/etc/group"
  chown 65532:65532 "$work/runtime/home/conda-store"
  "$op" rootfs-image "$work/runtime" "$work/operator" "$work/api-server" --compression-level 1 --layout "$work/layout" \
    --tag "${ref##*:}" --reference "$ref" --entrypoint /usr/local/bin/conda-store-operator \
    --user 65532:65532 --env PATH=/usr/local/bin:/usr/bin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.title=conda-store-k8s >/dev/null \
    || { rm -rf "$work"; die "rootfs-image failed"; }
  tar --create --file "$work/image.tar" --directory "$work/layout" --sort=name --numeric-owner \
    --owner=0 --group=0 --mtime=@0 .
  mv "$work/image.tar" "$out" # atomic: a cached tar is always complete
  rm -rf "$work"
  # One image of the binaries at a time: older ones would pile up with every build.
  find "$IMAGES" -maxdepth 1 \( -name 'conda-store-*.tar' -o -name 'operator-*.tar' \) ! -name "$(basename "$out")" -delete
}

build_pause() {
  local ref=$1 out=$2 src work
  src=$(pause_src)
  command -v gcc >/dev/null || die "gcc is missing (apt-get install gcc libc6-dev)"
  work=$(mktemp -d "$IMAGES/.work.XXXXXX")
  mkdir -p "$work/rootfs"
  gcc -Os -static -Wall -o "$work/rootfs/pause" "$src" -DVERSION=conda-store-test >&2 \
    || { rm -rf "$work"; die "gcc -static $src failed (is libc6-dev installed?)"; }
  strip "$work/rootfs/pause" 2>/dev/null || true
  docker_archive "$work/rootfs" "$ref" '{"Entrypoint":["/pause"],"User":"65535:65535"}' "$out"
  rm -rf "$work"
}

build_busybox() {
  local ref=$1 out=$2 work deb
  work=$(mktemp -d "$IMAGES/.work.XXXXXX")
  chown _apt "$work" 2>/dev/null || true
  (cd "$work" && apt-get download -qq busybox-static >"$work/download.log" 2>&1) \
    || { cat "$work/download.log" >&2; rm -rf "$work"; die "apt-get download busybox-static failed"; }
  deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n1)
  dpkg-deb -x "$deb" "$work/extract"
  mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/dev" \
    "$work/rootfs/proc" "$work/rootfs/sys"
  chmod 1777 "$work/rootfs/tmp"
  install -m 0755 "$work/extract/bin/busybox" "$work/rootfs/bin/busybox"
  ln -s busybox "$work/rootfs/bin/sh"
  docker_archive "$work/rootfs" "$ref" \
    '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}' "$out"
  rm -rf "$work"
}

# build NAME: print the cached tar (building it first when missing).
build() {
  local name=$1 ref out
  case $name in pause | busybox | conda-store) ;; *) die "unknown image '$name' (pause, busybox, conda-store)" ;; esac
  ref=$("${name}_ref")
  out=$IMAGES/$name-${ref##*:}.tar
  if [[ ! -s $out ]]; then
    mkdir -p "$IMAGES"
    exec 7>"$IMAGES/.build.lock"
    flock 7
    if [[ ! -s $out ]]; then
      log "building $ref into $out"
      "build_$name" "$ref" "$out"
    fi
    exec 7>&-
  fi
  echo "$out"
}

# import NAME: into the cluster's containerd (namespace k8s.io, where the CRI plugin looks).
import() {
  local name=$1 tar ref state=${CONDA_STORE_CLUSTER_DIR:-/tmp/conda-store-cluster}
  state=${state%/}
  [[ -f $state/node.env ]] || die "no node in $state (start it with: cluster.sh up --node)"
  # shellcheck source=/dev/null
  source "$state/node.env"
  tar=$(build "$name")
  ref=$("${name}_ref")
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --all-platforms "$tar" >/dev/null \
    || die "ctr images import $tar failed"
  # grep reads all of it (not -q): an early exit would make ctr die of SIGPIPE, and pipefail
  # would then report a present image as missing.
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -xF "$ref" >/dev/null \
    || die "$ref not in containerd after importing $tar"
  echo "$ref"
}

[[ $# == 2 ]] || { echo "usage: $0 build|ref|import pause|busybox|conda-store" >&2; exit 2; }
case $1 in
  build) build "$2" ;;
  ref) case $2 in pause | busybox | conda-store) "${2}_ref" ;; *) die "unknown image '$2'" ;; esac ;;
  import) import "$2" ;;
  *) echo "usage: $0 build|ref|import pause|busybox|conda-store" >&2; exit 2 ;;
esac
