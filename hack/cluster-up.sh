#!/usr/bin/env bash
# cluster-up.sh — bring up (or verify) the Kubernetes cluster used by the e2e tests.
#
# * If the current kubeconfig context is a kind or minikube cluster, or
#   CAPLAB_USE_EXISTING=1, that cluster is used as-is and nothing else happens.
# * Otherwise a single-node Kubernetes v1.20.2 cluster is run on this machine as plain
#   background processes (no systemd): dockerd (with the "clamp" runtime wrapper that
#   rewrites negative oom_score_adj, see hack/README.md), etcd,
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (dockershim),
#   kube-proxy (iptables) and the volume provisioner of the default StorageClass `standard`
#   (hack/local-path-provisioner.sh: writable hostPath volumes, as kind's).
#   Logs: $CAPLAB_STATE/logs/, PIDs: $CAPLAB_STATE/pids/.
#
# Idempotent: components already running (by recorded PID) are left alone, so a second
# call on a running cluster only verifies its health. Ends by printing
#   export KUBECONFIG=$CAPLAB_STATE/kubeconfig
# on stdout (all progress goes to stderr), so `eval "$(hack/cluster-up.sh)"` works.
#
# Env: CAPLAB_CACHE (/var/cache/caplab), CAPLAB_STATE (/var/lib/caplab-cluster),
#      CAPLAB_USE_EXISTING=1, CAPLAB_UP_TIMEOUT (seconds per wait step, default 180).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

UP_TIMEOUT="${CAPLAB_UP_TIMEOUT:-180}"
T0=$(date +%s)

# ---------------------------------------------------------------------------
# 0. Use an existing kind/minikube cluster?
# ---------------------------------------------------------------------------
ext="$(external_cluster)"
if [ -n "$ext" ]; then
  log "using existing cluster ($ext, context '$(current_context)'); not starting a local one"
  kubectl get --raw /healthz >/dev/null || die "existing cluster ($ext) is not healthy"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "the local cluster needs root (dockerd, kubelet, iptables)"

# Processes killed without cluster-down.sh (a session or a CI run ending) leave etcd data,
# kubelet mounts and iptables rules behind: clean those up so this cluster starts empty.
if [ -d "$CAPLAB_STATE/etcd" ] && ! pid_alive etcd; then
  log "the previous cluster was not stopped cleanly; cleaning up first"
  CAPLAB_KEEP_DOCKER=1 "$HACK_DIR/cluster-down.sh"
fi

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
fail_with_log() { # fail_with_log COMPONENT REASON
  local f="$LOGS/$1.log"
  if [ -f "$f" ]; then
    echo "----- last 30 lines of $f -----" >&2
    tail -n 30 "$f" >&2
    echo "-----" >&2
  fi
  die "$2"
}

# start_component NAME CMD... — start CMD in its own session unless NAME is running.
start_component() {
  local name="$1"; shift
  if pid_alive "$name"; then
    log "$name already running (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  log "starting $name"
  echo "===== $(date -Is) starting $name: $*" >>"$LOGS/$name.log"
  # The inner shell records its own PID and then exec()s the component, so the PID
  # file names the component itself even if setsid had to fork.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDS/$name.pid" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$PIDS/$name.pid" ] && break; sleep 0.1; done
}

# wait_until DESC COMPONENT TIMEOUT CMD... — poll CMD every second until it succeeds.
# Fails early (with COMPONENT's log) if COMPONENT's process dies.
wait_until() {
  local desc="$1" comp="$2" timeout="$3"; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$comp" ] && [ -f "$PIDS/$comp.pid" ] && ! pid_alive "$comp"; then
      fail_with_log "$comp" "$comp exited while waiting for: $desc"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail_with_log "$comp" "timed out after ${timeout}s waiting for: $desc"
    fi
    sleep 1
  done
}

write_if_changed() { # write_if_changed FILE MODE  (content on stdin); returns 0 if changed
  local f="$1" mode="$2" tmp
  tmp="$(mktemp "$f.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$f"
  return 0
}

# ---------------------------------------------------------------------------
# 1. Dependencies and Kubernetes binaries (both cached in $CAPLAB_CACHE)
# ---------------------------------------------------------------------------
"$HACK_DIR/install-deps.sh"
"$HACK_DIR/build-k8s.sh"

mkdir -p "$CAPLAB_STATE" "$PKI" "$LOGS" "$PIDS" "$CAPLAB_CACHE/bin"
HOST_IP="$(host_ip)"
[ -n "$HOST_IP" ] || die "cannot determine the host IP"

# ---------------------------------------------------------------------------
# 2. dockerd with the oom_score_adj clamp runtime
# ---------------------------------------------------------------------------
write_if_changed "$CLAMP_RUNTIME" 0755 <<'EOF' || true
#!/bin/sh
# runc-clamp — OCI runtime wrapper installed by caplab's hack/cluster-up.sh.
# This sandbox refuses negative oom_score_adj even for root, but dockershim asks for
# -998 on every pod sandbox. Rewrite any negative "oomScoreAdj" in the bundle's
# config.json to 0, then hand over to the real runc unchanged.
bundle=""
prev=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle="$a" ;; esac
  case "$a" in --bundle=*) bundle="${a#--bundle=}" ;; esac
  prev="$a"
done
config="$bundle/config.json"
if [ -n "$bundle" ] && [ -f "$config" ] && /usr/bin/jq -e \
     '[.. | objects | .oomScoreAdj | numbers | select(. < 0)] | length > 0' "$config" >/dev/null 2>&1; then
  # Rewritten in place (same inode and mode); left alone if jq fails.
  clamped="$(/usr/bin/jq -c 'walk(if type == "object" and (.oomScoreAdj | type) == "number"
      and .oomScoreAdj < 0 then .oomScoreAdj = 0 else . end)' "$config")" \
    && printf '%s\n' "$clamped" >"$config"
fi
exec /usr/sbin/runc "$@"
EOF

# Merge our runtime into dockerd's configuration (keeping any other settings); rewritten
# only when the merge changes its meaning.
DOCKER_DAEMON_JSON=/etc/docker/daemon.json
mkdir -p "$(dirname "$DOCKER_DAEMON_JSON")"
daemon_json_changed=0
daemon_json_now='{}'
if [ -s "$DOCKER_DAEMON_JSON" ]; then
  daemon_json_now="$(jq -c . "$DOCKER_DAEMON_JSON")" \
    || die "$DOCKER_DAEMON_JSON is not valid JSON: fix it or move it away"
fi
daemon_json_wanted="$(jq -c --arg clamp "$CLAMP_RUNTIME" \
  '.runtimes = ((.runtimes // {}) + {clamp: {path: $clamp}}) | ."default-runtime" = "clamp"' \
  <<<"$daemon_json_now")"
if [ ! -e "$DOCKER_DAEMON_JSON" ] || ! jq -n -e --argjson a "$daemon_json_now" \
     --argjson b "$daemon_json_wanted" '$a == $b' >/dev/null; then
  jq . <<<"$daemon_json_wanted" | write_if_changed "$DOCKER_DAEMON_JSON" 0644 || true
  daemon_json_changed=1
  log "wrote $DOCKER_DAEMON_JSON (default runtime: clamp)"
fi

docker_runtime() { docker info --format '{{.DefaultRuntime}}' 2>/dev/null; }

if docker info >/dev/null 2>&1; then
  if [ "$(docker_runtime)" != "clamp" ] || [ "$daemon_json_changed" = 1 ]; then
    # runtimes/default-runtime are live-reloadable: SIGHUP instead of a restart.
    dpid="$(cat /var/run/docker.pid 2>/dev/null || pidof dockerd || true)"
    [ -n "$dpid" ] || die "dockerd is running but its PID is unknown; cannot reload daemon.json"
    log "reloading running dockerd (pid $dpid) to pick up the clamp runtime"
    kill -HUP "$dpid"
    # shellcheck disable=SC2016 # expanded by the inner shell
    wait_until "dockerd default runtime = clamp" "" 30 sh -c '[ "$(docker info --format "{{.DefaultRuntime}}")" = clamp ]'
  else
    log "dockerd already running (default runtime: clamp)"
  fi
else
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io)"
  # A stale pid file from an unclean stop prevents dockerd from starting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  start_component dockerd dockerd
  wait_until "dockerd to answer" dockerd 60 docker info
  [ "$(docker_runtime)" = "clamp" ] || fail_with_log dockerd "dockerd did not pick up the clamp runtime"
fi

# ---------------------------------------------------------------------------
# 3. Pause image (no registry: build a static one)
# ---------------------------------------------------------------------------
if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
  log "building $PAUSE_IMAGE"
  pdir="$(mktemp -d)"
  cat >"$pdir/pause.c" <<'EOF'
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  for (;;) pause();
  return 0;
}
EOF
  mkdir -p "$pdir/rootfs"
  gcc -static -Os -o "$pdir/rootfs/pause" "$pdir/pause.c" || die "gcc -static failed (libc6-dev installed?)"
  strip "$pdir/rootfs/pause" || true
  tar -C "$pdir/rootfs" -cf "$pdir/rootfs.tar" pause
  docker import -c 'ENTRYPOINT ["/pause"]' "$pdir/rootfs.tar" "$PAUSE_IMAGE" >/dev/null
  rm -rf "$pdir"
fi

# ---------------------------------------------------------------------------
# 4. PKI, tokens and kubeconfigs
# ---------------------------------------------------------------------------
if [ ! -f "$PKI/ca.key" ] || [ ! -f "$PKI/ca.crt" ]; then
  log "generating cluster CA"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=caplab-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  rm -f "$PKI/apiserver.crt"
fi

SANS="IP:10.0.0.1,IP:127.0.0.1,IP:$HOST_IP,IP:172.17.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:$(hostname)"
if [ ! -f "$PKI/apiserver.crt" ] || [ "$(cat "$PKI/apiserver.sans" 2>/dev/null)" != "$SANS" ]; then
  log "generating apiserver serving certificate ($HOST_IP)"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$SANS" \
    >"$PKI/apiserver.ext"
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  echo "$SANS" >"$PKI/apiserver.sans"
fi

if [ ! -f "$PKI/sa.key" ]; then
  log "generating service account signing key"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi

# Static tokens (test cluster): one identity per component, admin in system:masters.
if [ ! -f "$PKI/tokens.csv" ]; then
  log "generating static tokens"
  tok() { openssl rand -hex 24; }
  {
    echo "$(tok),admin,admin,system:masters"
    echo "$(tok),system:kube-controller-manager,kube-controller-manager"
    echo "$(tok),system:kube-scheduler,kube-scheduler"
    echo "$(tok),system:node:$NODE_NAME,kubelet,system:nodes"
    echo "$(tok),system:kube-proxy,kube-proxy"
  } >"$PKI/tokens.csv"
  chmod 600 "$PKI/tokens.csv"
fi
token_for() { awk -F, -v u="$1" '$2==u {print $1}' "$PKI/tokens.csv"; }

CA_DATA="$(base64 -w0 <"$PKI/ca.crt")"
write_kubeconfig() { # write_kubeconfig FILE USER TOKEN CONTEXT
  write_if_changed "$1" 0600 <<EOF || true
apiVersion: v1
kind: Config
clusters:
- name: caplab
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $CA_DATA
users:
- name: $2
  user:
    token: $3
contexts:
- name: $4
  context:
    cluster: caplab
    user: $2
current-context: $4
EOF
}
write_kubeconfig "$CAPLAB_KUBECONFIG"                "admin"                          "$(token_for admin)"                          caplab
write_kubeconfig "$CAPLAB_STATE/controller-manager.kubeconfig" "system:kube-controller-manager" "$(token_for system:kube-controller-manager)" caplab
write_kubeconfig "$CAPLAB_STATE/scheduler.kubeconfig"          "system:kube-scheduler"          "$(token_for system:kube-scheduler)"          caplab
write_kubeconfig "$CAPLAB_STATE/kubelet.kubeconfig"            "system:node:$NODE_NAME"         "$(token_for "system:node:$NODE_NAME")"       caplab
write_kubeconfig "$CAPLAB_STATE/kube-proxy.kubeconfig"         "system:kube-proxy"              "$(token_for system:kube-proxy)"              caplab
export KUBECONFIG="$CAPLAB_KUBECONFIG"

# ---------------------------------------------------------------------------
# 5. etcd + kube-apiserver
# ---------------------------------------------------------------------------
start_component etcd etcd --name caplab --data-dir "$CAPLAB_STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster caplab=http://127.0.0.1:2380
wait_until "etcd /health" etcd "$UP_TIMEOUT" curl -sf http://127.0.0.1:2379/health

start_component kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$HOST_IP" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
  --authorization-mode=Node,RBAC --allow-privileged=true \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --kubelet-preferred-address-types=InternalIP \
  --v=1
wait_until "kube-apiserver /readyz" kube-apiserver "$UP_TIMEOUT" kubectl get --raw /readyz

# ---------------------------------------------------------------------------
# 6. controller-manager, scheduler, kubelet, kube-proxy
# ---------------------------------------------------------------------------
start_component kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$CAPLAB_STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials --leader-elect=false \
  --controllers='*,-nodeipam' \
  --v=1

start_component kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$CAPLAB_STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --v=1

mkdir -p "$CAPLAB_STATE/kubelet"
write_if_changed "$CAPLAB_STATE/kubelet-config.yaml" 0644 <<EOF || true
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
# test cluster only: no kubelet authn/authz
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
readOnlyPort: 0
clusterDomain: cluster.local
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
# There is no registry: never garbage-collect (locally built) images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF

start_component kubelet "$K8S_BIN/kubelet" \
  --config="$CAPLAB_STATE/kubelet-config.yaml" \
  --kubeconfig="$CAPLAB_STATE/kubelet.kubeconfig" \
  --container-runtime=docker --pod-infra-container-image="$PAUSE_IMAGE" \
  --hostname-override="$NODE_NAME" --node-ip="$HOST_IP" \
  --root-dir="$CAPLAB_STATE/kubelet" \
  --v=1

start_component kube-proxy "$K8S_BIN/kube-proxy" \
  --kubeconfig="$CAPLAB_STATE/kube-proxy.kubeconfig" \
  --proxy-mode=iptables --hostname-override="$NODE_NAME" \
  --cluster-cidr=172.17.0.0/16 --masquerade-all \
  --conntrack-max-per-core=0 \
  --metrics-bind-address=127.0.0.1:10249 \
  --v=1

# ---------------------------------------------------------------------------
# 7. Wait for a usable cluster
# ---------------------------------------------------------------------------
node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = "True" ]
}
wait_until "node $NODE_NAME Ready" kubelet "$UP_TIMEOUT" node_ready
# (1.20: pods are only admitted once the ServiceAccount's token secret exists)
# shellcheck disable=SC2016 # expanded by the inner shell
wait_until "default ServiceAccount and its token" kube-controller-manager "$UP_TIMEOUT" \
  sh -c '[ -n "$(kubectl -n default get serviceaccount default -o jsonpath="{.secrets[0].name}")" ]'
# shellcheck disable=SC2016 # expanded by the inner shell
wait_until "kubernetes Service endpoints" kube-controller-manager "$UP_TIMEOUT" \
  sh -c '[ -n "$(kubectl -n default get endpoints kubernetes -o jsonpath="{.subsets[0].addresses[0].ip}")" ]'

# The default StorageClass: volumes a restricted, non-root pod can write, provisioned by
# hack/local-path-provisioner.sh (the in-tree host-path provisioner makes root-owned 0750
# directories and hostPath ignores fsGroup). A class left by an older cluster-up.sh with
# another provisioner is replaced (a provisioner cannot be changed in place).
start_component local-path-provisioner "$HACK_DIR/local-path-provisioner.sh"
sc_provisioner="$(kubectl get storageclass "$LOCAL_PATH_CLASS" -o jsonpath='{.provisioner}' 2>/dev/null || true)"
if [ "$sc_provisioner" != "$LOCAL_PATH_PROVISIONER" ]; then
  if [ -n "$sc_provisioner" ]; then
    log "replacing StorageClass '$LOCAL_PATH_CLASS' ($sc_provisioner)"
    kubectl delete storageclass "$LOCAL_PATH_CLASS" >/dev/null
  fi
  log "creating default StorageClass '$LOCAL_PATH_CLASS' ($LOCAL_PATH_PROVISIONER, dirs in $LOCAL_PATH_DIR)"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $LOCAL_PATH_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: $LOCAL_PATH_PROVISIONER
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
fi

for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy local-path-provisioner; do
  pid_alive "$c" || fail_with_log "$c" "$c is not running"
done

log "cluster ready in $(( $(date +%s) - T0 ))s (node $NODE_NAME, API https://127.0.0.1:6443, logs in $LOGS)"
echo "export KUBECONFIG=$CAPLAB_KUBECONFIG"
