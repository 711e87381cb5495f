#!/usr/bin/env bash
# Fetches conda-store-ui, the upstream web UI the gateway serves at {prefix}/ui/ (npm
# @conda-store/conda-store-ui, its built standalone bundle in dist/), checks the tarball against
# its pinned npm integrity (sha512), and prints the directory holding index.html, main.js and
# main.css. Cached outside the checkout; idempotent. The Dockerfile fetches the same tarball by
# the same hash; tests/e2e/images.sh copies this directory into the image.
set -euo pipefail
UI_VERSION=2024.11.1
UI_SHA512=E78O3ezyrzAyMPkydTvZJdpKj63kKtCKF6bSZ1R+x8olre8vTo/4LyZdlf6VAPebeNYqGos5ENcEJF6JYr9aRA==
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
DIR="$CACHE/conda-store-ui-$UI_VERSION"
if [[ -f $DIR/main.js && -f $DIR/.complete ]]; then
  echo "$DIR"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/conda-store-ui.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@conda-store/conda-store-ui@$UI_VERSION" >/dev/null)
tgz="$work/conda-store-conda-store-ui-$UI_VERSION.tgz"
[[ $(openssl dgst -sha512 -binary "$tgz" | base64 -w0) == "$UI_SHA512" ]] ||
  { echo "install-ui: the conda-store-ui $UI_VERSION tarball does not have the pinned sha512" >&2; exit 1; }
tar -xzf "$tgz" -C "$work" package/dist/index.html package/dist/main.js package/dist/main.css \
  package/dist/main.js.LICENSE.txt package/LICENSE
rm -rf "$DIR.new" && mkdir -p "$DIR.new"
cp "$work"/package/dist/* "$work/package/LICENSE" "$DIR.new/"
touch "$DIR.new/.complete"
rm -rf "$DIR" && mv "$DIR.new" "$DIR"
echo "$DIR"
