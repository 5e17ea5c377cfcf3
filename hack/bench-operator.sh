#!/usr/bin/env bash
# bench-operator.sh — how the operator's cost grows with the clusters it runs (issue 20).
#
# Applies N RegisterClusters of R Raft members each in one namespace of the current cluster
# (`eval "$(hack/cluster-up.sh)"` first), then measures:
#   * the time from the apply to every cluster Ready (R/R members ready, a leader);
#   * the operator's CPU (from its process's /proc/<pid>/stat) and memory (VmRSS) meanwhile;
#   * during a calm window, reconciles (the operator's caplab_operator_reconciliations_total) and the
#     API server's requests (apiserver_request_total deltas by resource and verb; the kubelet
#     and controllers add theirs, see the table);
#   * how long a member's change takes to show in status: a leader pod is deleted and
#     `.status.leader` polled until it names another member.
# The namespace is deleted at the end (also on failure or ^C); the operator is installed
# (Helm, as tests/e2e/run.sh step_install) only when it is missing, and left installed.
#
# Usage: hack/bench-operator.sh [CLUSTERS=20] [REPLICAS=3]
# Env:   CAPLAB_BENCH_NAMESPACE (caplab-bench-operator), CAPLAB_BENCH_CALM_SECONDS (60),
#        CAPLAB_BENCH_OUT (a file for the Markdown summary; default stdout only).
# Needs: kubectl, helm (or $CAPLAB_CACHE/tools/bin), docker (to find the operator's process),
#        root (to read that process's /proc entry).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

CLUSTERS=${1:-20}
REPLICAS=${2:-3}
NS=${CAPLAB_BENCH_NAMESPACE:-caplab-bench-operator}
CALM=${CAPLAB_BENCH_CALM_SECONDS:-60}
OUT=${CAPLAB_BENCH_OUT:-}
OPNS=caplab-system
RELEASE=caplab
TAG=0.1.0
CACHE_BIN="${CAPLAB_CACHE:-/var/cache/caplab}/tools/bin"
[[ $CLUSTERS =~ ^[0-9]+$ && $CLUSTERS -ge 1 ]] || die "CLUSTERS must be a positive integer, got '$CLUSTERS'"
[[ $REPLICAS =~ ^[0-9]+$ && $REPLICAS -ge 1 && $REPLICAS -le 9 ]] \
  || die "REPLICAS must be 1-9 (the CRD's bounds), got '$REPLICAS'"
[[ $CALM =~ ^[0-9]+$ ]] || die "CAPLAB_BENCH_CALM_SECONDS must be a whole number of seconds"

tool() { if command -v "$1" >/dev/null 2>&1; then command -v "$1"; elif [[ -x $CACHE_BIN/$1 ]]; then echo "$CACHE_BIN/$1"; else die "$1 not found: run hack/install-deps.sh"; fi; }
KUBECTL=$(tool kubectl)
HELM=$(tool helm)
k() { "$KUBECTL" "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

k get --raw /healthz >/dev/null 2>&1 || die "no Kubernetes API: run 'eval \"\$(hack/cluster-up.sh)\"' first"
command -v docker >/dev/null || die "docker not found: the operator's process is found through its container"

install_operator() {
  if k -n "$OPNS" get deployment "$RELEASE" >/dev/null 2>&1; then return; fi
  log "installing the operator (helm upgrade --install $RELEASE -n $OPNS)"
  "$HELM" upgrade --install "$RELEASE" "$ROOT/charts/caplab" -n "$OPNS" --create-namespace \
    --set "image.tag=$TAG" --set "nodeImage.tag=$TAG" --set "cliImage.tag=$TAG" >/dev/null
  k wait --for=condition=Established --timeout=60s crd/registerclusters.caplab.dev >/dev/null
  k -n "$OPNS" rollout status "deployment/$RELEASE" --timeout=180s >/dev/null
}

operator_pod() { k -n "$OPNS" get pods -l app.kubernetes.io/name=caplab -o jsonpath='{.items[0].metadata.name}'; }

# The host pid of the operator's container (dockershim names it after the pod).
operator_pid() {
  local id
  id=$(docker ps -q --filter "label=io.kubernetes.pod.name=$1" --filter "label=io.kubernetes.container.name=operator" | head -n 1)
  [[ -n $id ]] || id=$(docker ps -q --filter "label=io.kubernetes.pod.name=$1" --filter "label=io.kubernetes.docker.type=container" | head -n 1)
  [[ -n $id ]] || die "no container of pod $1 found in docker (not a dockershim cluster?)"
  docker inspect -f '{{.State.Pid}}' "$id"
}

# CPU seconds (user + system) the process has used.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

operator_metric() { # <name>: its value from the operator's /metrics (through the API server's proxy)
  k get --raw "/api/v1/namespaces/$OPNS/pods/$OPPOD:8080/proxy/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

# apiserver_request_total summed by "resource[/subresource] VERB".
api_requests() {
  k get --raw /metrics | awk '
    /^apiserver_request_total\{/ {
      match($0, /resource="[^"]*"/); r = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /subresource="[^"]*"/); s = substr($0, RSTART + 13, RLENGTH - 14)
      match($0, /verb="[^"]*"/); v = substr($0, RSTART + 6, RLENGTH - 7)
      if (r == "") next
      key = (s == "" ? r : r "/" s) " " v; n[key] += $NF
    }
    END { for (key in n) print key, n[key] }' | sort
}

# The deltas between two api_requests outputs, largest first: "resource verb delta".
api_delta() {
  awk 'NR == FNR { before[$1 " " $2] = $3; next }
       { d = $3 - before[$1 " " $2]; if (d > 0) print $1, $2, d }' "$1" "$2" | sort -k3,3nr
}

manifest() {
  local i
  for ((i = 1; i <= CLUSTERS; i++)); do
    printf 'apiVersion: caplab.dev/v1alpha1\nkind: RegisterCluster\nmetadata: {name: b%d}\nspec: {replicas: %d, replication: raft}\n---\n' "$i" "$REPLICAS"
  done
}

ready_count() {
  k -n "$NS" get regc -o jsonpath='{range .items[*]}{.status.phase} {.status.ready} {.status.leader}{"\n"}{end}' \
    | awk -v want="$REPLICAS/$REPLICAS" '$1 == "Ready" && $2 == want && $3 != "" { n++ } END { print n + 0 }'
}

cleanup() {
  log "deleting namespace $NS"
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}

install_operator
OPPOD=$(operator_pod)
OPPID=$(operator_pid "$OPPOD")
LOAD0="load before: $(uptime | sed 's/.*load average/load average/')"
log "operator pod $OPPOD, host pid $OPPID; load: $(uptime)"
k create namespace "$NS" >/dev/null 2>&1 || true
trap cleanup EXIT

TMP=$(mktemp -d)
api_requests >"$TMP/api0"
REC0=$(operator_metric caplab_operator_reconciliations_total)
CPU0=$(cpu_seconds "$OPPID")
RSS_IDLE=$(rss_mib "$OPPID")

T0=$(now)
manifest | k -n "$NS" apply -f - >/dev/null
log "applied $CLUSTERS RegisterClusters of $REPLICAS members"
RSS_PEAK=$RSS_IDLE
deadline=$(($(date +%s) + 900))
while :; do
  n=$(ready_count)
  r=$(rss_mib "$OPPID"); RSS_PEAK=$(awk -v a="$RSS_PEAK" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
  [[ $n -ge $CLUSTERS ]] && break
  (($(date +%s) < deadline)) || die "only $n of $CLUSTERS clusters Ready after 900 s: $(k -n "$NS" get pods --no-headers | awk '{ print $3 }' | sort | uniq -c | tr '\n' ' ')"
  sleep 1
done
T1=$(now)
CPU1=$(cpu_seconds "$OPPID")
REC1=$(operator_metric caplab_operator_reconciliations_total)
api_requests >"$TMP/api1"
log "all $CLUSTERS Ready after $(elapsed "$T0" "$T1") s; calm window of $CALM s"

sleep "$CALM"
CPU2=$(cpu_seconds "$OPPID")
REC2=$(operator_metric caplab_operator_reconciliations_total)
RSS_CALM=$(rss_mib "$OPPID")
api_requests >"$TMP/api2"
# Who raised the events (the members' readiness probes failing on a busy node show here).
k -n "$NS" get events -o jsonpath='{range .items[*]}{.source.component}/{.reason} {.count}{"\n"}{end}' \
  | awk '{ n[$1] += ($2 == "" ? 1 : $2) } END { for (r in n) print r, n[r] }' | sort -k2,2nr >"$TMP/events"

# A member's change reaching the status: the leader's pod deleted, until another leader shows.
leader_changes=()
for c in b1 b2 b3; do
  old=$(k -n "$NS" get regc "$c" -o jsonpath='{.status.leader}')
  [[ -n $old ]] || continue
  t=$(now)
  k -n "$NS" delete pod "$old" --wait=false >/dev/null
  until new=$(k -n "$NS" get regc "$c" -o jsonpath='{.status.leader}') && [[ -n $new && $new != "$old" ]]; do
    (($(date +%s) - ${t%.*} < 120)) || die "cluster $c showed no new leader within 120 s of deleting $old"
    sleep 0.2
  done
  leader_changes+=("$(elapsed "$t" "$(now)")")
done

cpu_apply=$(awk -v a="$CPU0" -v b="$CPU1" 'BEGIN { printf "%.1f", b - a }')
cpu_calm=$(awk -v a="$CPU1" -v b="$CPU2" -v s="$CALM" 'BEGIN { printf "%.1f", 100 * (b - a) / (s > 0 ? s : 1) }')
rec_apply=$((REC1 - REC0)); rec_calm=$((REC2 - REC1))
summary() {
  echo "Operator scaling: $CLUSTERS RegisterClusters × $REPLICAS Raft members ($((CLUSTERS * REPLICAS)) member pods), $(date -u '+%Y-%m-%d %H:%M UTC'); $LOAD0"
  echo
  echo "| measure | value |"
  echo "|---|---:|"
  echo "| apply → all Ready | $(elapsed "$T0" "$T1") s |"
  echo "| operator CPU while converging | $cpu_apply s |"
  echo "| operator CPU when calm | $cpu_calm % of a core |"
  echo "| operator memory (VmRSS): before / peak / calm | $RSS_IDLE / $RSS_PEAK / $RSS_CALM MiB |"
  echo "| reconciles while converging / in the $CALM s calm window | $rec_apply / $rec_calm |"
  echo "| leader pod deleted → new leader in status (s) | ${leader_changes[*]} |"
  echo
  echo "Events in the namespace by source/reason (count, the whole run): $(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }' "$TMP/events")"
  echo
  echo "API server requests (apiserver_request_total deltas; every client's):"
  echo
  echo "| resource | verb | converging | calm ($CALM s) |"
  echo "|---|---|---:|---:|"
  api_delta "$TMP/api0" "$TMP/api1" >"$TMP/d1"
  api_delta "$TMP/api1" "$TMP/api2" >"$TMP/d2"
  awk 'NR == FNR { calm[$1 " " $2] = $3; next } { print "| " $1 " | " $2 " | " $3 " | " (calm[$1 " " $2] + 0) " |" }' "$TMP/d2" "$TMP/d1" | head -n 25
}
if [[ -n $OUT ]]; then summary | tee "$OUT"; else summary; fi
rm -rf "$TMP"
