#!/usr/bin/env bash
# `helm template` without helm: builds tools/helm-template (Go's text/template + sprig v3,
# the libraries Helm itself uses, from Debian packages) once into a cache outside the
# checkout, keyed by the hash of its source, then runs it with all arguments:
#   scripts/helm-template.sh [NAME] CHART_DIR [--values F]... [--set k=v]... [--namespace NS] \
#     [--release NAME] [--include-crds] ...
# Why: helm itself cannot be installed here (get.helm.sh is unreachable), Debian's Go
# packages are. The Go build runs in GOPATH mode against /usr/share/gocode (no module
# proxy needed); see tools/helm-template/main.go for the semantics.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tools/helm-template/main.go"
CACHE="${CONDA_STORE_K8S_CACHE_HOME:-$HOME/.cache/conda-store-k8s}/tools"
GO=/usr/lib/go-1.19/bin/go
mapfile -t PACKAGES < <(grep -v '^#' "$ROOT/tools/helm-template/debian-packages")

log() { printf 'helm-template.sh: %s\n' "$*" >&2; }

install_packages() {
  local missing=() pkg sudo=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
}

build() {
  local pkgdir start
  tmp="$(mktemp -d "$CACHE/.build.XXXXXX")"
  # GOPATH mode resolves the /v3 import paths (sprig/v3, semver/v3) to Debian's unversioned
  # source directories only for code that sits inside a GOPATH and has a go.mod next to it
  # (Go's "minimal module compatibility"), hence the throwaway GOPATH and marker go.mod.
  pkgdir="$tmp/gopath/src/helm-template"
  mkdir -p "$pkgdir"
  cp "$SRC" "$pkgdir/main.go"
  printf 'module helm-template\n\ngo 1.19\n' >"$pkgdir/go.mod"
  log "building $(basename "$BIN") (first run after a change to main.go)"
  start=$SECONDS
  (cd "$pkgdir" && env GO111MODULE=off GOFLAGS= GOPROXY=off GOENV=off GOTOOLCHAIN=local \
    GOPATH="$tmp/gopath:/usr/share/gocode" GOCACHE="$CACHE/go-build" CGO_ENABLED=0 \
    "$GO" build -p 2 -trimpath -o "$tmp/helm-template" .) >&2
  mv -f "$tmp/helm-template" "$BIN" # atomic: same filesystem
  rm -rf "$tmp"
  log "built in $((SECONDS - start))s"
}

tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT # a failed build leaves nothing behind
hash="$(sha256sum "$SRC" | cut -c1-12)"
BIN="$CACHE/helm-template-$hash"
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/helm-template.lock"
  flock 9 # a concurrent run builds; we wait, then find the binary
  if [ ! -x "$BIN" ]; then
    install_packages
    build
  fi
  exec 9>&-
fi
exec "$BIN" "$@"
