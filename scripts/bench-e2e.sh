#!/usr/bin/env bash
# The end-to-end benchmark against the real upstream: conda-store-server 2025.2.2 (PyPI; set up by
# scripts/peer/install.sh) and this project's local deployment (scripts/local.sh: the chart on a
# one-node cluster) build the same environments from the same local channel of real packages
# (tests/support/real_channel.py: the host's CPython and PyPI wheels repackaged), through the
# same REST calls, in alternating runs (scripts/bench/e2e.py). The first run of each side has a
# cold package cache; the later ones are warm.
#
#   bash scripts/bench-e2e.sh                           # python + flask, 4 runs each
#   BENCH_E2E_DATA_SCIENCE=1 bash scripts/bench-e2e.sh  # also the data-science environment
#
# BENCH_RUNS sets the runs. State in $BENCH_E2E_DIR (default /tmp/conda-store-bench-e2e), removed
# at the end. Prints a table, then one JSON line.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${CONDA_STORE_CACHE:-$HOME/.cache/conda-store-k8s}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
STATE=${BENCH_E2E_DIR:-/tmp/conda-store-bench-e2e}
export CONDA_STORE_LOCAL_DIR=$STATE CONDA_STORE_CLUSTER_DIR=$STATE
RUNS=${BENCH_RUNS:-4}
log() { printf '[bench-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
  local rc=$? p
  # A failed run says what the upstream said (its state directory goes with the cleanup).
  if ((rc != 0)) && [[ -f $STATE/peer/server.log ]]; then
    echo "--- the upstream's log (last 40 lines):" >&2
    tail -n 40 "$STATE/peer/server.log" >&2
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # The upstream runs in a session of its own: its Celery worker's spawned processes outlive the
  # server's SIGTERM, so the whole group gets SIGTERM, then SIGKILL.
  if [[ -f $STATE/peer/pgid ]]; then
    local pg
    pg=$(cat "$STATE/peer/pgid")
    if kill -TERM -- "-$pg" 2>/dev/null; then
      sleep 3
      kill -KILL -- "-$pg" 2>/dev/null || true
    fi
  fi
  bash "$ROOT/scripts/local.sh" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

eval "$(bash "$ROOT/scripts/install-test-deps.sh" 2>/dev/null)"
PEER_VENV=$(bash "$ROOT/scripts/peer/install.sh")

ENVS=("small=python,flask")
REQS=(flask)
if [[ ${BENCH_E2E_DATA_SCIENCE:-0} == 1 ]]; then
  ENVS+=("data-science=python,numpy,pandas,scipy,scikit-learn,matplotlib,jupyterlab")
  REQS+=(numpy pandas scipy scikit-learn matplotlib jupyterlab)
fi
log "the channel of real packages (${REQS[*]})"
CHANNEL_DIR=$(python3 "$ROOT/tests/support/real_channel.py" "$CACHE/bench-data/real-channel-$(IFS=-; echo "${REQS[*]}")" \
  --wheels "$CACHE/wheels" "${REQS[@]}")

log "the cluster"
bash "$ROOT/tests/e2e/cluster.sh" up --node >&2
eval "$(bash "$ROOT/tests/e2e/cluster.sh" env)"
PORT=$(free_port)
python3 -m http.server --bind "$CONDA_STORE_POD_GATEWAY" --directory "$CHANNEL_DIR" "$PORT" >"$STATE/channel.log" 2>&1 &
PIDS+=($!)
CHANNEL=http://$CONDA_STORE_POD_GATEWAY:$PORT/

log "this project: scripts/local.sh up (the chart through Helm)"
# Release binaries, as the project's image has (the first time: a release build, ~10 min).
CONDA_STORE_LOCAL_PROFILE=${CONDA_STORE_LOCAL_PROFILE:-release} CONDA_STORE_LOCAL_CHANNEL=$CHANNEL CONDA_STORE_LOCAL_EXAMPLES=0 bash "$ROOT/scripts/local.sh" up >"$STATE/local-up.log" 2>&1 \
  || { tail -n 30 "$STATE/local-up.log" >&2; exit 1; }
OURS=$(cat "$STATE/api.url")
"$CONDA_STORE_KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Namespace
metadata: {name: bench}
spec:
  roleBindings: [{entity: "*/*", role: editor}]
YAML
for _ in $(seq 100); do "$CONDA_STORE_KUBECTL" get namespace bench >/dev/null 2>&1 && break; sleep 0.2; done

log "upstream: conda-store-server 2025.2.2 --standalone"
PEER_PORT=$(free_port)
mkdir -p "$STATE/peer/state" "$HOME/.local/share/conda-store"
cat >"$STATE/peer/config.py" <<PY
from conda_store_server.server.auth import DummyAuthentication
from conda_store_server.storage import LocalStorage
from conda_store_server._internal.schema import BuildArtifactType
D = "$STATE/peer/state"
c.CondaStoreServer.address = "127.0.0.1"
c.CondaStoreServer.port = $PEER_PORT
c.CondaStoreServer.url_prefix = "/conda-store"
c.CondaStoreServer.reload = False
c.CondaStoreServer.authentication_class = DummyAuthentication
c.RBACAuthorizationBackend.unauthenticated_role_bindings = {"*/*": {"admin"}}
c.CondaStore.store_directory = D + "/store"
c.CondaStore.database_url = "sqlite:///" + D + "/conda-store.sqlite"
c.CondaStore.storage_class = LocalStorage
c.LocalStorage.storage_path = D + "/storage"
c.LocalStorage.storage_url = "http://127.0.0.1:$PEER_PORT/conda-store/storage"
c.CondaStore.conda_channel_alias = "$CHANNEL"
c.CondaStore.conda_allowed_channels = ["$CHANNEL"]
c.CondaStore.conda_default_channels = ["$CHANNEL"]
c.CondaStore.conda_indexed_channels = ["$CHANNEL"]
c.CondaStore.build_artifacts = [BuildArtifactType.LOCKFILE, BuildArtifactType.YAML, BuildArtifactType.CONDA_PACK]
c.CondaStoreWorker.concurrency = 2
PY
(cd "$STATE/peer" && PATH="$PEER_VENV/bin:$PATH" CONDARC="$PEER_VENV/condarc" \
  setsid bash -c 'echo $$ >"$1/pgid"; exec "$2/bin/conda-store-server" --standalone --config "$1/config.py"' \
    _ "$STATE/peer" "$PEER_VENV" >"$STATE/peer/server.log" 2>&1 &)
# setsid forks when it leads a group already, so the session leader says its own pid.
for _ in $(seq 50); do [[ -s $STATE/peer/pgid ]] && break; sleep 0.1; done
PEER=http://127.0.0.1:$PEER_PORT/conda-store/
for _ in $(seq 120); do curl -fsS "${PEER}api/v1/" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "${PEER}api/v1/" >/dev/null || { tail -n 30 "$STATE/peer/server.log" >&2; exit 1; }

log "building, $RUNS runs per side, alternating"
ARGS=()
for e in "${ENVS[@]}"; do ARGS+=(--env "$e"); done
python3 "$ROOT/scripts/bench/e2e.py" --ours "$OURS" --peer "$PEER" --channel "$CHANNEL" \
  --runs "$RUNS" "${ARGS[@]}" >"$STATE/results.json"
python3 - "$STATE/results.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
print("| environment | measure | upstream cold | ours cold | cold ratio | upstream warm | ours warm | warm ratio |")
print("|---|---|---|---|---|---|---|---|")
out = {}
def fmt(x, unit=" s"):
    return "n/a" if x is None else f"{x:.2f}{unit}"
def ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.1f}×"
for env, sides in r.items():
    for m in ("completed", "artifacts"):
        # A run that did not finish (its error is in the log) counts as missing.
        up = [x[m] for x in sides["upstream"]]; us = [x[m] for x in sides["ours"]]
        def warm(xs):
            done = [x for x in xs[1:] if x is not None]
            return statistics.median(done) if done else None
        uw, ow = warm(up), warm(us)
        print(f"| {env} | request → {'build completed' if m == 'completed' else 'all artifacts'} | "
              f"{fmt(up[0])} | {fmt(us[0])} | {ratio(up[0], us[0])} | {fmt(uw)} | {fmt(ow)} | {ratio(uw, ow)} |")
        out[f"{env}/{m}"] = {"upstream_cold": up[0], "ours_cold": us[0], "upstream_warm": uw, "ours_warm": ow}
print(json.dumps(out))
PY
echo
echo "Where this project's time goes (medians over its builds):"
"$CONDA_STORE_KUBECTL" get builds,jobs,pods -A -o json | python3 "$ROOT/scripts/bench/e2e_breakdown.py"
