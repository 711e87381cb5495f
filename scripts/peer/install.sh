#!/usr/bin/env bash
# The upstream peer for side-by-side benchmarks: conda-store-server 2025.2.2 from PyPI in a
# virtualenv outside the checkout ($CONDA_STORE_CACHE/peer-venv), with a working conda.
# Idempotent; prints the venv's path.
#
# conda is not on PyPI, but conda-lock 4.0.3's wheel vendors conda 24.7.1: it is unpacked as the
# top-level `conda` package (its imports rewritten), with the classic solver (libmamba is not on
# PyPI). conda-store-server calls conda-lock's run_lock() without the mapping_url that 3.x and
# 4.x require, so conda-lock 2.5.8 is the library. `conda` and `mamba` are wrappers around
# `python -m conda` (conda-store's default conda_command is mamba).
set -euo pipefail
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
VENV="$CACHE/peer-venv"
STAMP="$VENV/.conda-store-server-2025.2.2-v1"
log() { printf '[peer] %s\n' "$*" >&2; }

if [[ ! -f $STAMP ]]; then
  log "installing conda-store-server 2025.2.2 into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  pip() { "$VENV/bin/pip" --disable-pip-version-check -q "$@"; }
  pip install "conda-store-server==2025.2.2" "conda-lock==2.5.8" pycosat conda-package-handling \
    archspec tqdm pluggy frozendict boltons distro jsonpatch truststore ruamel.yaml requests >&2
  work=$(mktemp -d)
  pip download --no-deps -d "$work" "conda-lock==4.0.3" >&2
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  (cd "$work" && python3 -m zipfile -e conda_lock-4.0.3-*.whl unpacked >/dev/null)
  rm -rf "$site/conda"
  cp -r "$work/unpacked/conda_lock/_vendor/conda" "$site/conda"
  grep -rl 'conda_lock\._vendor\.conda' "$site/conda" | xargs sed -i 's/conda_lock\._vendor\.conda/conda/g'
  rm -rf "$work"
  printf 'solver: classic\n' >"$VENV/condarc"
  for cmd in conda mamba; do
    printf '#!/bin/sh\nCONDARC=%s exec %s -m conda "$@"\n' "$VENV/condarc" "$VENV/bin/python" >"$VENV/bin/$cmd"
    chmod +x "$VENV/bin/$cmd"
  done
  CONDARC="$VENV/condarc" "$VENV/bin/python" -m conda --version >&2
  touch "$STAMP"
fi
echo "$VENV"
