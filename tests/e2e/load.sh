#!/usr/bin/env bash
# Load test of the operator (not part of .ci/run): N Environments applied at once on a real
# control plane → the time until every one has a Build with its solve Job created, and the
# operator's peak RSS. No node: the Jobs' pods stay pending, so this measures the operator and
# the API server, not the builds.
#
#   bash tests/e2e/load.sh            # N=1000
#   LOAD_N=200 bash tests/e2e/load.sh
#
# Environment: CONDA_STORE_OPERATOR_BIN (default: the release build in the shared target dir,
# built when missing), LOAD_N. Prints one JSON line with the figures.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CONDA_STORE_CLUSTER_DIR=${CONDA_STORE_CLUSTER_DIR:-/tmp/conda-store-e2e-load-$$}
STATE=${CONDA_STORE_CLUSTER_DIR%/}
CLUSTER="$ROOT/tests/e2e/cluster.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}
N=${LOAD_N:-1000}
BIN=${CONDA_STORE_OPERATOR_BIN:-$CARGO_TARGET_DIR/release/conda-store-operator}
if [[ -z ${CONDA_STORE_OPERATOR_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --release --locked -q -p conda-store-operator)
fi

OPERATOR_PID=
cleanup() {
  [[ -n $OPERATOR_PID ]] && kill "$OPERATOR_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  bash "$CLUSTER" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

bash "$CLUSTER" up >&2
eval "$(bash "$CLUSTER" env)"
k() { "$CONDA_STORE_KUBECTL" "$@"; }
"$BIN" crds | k apply --validate=false -f - >/dev/null
k wait --for=condition=Established crd --all --timeout=60s >/dev/null
k create namespace conda-store >/dev/null
k apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Namespace
metadata: {name: load}
spec: {}
YAML

"$BIN" run --operator-namespace conda-store --job-image localhost/none:0 \
  --envs-volume "hostPath:$STATE/envs" --storage-dir "$STATE/artifacts" \
  --listen 127.0.0.1:0 --max-builds "$N" --identity load >"$STATE/operator.log" 2>&1 &
OPERATOR_PID=$!
until k get namespace load >/dev/null 2>&1; do sleep 0.2; done

# Eight files created by eight kubectl processes at once: one kubectl applying a thousand
# objects in sequence would measure kubectl, not the operator.
mkdir -p "$STATE/manifests"
for ((i = 0; i < N; i++)); do
  printf -- '---\napiVersion: conda.store/v1alpha1\nkind: Environment\nmetadata: {name: env-%04d, namespace: load}\nspec:\n  channels: ["https://conda.anaconda.org/conda-forge"]\n  dependencies: ["python =3.12", "numpy >=%d"]\n' "$i" "$i" \
    >>"$STATE/manifests/part-$((i % 8)).yaml"
done

start=$(date +%s.%N)
creators=()
for f in "$STATE"/manifests/part-*.yaml; do
  k create -f "$f" >/dev/null &
  creators+=($!)
done
for p in "${creators[@]}"; do wait "$p"; done
applied=$(date +%s.%N)
jobs=0
deadline=$((SECONDS + 600))
while ((SECONDS < deadline)); do
  jobs=$(k get jobs -n load -l conda.store/step=solve --no-headers 2>/dev/null | grep -c . || true)
  ((jobs >= N)) && break
  sleep 1
done
done_at=$(date +%s.%N)
builds=$(k get builds -n load --no-headers | grep -c . || true)
ids=$(k get builds -n load -o jsonpath='{range .items[*]}{.status.id}{"\n"}{end}' | sort -u | grep -c . || true)
# Peak RSS as the kernel counts it.
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$OPERATOR_PID/status")
python3 - "$N" "$start" "$applied" "$done_at" "$jobs" "$builds" "$ids" "$rss_kb" <<'PY'
import json, sys
n, start, applied, done, jobs, builds, ids, rss = sys.argv[1:]
print(json.dumps({
    "environments": int(n),
    "apply_seconds": round(float(applied) - float(start), 1),
    "seconds_until_every_build_has_its_job": round(float(done) - float(start), 1),
    "seconds_after_the_last_create": round(float(done) - float(applied), 1),
    "solve_jobs": int(jobs), "builds": int(builds), "distinct_build_ids": int(ids),
    "operator_peak_rss_mib": round(int(rss) / 1024, 1),
}))
PY
[[ $jobs -ge $N && $builds -eq $N && $ids -eq $N ]]
