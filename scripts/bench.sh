#!/usr/bin/env bash
# The build engine's benchmark: solve, install, pack and image figures, each against a baseline
# measured in the same run (py-rattler for the solve, conda-pack for the pack). Idempotent; the
# baselines live in a virtualenv outside the checkout ($CONDA_STORE_CACHE/bench-venv, default
# ~/.cache/conda-store-k8s), generated channels in $CONDA_STORE_CACHE/bench-data.
#
#   bash scripts/bench.sh                 # full: 20k and 200k-record solves, 5 runs each
#   BENCH_QUICK=1 bash scripts/bench.sh   # quick: 20k only, fewer runs
#
# Other options (environment): BENCH_SOLVE_SIZES=20000,200000, BENCH_SOLVE_RUNS,
# BENCH_INSTALL_RUNS, BENCH_PACK_RUNS, BENCH_PACKAGES (20), BENCH_FILES (2500 per package),
# BENCH_FILE_BYTES (5000, mean), BENCH_WORKDIR (prefixes and archives; default the temp dir).
# Prints a table, then one JSON line with every figure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/bench/venv.sh
source scripts/bench/venv.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

export BENCH_PYTHON="$VENV/bin/python"
export BENCH_CONDA_PACK="$VENV/bin/conda-pack"
export BENCH_SCRIPTS="$PWD/scripts/bench"
export BENCH_DATA="${BENCH_DATA:-$CACHE/bench-data}"
exec cargo bench -q -p conda-store-engine --bench engine
