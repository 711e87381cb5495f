#!/usr/bin/env bash
# A real Kubernetes 1.20 control plane on loopback, for the tests: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, built from Debian's packages by build-k8s.sh.
#
#   bash tests/e2e/cluster.sh up       # start (no-op when already running); prints progress on stderr
#   bash tests/e2e/cluster.sh env      # prints `export KUBECONFIG=...` etc.: eval "$(bash tests/e2e/cluster.sh env)"
#   bash tests/e2e/cluster.sh status   # exit 0 when running, 1 when not
#   bash tests/e2e/cluster.sh down     # stop every process it started and remove the state dir
#
# Environment:
#   CONDA_STORE_CLUSTER_DIR  state dir (default /tmp/conda-store-cluster); two clusters with two state dirs
#                            coexist: every port is picked at random and etcd's data lives in the state dir
#   CONDA_STORE_K8S_CACHE    binary cache root, see build-k8s.sh
#   CONDA_STORE_CLUSTER_TIMEOUT  seconds to wait for each readiness step (default 90)
#
# State dir layout: kubeconfig (admin, system:masters), pki/, auth/tokens.csv, *.kubeconfig per component,
# logs/<component>.log, pids/<component>.pid, cluster.env (ports, binary dir), started (start order).
# Flags and measured facts: shared/local-cluster.md and DESIGN.md, "Testing". No pods run yet: the node
# (kubelet + containerd) is a separate part, see node_up/node_down below.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${CONDA_STORE_CLUSTER_DIR:-/tmp/conda-store-cluster}
STATE=${STATE%/}
TIMEOUT=${CONDA_STORE_CLUSTER_TIMEOUT:-90}
SERVICE_CIDR=10.96.0.0/24
SERVICE_IP=10.96.0.1

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
trap 'log "ERROR: command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# ------------------------------------------------------------------------------------------------
# Process bookkeeping: every component started with start_component gets a pid file and a log, and
# `down` stops them all in reverse start order. The node part uses the same helpers.

# pid_alive NAME: the pid file's process is alive and really ours (its command line names the state dir).
pid_alive() {
  local pidfile=$STATE/pids/$1.pid pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE/" || return 1
  # a zombie is not alive
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# start_component NAME BINARY ARGS...: start in its own session, detached, log to logs/NAME.log.
start_component() {
  local name=$1; shift
  mkdir -p "$STATE/logs" "$STATE/pids"
  # In a script (no job control) the child is no process-group leader, so setsid execs without forking:
  # $! is the component's own pid.
  # fd 8 (the up/down lock) and fd 9 are closed: a component must not hold the lock.
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo "$!" >"$STATE/pids/$name.pid"
  echo "$name" >>"$STATE/started"
  log "started $name (pid $!)"
}

# components: the started ones, in start order.
components() { [[ -f $STATE/started ]] && awk '!seen[$0]++' "$STATE/started"; }

# stop_all: TERM in reverse start order, KILL after a grace period, then verify that all are gone.
stop_all() {
  local names=() name pid i pids=()
  mapfile -t names < <(components || true)
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    name=${names[i]}
    if pid_alive "$name"; then
      pid=$(<"$STATE/pids/$name.pid")
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$name:$pid")
    fi
  done
  ((${#pids[@]})) || return 0
  local deadline=$((SECONDS + 10)) left
  while :; do
    left=()
    for i in "${pids[@]}"; do pid_alive "${i%%:*}" && left+=("$i"); done
    ((${#left[@]})) || break
    if ((SECONDS >= deadline)); then
      for i in "${left[@]}"; do
        log "killing ${i%%:*} (pid ${i#*:}) with SIGKILL"
        kill -KILL "${i#*:}" 2>/dev/null || true
      done
      sleep 1
      left=()
      for i in "${pids[@]}"; do pid_alive "${i%%:*}" && left+=("$i"); done
      ((${#left[@]} == 0)) || die "still running after SIGKILL: ${left[*]}"
      break
    fi
    sleep 0.2
  done
  for i in "${pids[@]}"; do log "stopped ${i%%:*} (pid ${i#*:})"; done
}

# log_tails: the end of every component log, for error messages.
log_tails() {
  local name
  for name in $(components || true); do
    [[ -f $STATE/logs/$name.log ]] || continue
    printf -- '----- %s (last 20 lines of %s)\n' "$name" "$STATE/logs/$name.log" >&2
    tail -n 20 "$STATE/logs/$name.log" >&2
  done
}

# fail_up MESSAGE: stop what was started, keep the logs, exit.
fail_up() {
  log_tails
  stop_all || true
  die "$1 (logs kept in $STATE/logs; 'cluster.sh down' removes the state dir)"
}

# wait_for DESCRIPTION COMPONENT COMMAND...: poll COMMAND until it succeeds, COMPONENT dies, or timeout.
wait_for() {
  local what=$1 comp=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$comp" || fail_up "$comp exited while waiting for $what"
    ((SECONDS < deadline)) || fail_up "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

# ------------------------------------------------------------------------------------------------
# Ports: random free loopback ports (below the ephemeral range, not used by any local socket).

declare -A USED_PORTS=()
load_used_ports() {
  local f line port
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $f ]] || continue
    while read -r _ line _; do
      port=${line##*:}
      if [[ $port =~ ^[0-9A-Fa-f]{4}$ ]]; then USED_PORTS[$((16#$port))]=1; fi
    done <"$f"
  done
  return 0
}
# free_port VAR: set VAR to a free port (never one handed out before in this run).
free_port() {
  local p tries=0
  while ((tries++ < 1000)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ -z ${USED_PORTS[$p]:-} ]] || continue
    USED_PORTS[$p]=1
    printf -v "$1" '%s' "$p"
    return 0
  done
  die "no free port found"
}

# ------------------------------------------------------------------------------------------------
# PKI and credentials.

openssl_q() { openssl "$@" 2>>"$STATE/logs/openssl.log"; }

# sign NAME SUBJECT EXTENSIONS: key + cert signed by the cluster CA.
sign() {
  local name=$1 subj=$2 ext=$3 pki=$STATE/pki
  openssl_q genrsa -out "$pki/$name.key" 2048
  openssl_q req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr"
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl_q x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

make_pki() {
  local pki=$STATE/pki
  mkdir -p "$pki" "$STATE/auth"
  chmod 700 "$pki" "$STATE/auth"
  openssl_q req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 -sha256 \
    -subj "/CN=conda-store-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  openssl_q genrsa -out "$pki/sa.key" 2048
  openssl_q rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

  # token,user,uid,"groups"
  local t_admin t_cm t_sched t_node
  t_admin=$(openssl rand -hex 24); t_cm=$(openssl rand -hex 24)
  t_sched=$(openssl rand -hex 24); t_node=$(openssl rand -hex 24)
  cat >"$STATE/auth/tokens.csv" <<EOF
$t_admin,admin,admin,"system:masters"
$t_cm,system:kube-controller-manager,system:kube-controller-manager
$t_sched,system:kube-scheduler,system:kube-scheduler
$t_node,system:node:localhost,system:node:localhost,"system:nodes"
EOF
  chmod 600 "$STATE/auth/tokens.csv"
  write_kubeconfig "$STATE/kubeconfig" admin "$t_admin"
  write_kubeconfig "$STATE/controller-manager.kubeconfig" system:kube-controller-manager "$t_cm"
  write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler "$t_sched"
  write_kubeconfig "$STATE/kubelet.kubeconfig" system:node:localhost "$t_node"
}

# write_kubeconfig FILE USER TOKEN (self-contained: the CA is inlined)
write_kubeconfig() {
  local file=$1 user=$2 token=$3
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: conda-store-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$STATE/pki/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: conda-store-test
  context:
    cluster: conda-store-test
    user: $user
    namespace: default
current-context: conda-store-test
EOF
  )
}

# ------------------------------------------------------------------------------------------------
# Control plane.

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout=5s "$@"; }
readyz_ok() { [[ $(kubectl_admin get --raw /readyz 2>/dev/null) == ok ]]; }

controlplane_up() {
  local etcd_client=http://127.0.0.1:$ETCD_PORT etcd_peer=http://127.0.0.1:$ETCD_PEER_PORT pki=$STATE/pki
  mkdir -p "$STATE/etcd"
  chmod 700 "$STATE/etcd"
  start_component etcd "$BIN/etcd" \
    --name=default --data-dir="$STATE/etcd" --logger=zap \
    --listen-client-urls="$etcd_client" --advertise-client-urls="$etcd_client" \
    --listen-peer-urls="$etcd_peer" --initial-advertise-peer-urls="$etcd_peer" \
    --initial-cluster="default=$etcd_peer" --initial-cluster-state=new \
    --initial-cluster-token="conda-store-$CLUSTER_ID"
  wait_for "etcd health on $etcd_client" etcd \
    "$BIN/etcdctl" --endpoints="$etcd_client" --command-timeout=2s endpoint health

  start_component kube-apiserver "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --insecure-port=0 \
    --advertise-address=127.0.0.1 \
    --etcd-servers="$etcd_client" --etcd-prefix="/conda-store-$CLUSTER_ID" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" --token-auth-file="$STATE/auth/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --endpoint-reconciler-type=none \
    --allow-privileged=true --profiling=false
  wait_for "kube-apiserver /readyz on https://127.0.0.1:$APISERVER_PORT" kube-apiserver readyz_ok

  start_component kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --port=0 --secure-port=0 --leader-elect=false --profiling=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR"
  start_component kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --port=0 --secure-port=0 --leader-elect=false --profiling=false
  wait_for "service account default/default" kube-controller-manager \
    kubectl_admin get serviceaccount default --namespace default
  pid_alive kube-scheduler || fail_up "kube-scheduler exited"
}

# ------------------------------------------------------------------------------------------------
# Node (kubelet + containerd + runc), not implemented yet. When it is: node_up starts containerd and
# the kubelet with start_component (they are then stopped by stop_all), using $STATE/kubelet.kubeconfig
# (system:node:localhost, group system:nodes) and $STATE/pki/ca.crt as the kubelet's client CA; node_down
# restores sysctls and cleans what they leave outside the state dir (see shared/local-cluster.md).
node_up() { :; }
node_down() { :; }

# ------------------------------------------------------------------------------------------------
# Commands.

running() {
  [[ -f $STATE/cluster.env ]] || return 1
  local name any=0
  for name in $(components || true); do
    pid_alive "$name" || return 1
    any=1
  done
  ((any)) || return 1
  # shellcheck source=/dev/null
  (source "$STATE/cluster.env" && BIN=$CONDA_STORE_K8S_BIN && readyz_ok)
}

cmd_status() {
  if [[ ! -d $STATE ]]; then echo "not running (no state dir $STATE)"; return 1; fi
  local name
  for name in $(components || true); do
    if pid_alive "$name"; then
      echo "$name: running (pid $(<"$STATE/pids/$name.pid"))"
    else
      echo "$name: not running"
    fi
  done
  if running; then
    echo "running: KUBECONFIG=$STATE/kubeconfig"
  else
    echo "not running (state dir $STATE)"
    return 1
  fi
}

cmd_env() {
  running || die "no cluster running in $STATE (start it with: bash $HERE/cluster.sh up)"
  # shellcheck source=/dev/null
  source "$STATE/cluster.env"
  printf 'export CONDA_STORE_CLUSTER_DIR=%q\n' "$STATE"
  printf 'export KUBECONFIG=%q\n' "$STATE/kubeconfig"
  printf 'export CONDA_STORE_K8S_BIN=%q\n' "$CONDA_STORE_K8S_BIN"
  printf 'export CONDA_STORE_KUBECTL=%q\n' "$CONDA_STORE_K8S_BIN/kubectl"
}

cmd_down() {
  if [[ ! -e $STATE ]]; then log "nothing to stop: no state dir $STATE"; return 0; fi
  [[ -f $STATE/.conda-store-cluster ]] \
    || die "$STATE has no .conda-store-cluster marker: not a cluster state dir, not removing it"
  local t0=$SECONDS
  node_down
  stop_all
  rm -rf "$STATE"
  log "down in $((SECONDS - t0)) s"
}

cmd_up() {
  local t0=$SECONDS
  if running; then log "already running: KUBECONFIG=$STATE/kubeconfig"; return 0; fi
  if [[ -e $STATE ]]; then
    log "cleaning a stale or broken cluster in $STATE"
    cmd_down
  fi
  BIN=$(bash "$HERE/build-k8s.sh") || die "build-k8s.sh failed"
  [[ -x $BIN/kube-apiserver && -x $BIN/kubectl ]] || die "build-k8s.sh gave no usable bin dir: '$BIN'"

  mkdir -p "$STATE/logs" "$STATE/pids"
  touch "$STATE/.conda-store-cluster"
  load_used_ports
  free_port ETCD_PORT
  free_port ETCD_PEER_PORT
  free_port APISERVER_PORT
  CLUSTER_ID=$(openssl rand -hex 6)
  cat >"$STATE/cluster.env" <<EOF
CONDA_STORE_K8S_BIN=$(printf '%q' "$BIN")
CLUSTER_ID=$CLUSTER_ID
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
EOF
  log "state dir $STATE: etcd 127.0.0.1:$ETCD_PORT, kube-apiserver https://127.0.0.1:$APISERVER_PORT"
  make_pki
  controlplane_up
  node_up
  log "control plane up in $((SECONDS - t0)) s; use: eval \"\$(bash $HERE/cluster.sh env)\""
}

usage() { echo "usage: $0 up|down|env|status" >&2; exit 2; }

[[ $# == 1 ]] || usage
case $1 in
  up | down)
    # One up/down at a time per state dir (the lock file lives beside it, as down removes the dir).
    mkdir -p "$(dirname "$STATE")"
    exec 8>"$STATE.lock"
    flock 8
    "cmd_$1"
    ;;
  env) cmd_env ;;
  status) cmd_status || exit 1 ;;
  *) usage ;;
esac
