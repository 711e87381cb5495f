#!/usr/bin/env bash
# The registry's benchmark: a 1 GiB layer pulled through the gateway from the local and the S3
# backend (moto, which scripts/install-test-deps.sh installs), each against reading the object
# directly from storage in the same run, and the gateway's RSS growth during the pull.
#
#   bash scripts/bench-registry.sh
#   BENCH_BLOB_MIB=256 bash scripts/bench-registry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}/target}"
eval "$(bash scripts/install-test-deps.sh)"
exec cargo bench --locked -p conda-store-api-server --bench registry
