#!/usr/bin/env bash
# demo.sh — the main job: a local Kubernetes cluster (or your kind/minikube context), the
# caplab images, the Helm chart installed, examples/raft-3.yaml applied, and the cluster
# watched until it converges (Available, three members, a leader and a term).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CAPLAB_CACHE/target}"
NAMESPACE="${CAPLAB_DEMO_NAMESPACE:-default}"
DEADLINE="${CAPLAB_DEMO_TIMEOUT:-300}"

"$HACK_DIR/install-deps.sh"
eval "$("$HACK_DIR/cluster-up.sh")"
mapfile -t images < <("$HACK_DIR/build-images.sh")
"$HACK_DIR/load-image.sh" "${images[@]}"

log "helm upgrade --install caplab charts/caplab -n caplab-system"
helm upgrade --install caplab charts/caplab -n caplab-system --create-namespace --wait --timeout 5m
kubectl apply -n "$NAMESPACE" -f examples/raft-3.yaml

log "waiting for RegisterCluster demo to converge (up to ${DEADLINE}s)"
start=$(date +%s)
last=""
while :; do
  row="$(kubectl get regc demo -n "$NAMESPACE" --no-headers 2>/dev/null || true)"
  [ "$row" != "$last" ] && { kubectl get regc demo -n "$NAMESPACE" 2>/dev/null | tail -n +"$([ -z "$last" ] && echo 1 || echo 2)"; last="$row"; }
  available="$(kubectl get regc demo -n "$NAMESPACE" \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null || true)"
  [ "$available" = "True" ] && break
  [ $(( $(date +%s) - start )) -lt "$DEADLINE" ] || die "demo did not become Available in ${DEADLINE}s; see kubectl describe regc demo"
  sleep 2
done
kubectl get regc demo -n "$NAMESPACE" -o wide
cat >&2 <<MSG

demo is Available. Next:
  export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
  kubectl get regc -w                         # watch it
  kubectl describe regc demo                  # members, faults, conditions, events
  kubectl apply -f examples/raft-5-partition.yaml
MSG
