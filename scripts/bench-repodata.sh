#!/usr/bin/env bash
# The repodata benchmark (engine/benches/repodata.rs): a conda-forge-sized synthetic channel
# (about 520,000 records; generated once into $CONDA_STORE_CACHE/bench-data, ~1 min) served over
# HTTP on loopback, a twenty-spec request solved cold and warm from its shards, its .zst and its
# plain repodata, next to py-rattler with its own persistent cache in the same run.
#
#   bash scripts/bench-repodata.sh                 # full (~5 min on 2 cores once generated)
#   BENCH_QUICK=1 bash scripts/bench-repodata.sh   # a channel of ~70,000 records
#
# BENCH_RUNS sets the runs per figure (median). Prints a table, then one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench/venv.sh
source scripts/bench/venv.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export BENCH_PYTHON="$VENV/bin/python"
export BENCH_SCRIPTS="$PWD/scripts/bench"
export BENCH_DATA="${BENCH_DATA:-$CACHE/bench-data}"
exec cargo bench -q -p conda-store-engine --bench repodata
