#!/usr/bin/env bash
# The pip benchmark (engine/benches/pip.rs): a 33-package pip section resolved and installed
# from a PEP 503 index of real PyPI wheels on loopback, warm, next to uv run by hand
# (`uv pip compile` + `uv pip install`) on the same index, prefix and cache, in the same run.
#
#   bash scripts/bench-pip.sh        # BENCH_RUNS=7 by default; prints a table, then one JSON line
#
# The channel (the host's CPython as a conda package) and the index are made once into
# $CONDA_STORE_CACHE/bench-data; the wheels are downloaded once into $CONDA_STORE_CACHE/wheels-pip.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export CONDA_STORE_UV="${CONDA_STORE_UV:-$(bash scripts/install-uv.sh)}"
PINS=(anyio==4.16.0 attrs==26.1.0 blinker==1.9.0 certifi==2026.10.19.post1 charset-normalizer==3.5.3
  click==8.5.1 fastjsonschema==2.22.3 flask==3.1.3 h11==0.16.0 httpcore==1.0.9 httpx==0.29.0
  idna==3.21 itsdangerous==2.2.0 jinja2==3.1.6 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  jupyter-core==5.9.1 markupsafe==3.0.4 nbformat==5.11.1 numpy==2.4.6 pandas==3.1.1
  platformdirs==4.14.9 python-dateutil==4.0.0 pyyaml==6.0.4 referencing==0.37.0 requests==2.34.2
  rpds-py==2026.9.1 tornado==6.6.1 traitlets==5.16.1 typing-extensions==4.16.0 tzdata==2026.6
  urllib3==2.8.0 werkzeug==3.1.9)
export BENCH_CHANNEL
BENCH_CHANNEL=$(python3 tests/support/real_channel.py "$CACHE/bench-data/pip-bench-channel" \
  --wheels "$CACHE/bench-data/pip-bench-channel-wheels" | tail -n 1)
export BENCH_INDEX
BENCH_INDEX=$(python3 tests/support/pypi_index.py "$CACHE/bench-data/pip-bench-index" \
  --wheels "$CACHE/wheels-pip" "${PINS[@]}" | tail -n 1)
exec cargo bench -q -p conda-store-engine --bench pip
