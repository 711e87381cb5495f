#!/usr/bin/env bash
# Fetches uv, the program that resolves and installs pip sections (the engine's `pip` module),
# from PyPI's `uv` wheel for musl Linux (one static binary), checks the wheel's pinned sha256,
# and prints the binary's path. Cached outside the checkout; idempotent. The Dockerfile fetches
# the same wheel by the same hash; tests/e2e/images.sh copies this binary into the image.
set -euo pipefail
UV_VERSION=0.13.9
UV_WHEEL="uv-$UV_VERSION-py3-none-musllinux_1_1_x86_64.whl"
UV_SHA256=2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
DIR="$CACHE/uv-$UV_VERSION"
if [[ -x $DIR/uv ]] && [[ $("$DIR/uv" --version 2>/dev/null) == "uv $UV_VERSION"* ]]; then
  echo "$DIR/uv"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/uv-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
  --platform musllinux_1_1_x86_64 --python-version 3.11 "uv==$UV_VERSION" -d "$work" >&2
echo "$UV_SHA256  $work/$UV_WHEEL" | sha256sum --check --quiet - >&2 ||
  { echo "install-uv: $UV_WHEEL does not have the pinned sha256" >&2; exit 1; }
python3 - "$work/$UV_WHEEL" "$work/uv" "$UV_VERSION" <<'PY'
import sys, zipfile
wheel, out, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
    f.write(z.read(f"uv-{version}.data/scripts/uv"))
PY
chmod 0755 "$work/uv"
mkdir -p "$DIR"
mv "$work/uv" "$DIR/uv"
echo "$DIR/uv"
