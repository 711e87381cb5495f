#!/usr/bin/env bash
# A real Kubernetes 1.20 control plane on loopback, for the tests: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, built from Debian's packages by build-k8s.sh.
#
#   bash tests/e2e/cluster.sh up       # start (no-op when already running); prints progress on stderr
#   bash tests/e2e/cluster.sh up --node  # also a node (containerd + kubelet): pods run; adds one to a
#                                        # running control plane. Same as CONDA_STORE_CLUSTER_NODE=1 ... up
#   bash tests/e2e/cluster.sh env      # prints `export KUBECONFIG=...` etc.: eval "$(bash tests/e2e/cluster.sh env)"
#   bash tests/e2e/cluster.sh status   # exit 0 when running, 1 when not
#   bash tests/e2e/cluster.sh down     # stop every process it started and remove the state dir
#
# Environment:
#   CONDA_STORE_CLUSTER_DIR  state dir (default /tmp/conda-store-cluster); two clusters with two state dirs
#                            coexist: every port is picked at random and etcd's data lives in the state dir
#   CONDA_STORE_K8S_CACHE    binary cache root, see build-k8s.sh
#   CONDA_STORE_CLUSTER_TIMEOUT  seconds to wait for each readiness step (default 90)
#   CONDA_STORE_CLUSTER_NODE=1   start the node too (as --node)
#
# State dir layout: kubeconfig (admin, system:masters), pki/, auth/tokens.csv, *.kubeconfig per component,
# logs/<component>.log, pids/<component>.pid, cluster.env (ports, binary dir), started (start order).
# Flags and measured facts: docs/testing.md and the comments below. Pods run only with the
# node (kubelet + containerd, opt-in), see node_up/node_down below; its files are in node/ and node.env,
# images for it come from images.sh (build locally, import, imagePullPolicy: Never).
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
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -F -- "$STATE/" >/dev/null || return 1
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
# Node (kubelet + containerd + runc), opt-in: `cluster.sh up --node` or CONDA_STORE_CLUSTER_NODE=1.
# Debian's containerd, runc and CNI plugins (installed when missing, Debian's own containerd service never
# started); our containerd runs with its own config, root, state and socket under $STATE/node, the
# kubelet with its own root dir there, a cgroup root /conda-store-<cluster id> and random ports, so two
# node clusters do not share pods. The pause image is built from the cached pause.c (images.sh).
# node_down stops them, kills what is left in our cgroups, unmounts everything under $STATE, removes
# our bridge, our files outside $STATE (/var/log/pods, /var/lib/cni) and restores the sysctls.
# Known limits: the kubelet 1.20 writes pod logs to /var/log/pods and /var/log/containers (not
# configurable) and the sysctls are machine-wide (two node clusters at once: the first down restores them).

# Sysctls the kubelet (and the bridge plugin: ip_forward) change.
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)

node_wanted() { [[ ${NODE_REQUESTED:-0} == 1 || ${CONDA_STORE_CLUSTER_NODE:-0} == 1 ]]; }

ctr_node() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

node_packages() {
  local missing=() p made_policy=0 aptlog=$STATE/logs/apt.log
  for p in containerd runc containernetworking-plugins gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "the node needs Debian packages ${missing[*]}: run as root once"
  log "apt-get install ${missing[*]} (services not started)"
  # Debian's containerd service must not start: a policy-rc.d that refuses every start.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# conda-store tests/e2e/cluster.sh: no service starts during this install\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$aptlog" 2>&1; then
    log "apt-get install failed; apt-get update and retry"
    apt-get update -qq >>"$aptlog" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 \
      || { ((made_policy)) && rm -f /usr/sbin/policy-rc.d; tail -n 20 "$aptlog" >&2; die "apt-get install ${missing[*]} failed"; }
  fi
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  # We installed it: keep Debian's containerd service from starting at boot as well.
  if [[ " ${missing[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null; then
    systemctl disable containerd.service >/dev/null 2>&1 || true
  fi
}

# free_subnet: a private /24 no route or address of this machine uses (10.200.0.0/16 - 10.249.255.0/24).
free_subnet() {
  local used tries=0 net
  used=$(ip -4 route show table all 2>/dev/null; ip -4 addr 2>/dev/null)
  while ((tries++ < 200)); do
    net=10.$((200 + RANDOM % 50)).$((RANDOM % 256))
    grep -qF -- "$net." <<<"$used" || { echo "$net"; return 0; }
  done
  die "no free private /24 found"
}

node_save_sysctls() {
  local f=$STATE/node/sysctls.saved s v
  [[ -f $f ]] && return 0
  : >"$f.tmp"
  for s in "${NODE_SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v" >>"$f.tmp"
  done
  mv "$f.tmp" "$f"
}

node_restore_sysctls() {
  local f=$STATE/node/sysctls.saved line
  [[ -f $f ]] || return 0
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    [[ $(sysctl -n "${line%%=*}" 2>/dev/null) == "${line#*=}" ]] && continue
    sysctl -q -w "$line" >/dev/null 2>&1 || log "warning: could not restore sysctl $line"
  done <"$f"
}

# node_cgroup_dirs: our cgroup directories in every hierarchy, deepest first.
node_cgroup_dirs() {
  [[ -n ${CGROUP_ROOT:-} && $CGROUP_ROOT == /conda-store-* ]] || return 0
  local d
  for d in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    [[ -d $d ]] && find "$d" -depth -type d
  done
  return 0
}

node_cgroups_create() {
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -f ${d}cgroup.procs ]] || continue
    mkdir -p "${d%/}$CGROUP_ROOT"
    if [[ -f ${d}cpuset.cpus ]]; then # a v1 cpuset child starts empty
      cat "${d}cpuset.cpus" >"${d%/}$CGROUP_ROOT/cpuset.cpus"
      cat "${d}cpuset.mems" >"${d%/}$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

# node_kill_strays: kill every process left in our cgroups, and containerd shims of our socket.
node_kill_strays() {
  local i pids dirs=() d p
  for i in $(seq 25); do
    pids=()
    mapfile -t dirs < <(node_cgroup_dirs)
    for d in "${dirs[@]}"; do
      [[ -f $d/cgroup.procs ]] && while read -r p; do pids+=("$p"); done <"$d/cgroup.procs"
    done
    for p in /proc/[0-9]*; do
      [[ $(cat "$p/comm" 2>/dev/null) == containerd-shim* ]] || continue
      tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -F -- "$STATE/" >/dev/null && pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || return 0
    ((i > 1)) || log "killing ${#pids[@]} leftover container/shim processes"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.2
  done
  log "warning: processes still alive in our cgroups: ${pids[*]}"
}

# node_unmount: every mount point under $STATE, deepest first (lazily when busy).
node_unmount() {
  local i mounts m
  for i in 1 2 3 4 5; do
    mapfile -t mounts < <(awk -v p="$STATE/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -ru)
    ((${#mounts[@]})) || return 0
    for m in "${mounts[@]}"; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
  awk -v p="$STATE/" 'index($5, p) == 1 {found = 1} END {exit !found}' /proc/self/mountinfo \
    && die "mounts remain under $STATE: not removing it"
  return 0
}

node_ready() {
  [[ $(kubectl_admin get node localhost \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

node_up() {
  node_wanted || return 0
  local t0=$SECONDS nd=$STATE/node pause_tar pause_ref net
  node_packages
  mkdir -p "$nd"
  pause_tar=$(bash "$HERE/images.sh" build pause) || fail_up "building the pause image failed"
  pause_ref=$(bash "$HERE/images.sh" ref pause)
  load_used_ports
  free_port KUBELET_PORT
  free_port KUBELET_HEALTHZ_PORT
  net=$(free_subnet)
  CONTAINERD_SOCK=$nd/containerd.sock
  CGROUP_ROOT=/conda-store-$CLUSTER_ID
  CNI_NET=conda-store-$CLUSTER_ID
  CNI_BRIDGE=csbr${CLUSTER_ID:0:8}
  POD_SUBNET=$net.0/24
  POD_GATEWAY=$net.1
  [[ -e /var/lib/kubelet ]] && VAR_LIB_KUBELET_EXISTED=1 || VAR_LIB_KUBELET_EXISTED=0
  cat >"$STATE/node.env" <<EOF
CONTAINERD_SOCK=$CONTAINERD_SOCK
CGROUP_ROOT=$CGROUP_ROOT
CNI_NET=$CNI_NET
CNI_BRIDGE=$CNI_BRIDGE
POD_SUBNET=$POD_SUBNET
POD_GATEWAY=$POD_GATEWAY
KUBELET_PORT=$KUBELET_PORT
KUBELET_HEALTHZ_PORT=$KUBELET_HEALTHZ_PORT
PAUSE_IMAGE=$pause_ref
VAR_LIB_KUBELET_EXISTED=$VAR_LIB_KUBELET_EXISTED
EOF
  node_save_sysctls
  node_cgroups_create

  mkdir -p "$nd/cni" "$nd/kubelet" "$nd/containerd-root" "$nd/containerd-state" "$nd/runc" "$nd/opt"
  # The bridge and its gateway address exist from the start (the bridge plugin adopts them), so
  # servers the pods use (channels, S3) can listen on the gateway before the first pod runs.
  ip link add "$CNI_BRIDGE" type bridge 2>/dev/null || true
  ip addr replace "$POD_GATEWAY/24" dev "$CNI_BRIDGE" || fail_up "cannot address bridge $CNI_BRIDGE"
  ip link set "$CNI_BRIDGE" up || fail_up "cannot bring bridge $CNI_BRIDGE up"
  cat >"$nd/cni/10-conda-store.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$nd/cni-ipam"
      }
    }
  ]
}
EOF
  # containerd's defaults, with everything it keeps moved under $STATE/node (shims still put their
  # sockets in /run/containerd/s, hard-coded in 1.6). restrict_oom_score_adj is required where root
  # may not lower oom_score_adj (no CAP_SYS_RESOURCE), as in unprivileged containers.
  containerd config default | sed -E \
    -e "s|^root = .*|root = \"$nd/containerd-root\"|" \
    -e "s|^state = .*|state = \"$nd/containerd-state\"|" \
    -e "s|^disabled_plugins = .*|disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\"]|" \
    -e "s|^(  address = )\"/run/containerd/containerd.sock\"|\1\"$CONTAINERD_SOCK\"|" \
    -e "s|^( *restrict_oom_score_adj = ).*|\1true|" \
    -e "s|^( *netns_mounts_under_state_dir = ).*|\1true|" \
    -e "s|^( *sandbox_image = ).*|\1\"$pause_ref\"|" \
    -e "s|^( *bin_dir = ).*|\1\"/usr/lib/cni\"|" \
    -e "s|^( *conf_dir = ).*|\1\"$nd/cni\"|" \
    -e "s|^( *SystemdCgroup = ).*|\1false|" \
    -e "s|^( *Root = )\"\"|\1\"$nd/runc\"|" \
    -e "s|^( *snapshotter = ).*|\1\"overlayfs\"|" \
    -e "s|^( *path = )\"/opt/containerd\"|\1\"$nd/opt\"|" \
    >"$nd/containerd.toml"
  local key
  for key in "root = \"$nd/containerd-root\"" "address = \"$CONTAINERD_SOCK\"" "restrict_oom_score_adj = true" \
    "sandbox_image = \"$pause_ref\"" "conf_dir = \"$nd/cni\"" "netns_mounts_under_state_dir = true"; do
    grep -qF -- "$key" "$nd/containerd.toml" || fail_up "containerd config: could not set $key"
  done
  start_component containerd containerd --config "$nd/containerd.toml"
  wait_for "containerd on $CONTAINERD_SOCK" containerd ctr --address "$CONTAINERD_SOCK" version
  ctr_node images import --all-platforms "$pause_tar" >>"$STATE/logs/ctr.log" 2>&1 \
    || fail_up "importing the pause image $pause_tar failed (see $STATE/logs/ctr.log)"

  cat >"$nd/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failSwapOn: false
makeIPTablesUtilChains: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $STATE/pki/ca.crt
authorization:
  mode: Webhook
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
resolvConf: /etc/resolv.conf
EOF
  start_component kubelet "$BIN/kubelet" \
    --config="$nd/kubelet-config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$nd/kubelet" --cert-dir="$nd/kubelet/pki" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CONTAINERD_SOCK" \
    --image-service-endpoint="unix://$CONTAINERD_SOCK" --runtime-request-timeout=2m \
    --pod-infra-container-image="$pause_ref" --hostname-override=localhost --v=1
  wait_for "node localhost Ready" kubelet node_ready
  pid_alive containerd || fail_up "containerd exited"
  log "node localhost Ready in $((SECONDS - t0)) s (pods on $POD_SUBNET, bridge $CNI_BRIDGE, gateway $POD_GATEWAY)"
}

# stop_one NAME: TERM, KILL after 10 s.
stop_one() {
  local name=$1 pid deadline=$((SECONDS + 10))
  pid_alive "$name" || return 0
  pid=$(<"$STATE/pids/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$name"; do
    if ((SECONDS >= deadline)); then
      log "killing $name (pid $pid) with SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  log "stopped $name (pid $pid)"
}

node_down() {
  [[ -f $STATE/node.env ]] || return 0
  # shellcheck source=/dev/null
  source "$STATE/node.env"
  local nd=$STATE/node uids=() dirs=() d l ids id
  stop_one kubelet
  # Pods: delete every task through containerd (shims exit and remove their sockets), then containerd.
  if pid_alive containerd; then
    ids=$(ctr_node tasks ls -q 2>/dev/null || true)
    for id in $ids; do ctr_node tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do
      for _ in $(seq 25); do
        ctr_node tasks rm -f "$id" >/dev/null 2>&1 && break
        ctr_node tasks ls -q 2>/dev/null | grep -xF "$id" >/dev/null || break
        sleep 0.2
      done
    done
  fi
  stop_one containerd
  node_kill_strays
  # Pod log dirs (/var/log/pods/<ns>_<name>_<uid>) of our pods, and the kubelet's symlinks to them.
  for d in "$nd"/kubelet/pods/*/; do [[ -d $d ]] && uids+=("$(basename "$d")"); done
  node_unmount
  local u
  for u in "${uids[@]}"; do
    for d in /var/log/pods/*_"$u"; do [[ -d $d ]] && rm -rf --one-file-system "$d"; done
  done
  for l in /var/log/containers/*.log; do
    [[ -L $l && ! -e $l ]] && [[ $(readlink "$l") == /var/log/pods/* ]] && rm -f "$l"
  done
  rmdir /var/log/pods /var/log/containers 2>/dev/null || true
  rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  if ((VAR_LIB_KUBELET_EXISTED == 0)) && [[ -d /var/lib/kubelet ]]; then rm -rf --one-file-system /var/lib/kubelet; fi
  ip link del "$CNI_BRIDGE" >/dev/null 2>&1 || true
  mapfile -t dirs < <(node_cgroup_dirs)
  for d in "${dirs[@]}"; do rmdir "$d" 2>/dev/null || log "warning: could not remove cgroup $d"; done
  node_restore_sysctls
  rm -f "$STATE/node.env"
}

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
  if [[ -f $STATE/node.env ]]; then
    # shellcheck source=/dev/null
    source "$STATE/node.env"
    printf 'export CONDA_STORE_CONTAINERD_SOCK=%q\n' "$CONTAINERD_SOCK"
    # pods reach the host at this address (a server for pods listens here, not only on 127.0.0.1)
    printf 'export CONDA_STORE_POD_GATEWAY=%q\n' "$POD_GATEWAY"
  fi
}

cmd_down() {
  if [[ ! -e $STATE ]]; then log "nothing to stop: no state dir $STATE"; return 0; fi
  [[ -f $STATE/.conda-store-cluster ]] \
    || die "$STATE has no .conda-store-cluster marker: not a cluster state dir, not removing it"
  local t0=$SECONDS
  node_down
  stop_all
  rm -rf --one-file-system "$STATE"
  log "down in $((SECONDS - t0)) s"
}

cmd_up() {
  local t0=$SECONDS
  if running; then
    if node_wanted && [[ ! -f $STATE/node.env ]]; then
      log "control plane already running in $STATE: adding the node"
      # shellcheck source=/dev/null
      source "$STATE/cluster.env"
      BIN=$CONDA_STORE_K8S_BIN
      node_up
      return 0
    fi
    log "already running: KUBECONFIG=$STATE/kubeconfig"
    return 0
  fi
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
  log "$(node_wanted && echo "cluster with node" || echo "control plane") up in $((SECONDS - t0)) s; use: eval \"\$(bash $HERE/cluster.sh env)\""
}

usage() { echo "usage: $0 up [--node]|down|env|status" >&2; exit 2; }

NODE_REQUESTED=0
if [[ $# == 2 && $1 == up && $2 == --node ]]; then NODE_REQUESTED=1; set -- up; fi
[[ $# == 1 ]] || usage
case $1 in
  up | down)
    # One up/down at a time per state dir (the lock file lives beside it, as down removes the dir).
    mkdir -p "$(dirname "$STATE")"
    exec 8>"$STATE.lock"
    flock 8
    "cmd_$1"
    # Nothing of a stopped cluster stays in the temp dir, not even its lock.
    if [[ $1 == down && ! -e $STATE ]]; then rm -f "$STATE.lock"; fi
    ;;
  env) cmd_env ;;
  status) cmd_status || exit 1 ;;
  *) usage ;;
esac
