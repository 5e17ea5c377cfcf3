#!/usr/bin/env bash
# cluster-down.sh — stop the local cluster started by hack/cluster-up.sh and clean up
# so the next `cluster-up.sh` starts from an empty cluster:
#   * stops the processes cluster-up.sh started (by the PIDs in $CAPLAB_STATE/pids),
#     including dockerd only if cluster-up.sh started it
#   * removes the pod containers the kubelet created (names k8s_*)
#   * removes kube-proxy/kubelet iptables chains (KUBE-*)
#   * unmounts the kubelet's volumes and wipes etcd data, kubelet state and the volumes of
#     the local-path provisioner (their PersistentVolumes go with etcd)
# Keeps: PKI, tokens and kubeconfig (so an exported KUBECONFIG stays valid), images,
# and everything in $CAPLAB_CACHE. Does nothing for kind/minikube/CAPLAB_USE_EXISTING=1.
# Idempotent. Set CAPLAB_KEEP_DOCKER=1 to leave a dockerd we started running.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

ext="$(external_cluster)"
if [ -n "$ext" ]; then
  log "current cluster is external ($ext); nothing to tear down"
  exit 0
fi
if [ ! -d "$CAPLAB_STATE" ]; then
  log "no local cluster state in $CAPLAB_STATE; nothing to do"
  exit 0
fi

# 1. Kubernetes components, reverse start order.
# (TERM all first, then wait for each: they shut down in parallel.)
for c in local-path-provisioner kube-proxy kube-scheduler kube-controller-manager kubelet kube-apiserver; do
  if pid_alive "$c"; then kill -TERM "$(cat "$PIDS/$c.pid")" 2>/dev/null || true; fi
done
for c in local-path-provisioner kube-proxy kube-scheduler kube-controller-manager kubelet kube-apiserver etcd; do
  stop_pid "$c"
done

# 2. Pod containers (only while docker answers; dockerd is ours or someone else's).
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ids="$(docker ps -aq --filter 'name=^/?k8s_' || true)"
  if [ -n "$ids" ]; then
    log "removing $(echo "$ids" | wc -l) pod containers (k8s_*)"
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null || true
  fi
fi

# 3. iptables: drop every KUBE-* chain and every rule that mentions one.
for table in nat filter mangle; do
  if iptables-save -t "$table" 2>/dev/null | grep -q 'KUBE-'; then
    log "removing KUBE-* rules from iptables table $table"
    iptables-save -t "$table" | grep -v -- 'KUBE-' | iptables-restore -T "$table" \
      || log "WARNING: could not clean iptables table $table"
  fi
done

# 4. dockerd, only if we started it.
if [ "${CAPLAB_KEEP_DOCKER:-0}" != "1" ]; then
  stop_pid dockerd
fi

# 5. Kubelet mounts (secrets are tmpfs) must go before the directory is removed.
if [ -d "$CAPLAB_STATE/kubelet" ]; then
  # (the kubelet also bind-mounts its root dir onto itself)
  awk -v root="$CAPLAB_STATE/kubelet" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/mounts \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
fi

log "wiping etcd data and kubelet state"
rm -rf "$CAPLAB_STATE/etcd" "$CAPLAB_STATE/kubelet" "$LOCAL_PATH_DIR"
rm -f "$PIDS"/*.pid
log "local cluster stopped"
