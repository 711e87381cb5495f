# shellcheck shell=bash
# Sourced by the benchmark scripts: the baselines' virtualenv outside the checkout
# ($CONDA_STORE_CACHE/bench-venv), installed idempotently at pinned versions. Sets VENV.
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
VENV="$CACHE/bench-venv"
PY_RATTLER_VERSION="0.28.0"
CONDA_PACK_VERSION="0.9.2"
ZSTANDARD_VERSION="0.25.0"
if ! "$VENV/bin/python" - <<PY 2>/dev/null
import sys
from importlib.metadata import version
want = {"py-rattler": "$PY_RATTLER_VERSION", "conda-pack": "$CONDA_PACK_VERSION", "zstandard": "$ZSTANDARD_VERSION"}
sys.exit(any(version(k) != v for k, v in want.items()))
PY
then
  printf 'installing py-rattler==%s conda-pack==%s into %s\n' "$PY_RATTLER_VERSION" "$CONDA_PACK_VERSION" "$VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "py-rattler==$PY_RATTLER_VERSION" "conda-pack==$CONDA_PACK_VERSION" "zstandard==$ZSTANDARD_VERSION" >&2
fi
