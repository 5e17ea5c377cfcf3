# shellcheck shell=bash
# lib.sh — shared settings and helpers for the hack/ cluster scripts. Sourced, not run.
# The settings below are used by the scripts that source this file:
# shellcheck disable=SC2034
#
# Layout (all outside the checkout, so any clone/CI directory reuses them):
#   $CAPLAB_CACHE  (/var/cache/caplab)       slow-to-build things: k8s binaries, kubectl/helm
#   $CAPLAB_STATE  (/var/lib/caplab-cluster) the running local cluster: pki, kubeconfig,
#                                             etcd data, logs/, pids/, local-path/ (volumes)

CAPLAB_CACHE="${CAPLAB_CACHE:-/var/cache/caplab}"
CAPLAB_STATE="${CAPLAB_STATE:-/var/lib/caplab-cluster}"
export CAPLAB_CACHE CAPLAB_STATE

K8S_BIN="$CAPLAB_CACHE/k8s/bin"
TOOLS_BIN="$CAPLAB_CACHE/tools/bin"
PKI="$CAPLAB_STATE/pki"
LOGS="$CAPLAB_STATE/logs"
PIDS="$CAPLAB_STATE/pids"
CAPLAB_KUBECONFIG="$CAPLAB_STATE/kubeconfig"
NODE_NAME="${CAPLAB_NODE_NAME:-caplab-control-plane}"
CLAMP_RUNTIME="$CAPLAB_CACHE/bin/runc-clamp"
PAUSE_IMAGE="local/pause:1"
# The default StorageClass and its provisioner, hack/local-path-provisioner.sh, which keeps
# the volumes' directories (world-writable, as kind's local-path-provisioner makes them) here.
LOCAL_PATH_CLASS=standard
LOCAL_PATH_PROVISIONER=caplab.dev/local-path
LOCAL_PATH_DIR="$CAPLAB_STATE/local-path"

# Prefer the cached kubectl/helm (newest), fall back to whatever is on PATH.
export PATH="$TOOLS_BIN:$K8S_BIN:$PATH"
# Cargo installed by install-deps.sh (rustup) on a machine whose profile was not re-read.
if ! command -v cargo >/dev/null 2>&1 && [ -d "$HOME/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

log()  { echo "[$(basename "$0" .sh) $(date +%H:%M:%S)] $*" >&2; }
die()  { echo "[$(basename "$0" .sh)] ERROR: $*" >&2; exit 1; }

# The kubeconfig context the user's environment currently points at ("" if none).
current_context() {
  command -v kubectl >/dev/null 2>&1 || { echo ""; return 0; }
  kubectl config current-context 2>/dev/null || echo ""
}

# Prints "kind:<name>", "minikube:<profile>" or "existing" when an external
# cluster should be used; prints nothing for the local caplab cluster.
external_cluster() {
  local ctx
  # When KUBECONFIG points at our own kubeconfig, it's never "external".
  if [ "${KUBECONFIG:-}" = "$CAPLAB_KUBECONFIG" ]; then return 0; fi
  ctx="$(current_context)"
  case "$ctx" in
    kind-*)   echo "kind:${ctx#kind-}"; return 0 ;;
    minikube) echo "minikube:minikube"; return 0 ;;
  esac
  if [ -n "$ctx" ] && kubectl config view --minify -o jsonpath='{.contexts[0].context.cluster}' 2>/dev/null \
       | grep -q '^minikube'; then
    echo "minikube:$ctx"; return 0
  fi
  if [ "${CAPLAB_USE_EXISTING:-0}" = "1" ]; then echo "existing"; fi
}

# pid_alive NAME -> 0 if $PIDS/NAME.pid names a live process.
pid_alive() {
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Stop the process recorded in $PIDS/NAME.pid (TERM, then KILL after ~15 s).
stop_pid() {
  local name="$1" f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit; killing"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$f"
}

host_ip() {
  local ip
  ip="$(ip -4 -o addr show dev "${CAPLAB_HOST_IFACE:-eth0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)"
  if [ -z "$ip" ]; then
    ip="$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for(i=1;i<=NF;i++) if($i=="src"){print $(i+1); exit}}')"
  fi
  [ -n "$ip" ] || ip="$(hostname -I | awk '{print $1}')"
  echo "$ip"
}
