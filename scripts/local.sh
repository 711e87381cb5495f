#!/usr/bin/env bash
# conda-store for Kubernetes on this machine, in one command: a local control plane with a node
# (tests/e2e/cluster.sh), the CRDs, the operator with embedded defaults (artifacts and
# environments in local directories), the generated demo channel served to the build pods, and
# an example Environment built end to end. Then it prints where its artifacts are.
#
#   bash scripts/local.sh up      # first run: builds Kubernetes (~15 min) and the binary
#   bash scripts/local.sh down    # stops everything and removes the state directory
#   bash scripts/local.sh env     # the exports for kubectl against it
#
# State lives in $CONDA_STORE_LOCAL_DIR (default /tmp/conda-store-local). Set
# CONDA_STORE_LOCAL_CHANNEL to a channel URL the pods can reach to build from it instead of the
# demo channel (the example's dependencies then have to exist there).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONDA_STORE_CLUSTER_DIR=${CONDA_STORE_LOCAL_DIR:-/tmp/conda-store-local}
STATE=${CONDA_STORE_CLUSTER_DIR%/}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}
BIN=$CARGO_TARGET_DIR/debug/conda-store-operator
API_BIN=$CARGO_TARGET_DIR/debug/conda-store-api-server
export CONDA_STORE_OPERATOR_BIN=$BIN
CLUSTER="$ROOT/tests/e2e/cluster.sh"

log() { printf '[local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() { # stop_pid FILE: stop the process whose pid FILE holds
  [[ -f $1 ]] || return 0
  kill "$(cat "$1")" 2>/dev/null || true
  rm -f "$1"
}

cmd_down() {
  stop_pid "$STATE/api.pid"
  stop_pid "$STATE/operator.pid"
  stop_pid "$STATE/channel.pid"
  bash "$CLUSTER" down
}

cmd_env() { bash "$CLUSTER" env; }

cmd_up() {
  command -v cargo >/dev/null || die "cargo is missing (the Rust toolchain)"
  log "building the operator and gateway binaries"
  (cd "$ROOT" && cargo build -q --locked -p conda-store-operator -p conda-store-api-server)
  bash "$CLUSTER" up --node
  eval "$(bash "$CLUSTER" env)"
  k() { "$CONDA_STORE_KUBECTL" "$@"; }
  local image channel port
  image=$(bash "$ROOT/tests/e2e/images.sh" import operator)
  "$BIN" crds | k apply --validate=false -f - >/dev/null
  k wait --for=condition=Established crd --all --timeout=60s >/dev/null
  k get namespace conda-store >/dev/null 2>&1 || k create namespace conda-store >/dev/null

  if [[ -n ${CONDA_STORE_LOCAL_CHANNEL:-} ]]; then
    channel=$CONDA_STORE_LOCAL_CHANNEL
  else
    "$BIN" demo-channel "$STATE/channel" >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    stop_pid "$STATE/channel.pid"
    nohup python3 -m http.server --bind "$CONDA_STORE_POD_GATEWAY" --directory "$STATE/channel" "$port" \
      >"$STATE/channel.log" 2>&1 &
    echo $! >"$STATE/channel.pid"
    channel=http://$CONDA_STORE_POD_GATEWAY:$port/
  fi

  mkdir -p "$STATE/envs" "$STATE/artifacts"
  stop_pid "$STATE/operator.pid"
  nohup "$BIN" run --operator-namespace conda-store \
    --job-image "$image" --job-image-pull-policy Never --job-user "$(id -u)" \
    --envs-dir "$STATE/envs" --envs-volume "hostPath:$STATE/envs" --local-envs-dir "$STATE/envs" \
    --storage local --storage-dir "$STATE/artifacts" --storage-volume "hostPath:$STATE/artifacts" \
    --listen 127.0.0.1:0 --leader-election=false >"$STATE/operator.log" 2>&1 &
  echo $! >"$STATE/operator.pid"
  log "operator running (log: $STATE/operator.log)"

  # The gateway: conda-store's REST API on the same storage, its index in SQLite, a dev users
  # file (demo/demo), a signing key kept in the state directory.
  local api_port
  api_port=${CONDA_STORE_LOCAL_API_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  [[ -f $STATE/secret.key ]] || head -c 48 /dev/urandom | base64 -w0 >"$STATE/secret.key"
  if [[ -n ${CONDA_STORE_LOCAL_USERS:-} ]]; then
    cp "$CONDA_STORE_LOCAL_USERS" "$STATE/users.yaml"
  else
    printf 'users:\n  - username: demo\n    password: demo\n' >"$STATE/users.yaml"
  fi
  stop_pid "$STATE/api.pid"
  CONDA_STORE_SECRET_KEY=$(cat "$STATE/secret.key") nohup "$API_BIN" serve \
    --listen "127.0.0.1:$api_port" --database-url "sqlite://$STATE/index.db" \
    --storage local --storage-dir "$STATE/artifacts" --users-file "$STATE/users.yaml" \
    --token-review >"$STATE/api.log" 2>&1 &
  echo $! >"$STATE/api.pid"
  echo "http://localhost:$api_port/conda-store/" >"$STATE/api.url"
  local up=""
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$api_port/readyz" >/dev/null 2>&1 && { up=1; break; }
    sleep 0.2
  done
  [[ -n $up ]] || die "the gateway did not become ready; see $STATE/api.log"
  log "gateway serving $(cat "$STATE/api.url") (log: $STATE/api.log)"

  k apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Namespace
metadata: {name: demo}
spec:
  displayName: Demo
  roleBindings: [{entity: "*/*", role: viewer}]
  retention: {keepBuilds: 3}
YAML
  # The operator creates the Kubernetes namespace the Environment goes into.
  for _ in $(seq 120); do k get namespace demo >/dev/null 2>&1 && break; sleep 0.5; done
  k apply -f - >/dev/null <<YAML
apiVersion: conda.store/v1alpha1
kind: Environment
metadata: {name: tools, namespace: demo}
spec:
  name: Tools
  channels: ["$channel"]
  dependencies: [tool, "liba >=2"]
  artifacts: [lockfile, yaml, archive, image]
YAML
  log "applied Environment demo/tools; waiting for its build"
  local deadline=$((SECONDS + 300)) ready=""
  while ((SECONDS < deadline)); do
    ready=$(k get environment tools -n demo -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [[ $ready == True ]] && break
    [[ $(k get environment tools -n demo -o 'jsonpath={.status.phase}' 2>/dev/null) == Failed ]] && break
    sleep 0.5
  done
  k get environments,builds -n demo
  [[ $ready == True ]] || die "the build did not complete; see kubectl describe builds -n demo and $STATE/operator.log"
  local build id
  id=$(k get environment tools -n demo -o 'jsonpath={.status.currentBuild}')
  build=$(k get builds -n demo -o "jsonpath={.items[?(@.status.id==$id)].metadata.name}")
  local art=$STATE/artifacts/builds/demo/$build
  cat <<EOF

Environment demo/tools is built (build $id, $build).
  lockfile:  $art/conda-lock.yaml
  archive:   $art/archive.tar.zst   (extract anywhere, run bin/conda-unpack)
  image:     $art/image.json        (blobs in $STATE/artifacts/blobs/sha256)
  prefix:    $STATE/envs/demo/tools -> $build
  REST API:  $(cat "$STATE/api.url")api/v1/  (log in as demo/demo)
             curl -u demo:demo $(cat "$STATE/api.url")api/v1/build/$id/lockfile/
             CONDA_STORE_URL=$(cat "$STATE/api.url") CONDA_STORE_AUTH=basic CONDA_STORE_USERNAME=demo CONDA_STORE_PASSWORD=demo conda-store list environment
  try:       $STATE/envs/demo/tools/bin/tool
  kubectl:   eval "\$(bash scripts/local.sh env)"; \$CONDA_STORE_KUBECTL get cenv,cbuild -A
  stop:      bash scripts/local.sh down
EOF
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
