#!/usr/bin/env bash
# Build (once) the Kubernetes control-plane and kubelet binaries from Debian's own `kubernetes` source
# package, and cache them together with Debian's etcd, etcdctl and kubectl.
#
#   bash tests/e2e/build-k8s.sh        # prints progress on stderr, the cache's bin dir on stdout
#
# Idempotent: when the cache already holds every binary it does nothing (well under a second).
# Recipe and measurements: docs/testing.md.
#
# Environment:
#   CONDA_STORE_K8S_CACHE    cache root (default /var/cache/conda-store-k8s); binaries end up in
#                            $CONDA_STORE_K8S_CACHE/kubernetes-<debian version>/bin/
#   CONDA_STORE_K8S_VERSION  use/build exactly this Debian version of the `kubernetes` source package
#                            (default: the newest complete cache entry, else the newest in the archive)
#   CONDA_STORE_K8S_WORK     scratch build dir, removed afterwards (default /var/tmp/conda-store-k8s-build)
set -euo pipefail

CACHE_ROOT="${CONDA_STORE_K8S_CACHE:-/var/cache/conda-store-k8s}"
WORK_ROOT="${CONDA_STORE_K8S_WORK:-/var/tmp/conda-store-k8s-build}"
GO_BIN=/usr/lib/go-1.19/bin
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
# Everything a complete cache entry holds (bin/ files, plus the pause source for the node's sandbox image).
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet etcd etcdctl kubectl)
EXTRA_FILES=(src/pause.c)

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# complete DIR: true when DIR holds every cached file.
complete() {
  local dir=$1 f
  for f in "${BINARIES[@]}"; do [[ -x $dir/bin/$f ]] || return 1; done
  for f in "${EXTRA_FILES[@]}"; do [[ -f $dir/$f ]] || return 1; done
}

# Fast path: no apt, no network, no lock.
fast_path() {
  local dir
  if [[ -n ${CONDA_STORE_K8S_VERSION:-} ]]; then
    dir=$CACHE_ROOT/kubernetes-$CONDA_STORE_K8S_VERSION
    complete "$dir" && { echo "$dir/bin"; exit 0; }
    return 0
  fi
  [[ -d $CACHE_ROOT ]] || return 0
  # Newest complete entry first.
  while IFS= read -r dir; do
    [[ -n $dir ]] || continue
    if complete "$CACHE_ROOT/$dir"; then echo "$CACHE_ROOT/$dir/bin"; exit 0; fi
  done < <(cd "$CACHE_ROOT" && find . -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' \
             ! -name '*.tmp.*' -printf '%f\n' | sort -rV)
}
fast_path

[[ $(id -u) == 0 ]] || die "no complete cache in $CACHE_ROOT and not root: run this script as root once"

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
log "taking the build lock $CACHE_ROOT/.build.lock"
flock 9
fast_path # someone else may have finished the build while we waited

T0=$(date +%s)

# --- apt sources: a deb-src twin of the machine's own Debian deb sources -------------------------
SRC_LIST=/etc/apt/sources.list.d/conda-store-k8s-src.sources
have_deb_src() {
  grep -hqsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
  grep -hqsiE '^Types:.*deb-src' /etc/apt/sources.list.d/*.sources
}
add_deb_src() {
  local tmp
  tmp=$(mktemp)
  # One-line format: each Debian `deb` line becomes a deb-src stanza (deb822) with the same
  # URI, suite, components and signed-by key.
  if [[ -f /etc/apt/sources.list ]]; then
    awk '$1 == "deb" && /debian/ {
           i = 2; signed = ""
           if ($2 ~ /^\[/) {
             for (; i <= NF; i++) {
               if ($i ~ /signed-by=/) { signed = $i; sub(/.*signed-by=/, "", signed); sub(/\]$/, "", signed) }
               if ($i ~ /\]$/) { i++; break }
             }
           }
           comps = ""
           for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
           printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n", $i, $(i + 1), comps
           if (signed != "") printf "Signed-By: %s\n", signed
           printf "\n"
         }' /etc/apt/sources.list >>"$tmp"
  fi
  # deb822 format: copy enabled Debian stanzas with Types: deb-src.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f && $f != "$SRC_LIST" ]] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         {
           if ($0 !~ /(^|\n)[Tt]ypes:[^\n]*deb([ \t]|\n|$)/) next
           if ($0 !~ /(^|\n)URIs:[^\n]*debian/) next
           if ($0 ~ /(^|\n)Enabled:[ \t]*no/) next
           out = ""
           n = split($0, lines, "\n")
           for (i = 1; i <= n; i++) {
             if (lines[i] ~ /^#/) continue
             if (lines[i] ~ /^[Tt]ypes:/) lines[i] = "Types: deb-src"
             out = out lines[i] "\n"
           }
           printf "%s\n", out
         }' "$f" >>"$tmp"
  done
  [[ -s $tmp ]] || { rm -f "$tmp"; die "found no Debian deb source line to copy into a deb-src line"; }
  install -m 0644 "$tmp" "$SRC_LIST"
  rm -f "$tmp"
  log "added deb-src sources in $SRC_LIST"
}
if ! have_deb_src; then add_deb_src; fi

log "apt-get update"
apt-get update -qq >/dev/null || die "apt-get update failed"

# --- version --------------------------------------------------------------------------------------
VERSION=${CONDA_STORE_K8S_VERSION:-}
if [[ -z $VERSION ]]; then
  VERSION=$(apt-cache showsrc --only-source kubernetes 2>/dev/null | awk '/^Version:/ {print $2}' | sort -rV | head -n1)
  [[ -n $VERSION ]] || die "apt-cache showsrc kubernetes found no source package (deb-src missing?)"
fi
DEST=$CACHE_ROOT/kubernetes-$VERSION
if complete "$DEST"; then echo "$DEST/bin"; exit 0; fi
log "building Debian kubernetes $VERSION into $DEST"

# --- build dependencies ---------------------------------------------------------------------------
log "apt-get install golang-1.19-go rsync golang-github-modern-go-reflect2-dev dpkg-dev openssl make"
APT_LOG=$(mktemp /tmp/build-k8s-apt.XXXXXX)
apt-get install -y -q --no-install-recommends \
  golang-1.19-go rsync golang-github-modern-go-reflect2-dev dpkg-dev openssl make >"$APT_LOG" 2>&1 \
  || { tail -n 30 "$APT_LOG" >&2; die "apt-get install failed (log: $APT_LOG)"; }
rm -f "$APT_LOG"
[[ -x $GO_BIN/go ]] || die "$GO_BIN/go missing after installing golang-1.19-go"
[[ -f $REFLECT2_SRC/reflect2.go ]] || die "$REFLECT2_SRC/reflect2.go missing"

rm -rf "$WORK_ROOT"
mkdir -p "$WORK_ROOT"
STAGE=$CACHE_ROOT/kubernetes-$VERSION.tmp.$$
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/src"
cleanup() { rm -rf "$STAGE" "$WORK_ROOT"; }
trap cleanup EXIT

# --- etcd, etcdctl, kubectl: Debian's binaries, extracted (no service start, no file conflicts) ----
log "apt-get download etcd-server etcd-client kubernetes-client"
mkdir -p "$WORK_ROOT/debs" "$WORK_ROOT/extract"
# (_apt must be able to write there, or apt warns that it downloads unsandboxed)
chown _apt "$WORK_ROOT/debs" 2>/dev/null || true
(cd "$WORK_ROOT/debs" && apt-get download -qq etcd-server etcd-client kubernetes-client >"$WORK_ROOT/download.log" 2>&1) \
  || { cat "$WORK_ROOT/download.log" >&2; die "apt-get download of etcd-server etcd-client kubernetes-client failed"; }
for deb in "$WORK_ROOT"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK_ROOT/extract"; done
for b in etcd etcdctl kubectl; do
  [[ -x $WORK_ROOT/extract/usr/bin/$b ]] || die "$b not found in the extracted Debian packages"
  install -m 0755 "$WORK_ROOT/extract/usr/bin/$b" "$STAGE/bin/$b"
done

# --- kubernetes source ----------------------------------------------------------------------------
log "apt-get source kubernetes=$VERSION (into $WORK_ROOT)"
(cd "$WORK_ROOT" && apt-get source -qq "kubernetes=$VERSION" >"$WORK_ROOT/apt-get-source.log" 2>&1) \
  || { tail -n 30 "$WORK_ROOT/apt-get-source.log" >&2; die "apt-get source kubernetes=$VERSION failed"; }
SRC=$(find "$WORK_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
[[ -n $SRC && -d $SRC/vendor && -f $SRC/Makefile ]] || die "unpacked source tree without vendor/ or Makefile"
log "source tree: $SRC"

# Upstream version, e.g. 1.20.5+really1.20.2-1.1+deb12u1 -> 1.20.2
UPSTREAM=${VERSION%-*}
UPSTREAM=${UPSTREAM##*really}
UPSTREAM=${UPSTREAM%%[+~]*}
[[ $UPSTREAM =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "cannot derive the upstream version from $VERSION"
cat >"$WORK_ROOT/version.env" <<EOF
KUBE_GIT_COMMIT='0000000000000000000000000000000000000000'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$UPSTREAM'
KUBE_GIT_MAJOR='${BASH_REMATCH[1]}'
KUBE_GIT_MINOR='${BASH_REMATCH[2]}'
EOF

# The vendored reflect2 v1.0.1 crashes the apiserver (Go 1.19) on the first custom-resource create.
log "replacing vendor/github.com/modern-go/reflect2 with v1.0.2 from $REFLECT2_SRC"
find "$SRC/vendor/github.com/modern-go/reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
  -exec cp -t "$SRC/vendor/github.com/modern-go/reflect2/" {} +

install -m 0644 "$SRC/build/pause/linux/pause.c" "$STAGE/src/pause.c"

WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet"
log "make WHAT=\"$WHAT\" (about 15 minutes on two cores; log: $WORK_ROOT/make.log)"
mkdir -p "$WORK_ROOT/gocache" "$WORK_ROOT/gopath"
BUILD_T0=$(date +%s)
(
  cd "$SRC"
  export PATH="$GO_BIN:$PATH" CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on \
    GOCACHE="$WORK_ROOT/gocache" GOPATH="$WORK_ROOT/gopath" KUBE_GIT_VERSION_FILE="$WORK_ROOT/version.env"
  make WHAT="$WHAT"
) >"$WORK_ROOT/make.log" 2>&1 &
MAKE_PID=$!
while kill -0 "$MAKE_PID" 2>/dev/null; do
  sleep 60
  kill -0 "$MAKE_PID" 2>/dev/null && log "still building ($(($(date +%s) - BUILD_T0)) s): $(tail -n1 "$WORK_ROOT/make.log")"
done
if ! wait "$MAKE_PID"; then
  tail -n 40 "$WORK_ROOT/make.log" >&2
  die "make failed"
fi
log "make finished in $(($(date +%s) - BUILD_T0)) s"

OUT=$SRC/_output/local/bin/linux/amd64
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [[ -x $OUT/$b ]] || die "$OUT/$b not built"
  install -m 0755 "$OUT/$b" "$STAGE/bin/$b"
done
"$STAGE/bin/kube-apiserver" --version >&2

complete "$STAGE" || die "staged cache $STAGE is incomplete"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
log "removing the build tree $WORK_ROOT"
cleanup
trap - EXIT
log "done in $(($(date +%s) - T0)) s: $DEST/bin"
echo "$DEST/bin"
