#!/usr/bin/env bash
# local-path-provisioner.sh — the local cluster's dynamic volume provisioner, started and
# stopped (by PID) by hack/cluster-up.sh / hack/cluster-down.sh; not meant to be run by hand.
#
# Why not the in-tree kubernetes.io/host-path provisioner (kube-controller-manager
# --enable-hostpath-provisioner): it creates root-owned 0750 directories and hostPath
# volumes ignore a pod's fsGroup, so a restricted, non-root pod (the members run as uid
# 65532) cannot write its volume. kind ships Rancher's local-path-provisioner instead, which
# creates world-writable (0777) directories; this loop does the same, in bash:
#
#   * every PersistentVolumeClaim waiting for provisioner $LOCAL_PATH_PROVISIONER (the
#     default StorageClass `standard`) gets a directory $LOCAL_PATH_DIR/<ns>_<pvc>_<uid>,
#     mode 0777, and a hostPath PersistentVolume `pvc-<uid>` bound to it (claimRef) on
#     this node;
#   * every PersistentVolume it provisioned that is Released (its claim deleted; reclaim
#     policy Delete) or Failed loses its directory and is deleted.
#
# It polls every $LOCAL_PATH_POLL seconds (default 2) through kubectl with the admin
# kubeconfig. Output (one line per volume created or removed) goes to its log.
set -uo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
export KUBECONFIG="$CAPLAB_KUBECONFIG"
POLL="${LOCAL_PATH_POLL:-2}"

# provision: a PV for every Pending claim of our StorageClass(es) that has none yet.
# (The PV controller marks such claims with the provisioner's name; binding finishes there.)
provision() {
  local claims ns name uid size modes dir
  claims="$(kubectl get pvc -A -o json 2>/dev/null | jq -r --arg p "$LOCAL_PATH_PROVISIONER" '
      .items[] | select(.status.phase == "Pending" and (.spec.volumeName // "") == ""
        and (.metadata.annotations["volume.beta.kubernetes.io/storage-provisioner"] // "") == $p)
      | [.metadata.namespace, .metadata.name, .metadata.uid, .spec.resources.requests.storage,
         (.spec.accessModes // ["ReadWriteOnce"] | join(","))] | @tsv')" || return 0
  while IFS=$'\t' read -r ns name uid size modes; do
    [ -n "$uid" ] || continue
    kubectl get pv "pvc-$uid" >/dev/null 2>&1 && continue
    dir="$LOCAL_PATH_DIR/${ns}_${name}_${uid}"
    # 0777 like kind's provisioner: the pod's (non-root) user owns nothing here yet.
    if ! { mkdir -p "$dir" && chmod 0777 "$dir"; }; then log "cannot create $dir"; continue; fi
    if create_pv "$uid" "$ns" "$name" "$size" "$modes" "$dir"; then
      log "provisioned pv/pvc-$uid ($size) for $ns/$name in $dir"
    else
      log "could not create pv/pvc-$uid for $ns/$name; retrying"
      rmdir "$dir" 2>/dev/null || true
    fi
  done <<<"$claims"
}

create_pv() { # create_pv UID NAMESPACE CLAIM SIZE MODES(comma-separated) DIR
  jq -n --arg uid "$1" --arg ns "$2" --arg claim "$3" --arg size "$4" --arg modes "$5" \
    --arg dir "$6" --arg p "$LOCAL_PATH_PROVISIONER" --arg sc "$LOCAL_PATH_CLASS" \
    --arg node "$NODE_NAME" '{
      apiVersion: "v1", kind: "PersistentVolume",
      metadata: {name: ("pvc-" + $uid), annotations: {"pv.kubernetes.io/provisioned-by": $p}},
      spec: {
        capacity: {storage: $size}, accessModes: ($modes | split(",")),
        persistentVolumeReclaimPolicy: "Delete", storageClassName: $sc,
        volumeMode: "Filesystem",
        claimRef: {apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: $ns,
                   name: $claim, uid: $uid},
        hostPath: {path: $dir, type: "Directory"},
        nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [
          {key: "kubernetes.io/hostname", operator: "In", values: [$node]}]}]}}
      }}' | kubectl create -f - >/dev/null
}

# reclaim: delete the directory and the PV of every volume of ours whose claim is gone.
reclaim() {
  local vols name dir
  vols="$(kubectl get pv -o json 2>/dev/null | jq -r --arg p "$LOCAL_PATH_PROVISIONER" '
      .items[] | select(.metadata.annotations["pv.kubernetes.io/provisioned-by"] == $p
        and (.status.phase == "Released" or .status.phase == "Failed"))
      | [.metadata.name, .spec.hostPath.path] | @tsv')" || return 0
  while IFS=$'\t' read -r name dir; do
    [ -n "$name" ] || continue
    # Only ever remove what this provisioner created.
    case "$dir" in "$LOCAL_PATH_DIR"/?*) rm -rf -- "$dir" ;; esac
    kubectl delete pv "$name" --wait=false >/dev/null 2>&1 && log "removed pv/$name and $dir"
  done <<<"$vols"
}

mkdir -p "$LOCAL_PATH_DIR"
log "provisioning $LOCAL_PATH_PROVISIONER volumes under $LOCAL_PATH_DIR (every ${POLL}s)"
trap 'log "stopping"; exit 0' TERM INT
while :; do
  provision
  reclaim
  sleep "$POLL" &
  wait $! # (so TERM is handled at once, not after the sleep)
done
