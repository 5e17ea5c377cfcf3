#!/usr/bin/env bash
# load-image.sh <image:tag>... — make locally built docker images usable by the cluster
# that the current kubeconfig context points at:
#   * local caplab cluster (hack/cluster-up.sh): the kubelet uses this host's dockerd,
#     so nothing needs copying — we only check that the images exist
#   * kind:     kind load docker-image --name <cluster> <image>...
#   * minikube: minikube image load <image>   (per image)
# Pods must use imagePullPolicy: Never or IfNotPresent with a non-latest tag.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

[ "$#" -ge 1 ] || { echo "usage: $0 <image:tag>..." >&2; exit 2; }

for img in "$@"; do
  docker image inspect "$img" >/dev/null 2>&1 || die "image $img not found in the local docker daemon"
done

# With CAPLAB_USE_EXISTING=1 the kind/minikube detection below still applies.
ext="$(CAPLAB_USE_EXISTING=0 external_cluster)"
case "$ext" in
  kind:*)
    name="${ext#kind:}"
    log "loading into kind cluster '$name': $*"
    kind load docker-image --name "$name" "$@"
    ;;
  minikube:*)
    profile="${ext#minikube:}"
    for img in "$@"; do
      log "loading $img into minikube profile '$profile'"
      minikube -p "$profile" image load "$img"
    done
    ;;
  *)
    log "local cluster shares this host's dockerd; $* already available"
    ;;
esac
