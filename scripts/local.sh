#!/usr/bin/env bash
# conda-store for Kubernetes on this machine, in one command: a local control plane with a node
# (tests/e2e/cluster.sh), the project's image built and imported, the Helm chart installed with
# the real Helm and values for this machine (CRDs, RBAC, the operator and gateway Deployments),
# the generated demo channel served to the build pods, and an example Environment built end to
# end. Then it prints where its artifacts are.
#
#   bash scripts/local.sh up      # first run: builds Kubernetes (~15 min) and the binaries
#   bash scripts/local.sh down    # stops everything and removes the state directory
#   bash scripts/local.sh env     # the exports for kubectl against it
#
# State lives in $CONDA_STORE_LOCAL_DIR (default /tmp/conda-store-local). Set
# CONDA_STORE_LOCAL_CHANNEL to a channel URL the pods can reach to build from it instead of the
# demo channel (the example's dependencies then have to exist there; CONDA_STORE_LOCAL_EXAMPLES=0
# applies none of the example Environments), CONDA_STORE_LOCAL_USERS
# to a users file for the gateway's logins, CONDA_STORE_LOCAL_API_PORT to fix the API's port,
# CONDA_STORE_LOCAL_PROFILE=release to run release builds of the binaries,
# CONDA_STORE_LOCAL_VALUES to a values file given to Helm after this machine's (sign-in
# providers, say), and CONDA_STORE_LOCAL_SECRETS to `SECRET/KEY=FILE` words: Secrets in the
# release's namespace that such values name.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONDA_STORE_CLUSTER_DIR=${CONDA_STORE_LOCAL_DIR:-/tmp/conda-store-local}
STATE=${CONDA_STORE_CLUSTER_DIR%/}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/conda-store-k8s/target}
# The binaries in the image: debug builds (what the tests build), or release ones, as the
# project's published image has, with CONDA_STORE_LOCAL_PROFILE=release (the benchmarks).
PROFILE=${CONDA_STORE_LOCAL_PROFILE:-debug}
BIN=$CARGO_TARGET_DIR/$PROFILE/conda-store-operator
export CONDA_STORE_OPERATOR_BIN=$BIN
export CONDA_STORE_API_SERVER_BIN=$CARGO_TARGET_DIR/$PROFILE/conda-store-api-server
CLUSTER="$ROOT/tests/e2e/cluster.sh"

log() { printf '[local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() { # stop_pid FILE: stop the process whose pid FILE holds
  [[ -f $1 ]] || return 0
  kill "$(cat "$1")" 2>/dev/null || true
  rm -f "$1"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_down() {
  stop_pid "$STATE/channel.pid"
  bash "$CLUSTER" down
}

cmd_env() { bash "$CLUSTER" env; }

# The chart's values for this machine's one-node cluster. What differs from a real cluster, and
# why:
#  - the pods use the node's network (hostNetwork) and reach the API server at 127.0.0.1: the
#    local cluster runs no kube-proxy, so the `kubernetes` Service address leads nowhere;
#  - they listen on 127.0.0.1 ports chosen here, so nothing is exposed beyond the machine;
#  - node directories in the state dir replace the volume claims (no storage provisioner here),
#    the environments at the same path inside the pods as outside, so the prefixes' paths and
#    the current links are valid on the host;
#  - the image is the one built here and imported (never pulled); a dev users file logs in;
#  - the gateway may solve without building (`conda-store solve`) from the demo channel.
write_values() { # write_values IMAGE OPERATOR_PORT API_PORT APISERVER_PORT CHANNEL
  local image=$1 op_port=$2 api_port=$3 apiserver_port=$4 channel=$5
  cat >"$STATE/values.yaml" <<EOF
# Written by scripts/local.sh: the chart on the local one-node cluster.
image: {repository: "${image%:*}", tag: "${image##*:}", pullPolicy: Never}
hostNetwork: true
listenHost: 127.0.0.1
logJson: false
extraEnv:
  - {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}
  - {name: KUBERNETES_SERVICE_PORT, value: "$apiserver_port"}
environments: {mountPath: "$STATE/envs", hostPath: "$STATE/envs"}
storage: {local: {hostPath: "$STATE/artifacts"}}
operator: {port: $op_port}
apiServer:
  port: $api_port
  usersSecret: conda-store-local-users
  secretKey: {existingSecret: conda-store-local-secret-key}
  database: {sqlite: {hostPath: "$STATE/db"}}
  solveChannels: ["$channel"]
EOF
}

cmd_up() {
  command -v cargo >/dev/null || die "cargo is missing (the Rust toolchain)"
  log "building the operator and gateway binaries"
  local release=()
  [[ $PROFILE == release ]] && release=(--release)
  (cd "$ROOT" && cargo build -q --locked "${release[@]}" -p conda-store-operator -p conda-store-api-server)
  bash "$CLUSTER" up --node
  eval "$(bash "$CLUSTER" env)"
  k() { "$CONDA_STORE_KUBECTL" "$@"; }
  local image channel port apiserver_port api_port
  image=$(bash "$ROOT/tests/e2e/images.sh" import conda-store)
  apiserver_port=$(sed -n 's/^APISERVER_PORT=//p' "$STATE/cluster.env")
  [[ -n $apiserver_port ]] || die "no APISERVER_PORT in $STATE/cluster.env"

  if [[ -n ${CONDA_STORE_LOCAL_CHANNEL:-} ]]; then
    channel=$CONDA_STORE_LOCAL_CHANNEL
  else
    "$BIN" demo-channel "$STATE/channel" >/dev/null
    port=$(free_port)
    stop_pid "$STATE/channel.pid"
    nohup python3 -m http.server --bind "$CONDA_STORE_POD_GATEWAY" --directory "$STATE/channel" "$port" \
      >"$STATE/channel.log" 2>&1 &
    echo $! >"$STATE/channel.pid"
    channel=http://$CONDA_STORE_POD_GATEWAY:$port/
  fi

  # The pods run as the image's user 65532, and so do the build Jobs.
  mkdir -p "$STATE/envs" "$STATE/artifacts" "$STATE/db"
  chown 65532:65532 "$STATE/envs" "$STATE/artifacts" "$STATE/db"
  api_port=${CONDA_STORE_LOCAL_API_PORT:-$(free_port)}
  write_values "$image" "$(free_port)" "$api_port" "$apiserver_port" "$channel"
  echo "$channel" >"$STATE/channel.url"

  # The gateway's signing key (kept in the state dir, so a second `up` keeps the tokens
  # valid) and the users file (demo/demo), as Secrets the release names. Passwords are argon2
  # hashes; the gateway refuses anything else.
  [[ -f $STATE/secret.key ]] || head -c 48 /dev/urandom | base64 -w0 >"$STATE/secret.key"
  if [[ -n ${CONDA_STORE_LOCAL_USERS:-} ]]; then
    cp "$CONDA_STORE_LOCAL_USERS" "$STATE/users.yaml"
  else
    printf 'users:\n  - username: demo\n    password: "%s"\n' \
      "$(echo demo | "$CONDA_STORE_API_SERVER_BIN" hash-password)" >"$STATE/users.yaml"
  fi
  k create namespace conda-store --dry-run=client -o yaml | k apply -f - >/dev/null
  k create secret generic conda-store-local-secret-key -n conda-store \
    --from-file=secret-key="$STATE/secret.key" --dry-run=client -o yaml | k apply -f - >/dev/null
  k create secret generic conda-store-local-users -n conda-store \
    --from-file=users.yaml="$STATE/users.yaml" --dry-run=client -o yaml | k apply -f - >/dev/null
  local entry name key file
  for entry in ${CONDA_STORE_LOCAL_SECRETS:-}; do
    name=${entry%%/*} key=${entry#*/} file=${entry#*=}
    key=${key%%=*}
    k create secret generic "$name" -n conda-store --from-file="$key=$file" \
      --dry-run=client -o yaml | k apply -f - >/dev/null
  done
  local values=(-f "$STATE/values.yaml")
  if [[ -n ${CONDA_STORE_LOCAL_VALUES:-} ]]; then
    cp "$CONDA_STORE_LOCAL_VALUES" "$STATE/extra-values.yaml"
    values+=(-f "$STATE/extra-values.yaml")
  fi
  # The real Helm, as a platform team installs: the CRDs from the chart, then the release.
  local helm
  helm=${CONDA_STORE_HELM:-$(bash "$ROOT/scripts/install-helm.sh")}
  log "helm upgrade --install conda-store charts/conda-store -n conda-store ${values[*]}"
  "$helm" --kubeconfig "$KUBECONFIG" upgrade --install conda-store "$ROOT/charts/conda-store" \
    -n conda-store "${values[@]}" >"$STATE/helm.log" \
    || { cat "$STATE/helm.log" >&2; die "helm could not install the chart"; }
  echo "http://localhost:$api_port/conda-store/" >"$STATE/api.url"
  log "waiting for the operator and the gateway (kubectl get pods -n conda-store)"
  # `rollout status`, not `wait --for=condition=Available`: on a second `up` the old revision is
  # still Available while the new one (a new image, a new port) starts.
  if ! { k rollout status deployment/conda-store-operator -n conda-store --timeout=180s &&
    k rollout status deployment/conda-store-api-server -n conda-store --timeout=180s; } >/dev/null; then
    k get pods -n conda-store -o wide >&2 || true
    k logs -n conda-store deployment/conda-store-operator --tail=30 >&2 || true
    k logs -n conda-store deployment/conda-store-api-server --tail=30 >&2 || true
    die "the operator or the gateway did not become available"
  fi
  curl -fsS "http://127.0.0.1:$api_port/readyz" >/dev/null \
    || die "the gateway does not answer on 127.0.0.1:$api_port"
  log "gateway serving $(cat "$STATE/api.url")"

  # The examples in examples/demo: a Namespace, an Environment, and the same packages as a
  # lockfile Environment (only for the demo channel, whose packages the lockfile names).
  k apply -f "$ROOT/examples/demo/namespace.yaml" >/dev/null
  # The operator creates the Kubernetes namespace the Environments go into.
  for _ in $(seq 120); do k get namespace demo >/dev/null 2>&1 && break; sleep 0.5; done
  local envs=(tools) e
  [[ -n ${CONDA_STORE_LOCAL_CHANNEL:-} ]] || envs+=(tools-locked)
  if [[ ${CONDA_STORE_LOCAL_EXAMPLES:-1} == 0 ]]; then
    log "gateway serving $(cat "$STATE/api.url"); no example Environments (CONDA_STORE_LOCAL_EXAMPLES=0)"
    return 0
  fi
  for e in "${envs[@]}"; do
    sed "s|DEMO_CHANNEL_URL/|${channel%/}/|g" "$ROOT/examples/demo/$e.yaml" | k apply -f - >/dev/null
  done
  log "applied examples/demo: Environments ${envs[*]}; waiting for their builds"
  local deadline=$((SECONDS + 300)) ready="" phase
  for e in "${envs[@]}"; do
    ready=""
    while ((SECONDS < deadline)); do
      ready=$(k get environment "$e" -n demo -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
      [[ $ready == True ]] && break
      phase=$(k get environment "$e" -n demo -o 'jsonpath={.status.phase}' 2>/dev/null || true)
      [[ $phase == Failed ]] && break
      sleep 0.5
    done
    [[ $ready == True ]] || break
  done
  k get environments,builds -n demo
  if [[ $ready != True ]]; then
    k logs -n conda-store deployment/conda-store-operator --tail=30 >&2 || true
    die "a build did not complete; see kubectl describe environments,builds -n demo"
  fi
  local build id
  id=$(k get environment tools -n demo -o 'jsonpath={.status.currentBuild}')
  build=$(k get builds -n demo -o "jsonpath={.items[?(@.status.id==$id)].metadata.name}")
  local art=$STATE/artifacts/builds/demo/$build url host
  url=$(cat "$STATE/api.url")
  host=${url#http://} host=${host%%/*}
  cat <<EOF

Environments ${envs[*]} in namespace demo are built; demo/tools is build $id ($build).
  lockfile:  $art/conda-lock.yaml
             curl -u demo:demo ${url}api/v1/build/$id/lockfile/
  archive:   $art/archive.tar.gz   (extract anywhere, run bin/conda-unpack)
             curl -u demo:demo -o tools.tar.gz ${url}api/v1/build/$id/archive/
  image:     $art/image.json        (blobs in $STATE/artifacts/blobs/sha256)
             skopeo inspect --tls-verify=false --creds demo:demo docker://$host/demo/tools:$id
  prefix:    $STATE/envs/demo/tools -> $build
  try:       $STATE/envs/demo/tools/bin/tool
  REST API:  ${url}api/v1/  (log in as demo/demo)
             CONDA_STORE_URL=$url CONDA_STORE_AUTH=basic CONDA_STORE_USERNAME=demo CONDA_STORE_PASSWORD=demo conda-store list environment
             ... conda-store run Demo/Tools -- tool   (the archive unpacked and activated here)
  kubectl:   eval "\$(bash scripts/local.sh env)"; \$CONDA_STORE_KUBECTL get cenv,cbuild -A
             \$CONDA_STORE_KUBECTL logs -n conda-store deploy/conda-store-operator
  stop:      bash scripts/local.sh down
EOF
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
