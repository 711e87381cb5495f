#!/usr/bin/env bash
# The gateway's benchmark: requests/s and p99 of the environment and build lists with 1,000
# environments, measured with wrk (Debian) on loopback against /healthz in the same run.
#
#   bash scripts/bench-gateway.sh
#   BENCH_ENVIRONMENTS=5000 BENCH_SECONDS=20 bash scripts/bench-gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}/target}"
if ! command -v wrk >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q wrk >&2 || { apt-get update -q >&2 && apt-get install -y -q wrk >&2; }
fi
exec cargo bench --locked -p conda-store-api-server --bench gateway
