#!/usr/bin/env bash
# The operator on a real control plane and node: `conda-store-operator run` (leader-elected,
# outside the cluster, as in local use) builds Environments through real Jobs that run the
# project's own image. The demo channel is served over HTTP on the pods' gateway address.
#
#   bash tests/e2e/operator.sh     # starts its own cluster (state dir below) and stops it
#
# This script provisions (cluster, image, CRDs, RBAC, channels, the operator's settings); the
# checks are Rust, on the typed resources: tests/e2e/tests/operator.rs, run with --ignored.
#
# The operator runs with the ServiceAccount and RBAC the chart gives it when build Jobs run in
# each build's own namespace (operator.jobPlacement=build; scripts/local.sh, in gateway.sh,
# runs the default, Jobs in the operator's namespace).
# The checks: Namespace → Kubernetes namespace; Environment → Build Completed with lockfile, archive
# and image in storage, the prefix installed and the current link switched; reordered
# dependencies → no new Build; a changed dependency → a second Build, the first kept; an
# unsolvable spec → Failed with the solver's message; cancel → Canceled, Jobs gone; a Job
# deleted under a running build → Failed; the operator killed mid-build → the build completes
# after a restart with one Job per step; metrics, Lease, events; deleting an Environment
# removes its builds and their artifacts.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CONDA_STORE_CLUSTER_DIR=${CONDA_STORE_CLUSTER_DIR:-/tmp/conda-store-e2e-operator-$$}
STATE=${CONDA_STORE_CLUSTER_DIR%/}
CLUSTER="$ROOT/tests/e2e/cluster.sh"
IMAGES="$ROOT/tests/e2e/images.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}
BIN=${CONDA_STORE_OPERATOR_BIN:-$CARGO_TARGET_DIR/debug/conda-store-operator}
export CONDA_STORE_OPERATOR_BIN=$BIN

# shellcheck source=tests/e2e/checks.sh
source "$ROOT/tests/e2e/checks.sh"

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n ${KEEP_LOGS:-} && -d $STATE ]]; then cp "$STATE"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
  bash "$CLUSTER" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

[[ -x $BIN ]] || { echo "no operator binary at $BIN (cargo build -p conda-store-operator)" >&2; exit 1; }

t=$SECONDS
bash "$CLUSTER" up --node
echo "timing: up with node $((SECONDS - t)) s"
eval "$(bash "$CLUSTER" env)"
k() { "$CONDA_STORE_KUBECTL" "$@"; }

IMAGE=$(bash "$IMAGES" import conda-store)
[[ -n $IMAGE ]] || { echo "the operator image was not imported into the node's containerd" >&2; exit 1; }

# The CRDs (kubectl 1.20 cannot validate x-kubernetes-validations client-side).
"$BIN" crds | k apply --validate=false -f - >/dev/null
k wait --for=condition=Established crd --all --timeout=60s >/dev/null
k create namespace conda-store >/dev/null
# The operator runs as the chart's ServiceAccount with jobPlacement=build, with exactly
# the rights granted there (its token in a kubeconfig like the admin's).
bash "$ROOT/scripts/helm-template.sh" --release conda-store --namespace conda-store \
  --set operator.jobPlacement=build --show-only templates/operator-rbac.yaml "$ROOT/charts/conda-store" |
  k apply -f - >/dev/null
sa_token() {
  local secret
  secret=$(k get sa conda-store-operator -n conda-store -o 'jsonpath={.secrets[0].name}')
  [[ -n $secret ]] && k get secret "$secret" -n conda-store -o 'jsonpath={.data.token}' | base64 -d
}
for _ in $(seq 100); do TOKEN=$(sa_token 2>/dev/null) && [[ -n $TOKEN ]] && break; sleep 0.2; done
[[ -n ${TOKEN:-} ]] || { echo "no ServiceAccount token for conda-store-operator" >&2; exit 1; }
sed "s|^    token: .*|    token: $TOKEN|" "$KUBECONFIG" >"$STATE/operator.kubeconfig"

# The demo channel over HTTP on the gateway (pods reach the host there), and a "channel" that
# accepts connections and never answers, so a solve stays running as long as a test needs.
"$BIN" demo-channel "$STATE/channel" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CHANNEL_PORT=$(free_port)
python3 -m http.server --bind "$CONDA_STORE_POD_GATEWAY" --directory "$STATE/channel" "$CHANNEL_PORT" \
  >"$STATE/channel.log" 2>&1 &
PIDS+=($!)
CHANNEL=http://$CONDA_STORE_POD_GATEWAY:$CHANNEL_PORT/
HANG_PORT=$(free_port)
tarpit "$CONDA_STORE_POD_GATEWAY" "$HANG_PORT"
PIDS+=($!)
HANG=http://$CONDA_STORE_POD_GATEWAY:$HANG_PORT/

# Environments and artifacts in host directories the Jobs mount at the same paths (so the
# prefixes they install are valid on the host too); the Jobs run as this user, who owns them.
mkdir -p "$STATE/envs" "$STATE/artifacts"
METRICS_PORT=$(free_port)

# Settings from a config file (keys are the flags' long names), the rest as flags.
cat >"$STATE/operator.yaml" <<YAML
operator-namespace: conda-store
job-image: $IMAGE
job-image-pull-policy: Never
job-user: $(id -u)
max-builds: 4
storage: local
storage-dir: $STATE/artifacts
storage-volume: hostPath:$STATE/artifacts
blob-gc-interval-seconds: 10
YAML
# An image blob no build references, for the collection to find (checked at the end).
STRAY_BLOB=$STATE/artifacts/blobs/sha256/$(printf 'f%.0s' $(seq 64))
mkdir -p "$(dirname "$STRAY_BLOB")" && printf 'stray' >"$STRAY_BLOB"

# The checks, in Rust (the test starts, kills and restarts the operator itself). The test
# binary is the one `cargo test --workspace` built (same features: nothing is rebuilt).
export E2E_ROOT=$ROOT E2E_STATE=$STATE E2E_OPERATOR_BIN=$BIN E2E_CHANNEL=$CHANNEL E2E_HANG=$HANG \
  E2E_METRICS_PORT=$METRICS_PORT E2E_IMAGE=$IMAGE
rc=0
(cd "$ROOT" && cargo test -q --locked --workspace --test operator -- --ignored --nocapture) || rc=$?
if ((rc != 0)); then
  echo "--- operator log (last 40 lines)"
  tail -n 40 "$STATE/operator.log" || true
fi
exit "$rc"
