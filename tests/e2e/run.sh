#!/usr/bin/env bash
# tests/e2e/run.sh — caplab end-to-end suite on a real Kubernetes cluster (issue 4).
#
# Assumes:
#   * a running cluster reachable through the current kubeconfig (KUBECONFIG);
#   * the images caplab/operator:<tag>, caplab/node:<tag> and caplab/cli:<tag> (experiments)
#     already present on the node (tag 0.1.0 by default; no registry is used);
#   * helm (v3/v4) and kubectl on PATH, or HELM / KUBECTL set, or both cached in
#     ${CAPLAB_CACHE:-/var/cache/caplab}/tools/bin;
#   * curl and jq, and that the host can reach pod IPs (true on the local cluster of hack/,
#     where pods live on docker0, and on kind/minikube from inside the node).
#     Member ports: 8080 (client API).
#
# Steps (issue 4, "The end-to-end suite"); each is a function, run in order:
#   1 install    helm install the chart; operator ready; helm test passes
#   2 raft3      apply examples/raft-3.yaml; Available, 3 members, leader, term; write+read;
#                pods spread by anti-affinity, a PodDisruptionBudget allowing one disruption
#   3 ui         caplab ui --cluster demo through the pod proxy: 3 members up, one leader, the
#                log tails hold a fresh write, a workload's ops/s, a deleted pod down then back
#   4 partition  partition the leader away; new leader, higher term, a LeaderChanged Event
#                naming the old leader, fresh status.observedAt; majority writes; heal
#   5 scale      3 -> 5 -> 3 with a background writer; no acknowledged write lost
#   6 crash      crash a member: Degraded but Available; heal: Ready
#   7 rollout    change spec.resources: every pod recreated one at a time, the leader last,
#                with a background writer; no acknowledged write lost
#   8 async      examples/async-3-failover.yaml; crash the primary; promotion + loss report;
#                then a rollout, in which the primary hands its role over (Switchover),
#                and a scale-down to 2, with a background writer; no acknowledged write lost
#   9 sync       a sync cluster: crash the primary; the promoted one accepts writes while the
#                old one is down; it returns and is re-added; the cluster is deleted
#  10 invalid    replicas: 0 and a replication change: refused or reported, phase and
#                status.replication still describe the running cluster; cluster runs on;
#                a 62-character cluster name: refused or reported, no pod created
#  11 examples   each examples/*.yaml, one at a time in namespace caplab-e2e-examples:
#                every "# expect:" line of its header holds, in order (format: step_examples)
#  12 experiment a workload refused when its mix does not sum to 100; a Raft run whose
#                operator is restarted mid-run still ends Done, linearizable, with a Verdict
#                Event and its fault window as the members saw it, its Job's pod non-root
#                with a read-only root filesystem
#  13 delete     delete the resources; every pod/service/secret/PVC/PDB they created is gone
#
# Environment:
#   CAPLAB_E2E_STEPS          steps to run, by number or name, e.g. "1 2 3" or "install,raft3"
#                             (default: all). Steps 3-7 and 10 create the demo cluster if it
#                             is missing, so they can run on their own after step 1.
#   CAPLAB_E2E_KEEP_GOING=1   run the remaining steps after a failure (default: stop)
#   CAPLAB_E2E_KEEP=1         leave the release and namespaces in place at the end
#   CAPLAB_E2E_NAMESPACE      namespace of the RegisterClusters (default caplab-e2e)
#   CAPLAB_E2E_EXAMPLES_NAMESPACE  namespace of step 11 (default caplab-e2e-examples)
#   CAPLAB_E2E_OPERATOR_NAMESPACE / CAPLAB_E2E_RELEASE   (default caplab-system / caplab)
#   CAPLAB_E2E_IMAGE_TAG      image tag of both images (default 0.1.0)
#   CAPLAB_E2E_HELM_ARGS      extra `helm upgrade --install` arguments (word-split)
#   CAPLAB_E2E_DEADLINE_FACTOR  integer multiplier for every deadline (default 1)
#   CAPLAB_E2E_ARTIFACTS      directory to write failure dumps into (also printed)
#   CAPLAB_E2E_CLIENT_PORT    members' client API port (default 8080)
#
# Output: progress lines, a diagnostic dump on failure, and a last line
# "N passed, N failed". Exit status 0 only if every selected step passed.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_BIN="${CAPLAB_CACHE:-/var/cache/caplab}/tools/bin"

find_tool() { # <ENV value> <name>
  if [[ -n $1 ]]; then printf '%s\n' "$1"
  elif command -v "$2" >/dev/null 2>&1; then command -v "$2"
  elif [[ -x $CACHE_BIN/$2 ]]; then printf '%s\n' "$CACHE_BIN/$2"
  else printf '%s\n' "$2"
  fi
}
KUBECTL=$(find_tool "${KUBECTL:-}" kubectl)
HELM=$(find_tool "${HELM:-}" helm)

NS=${CAPLAB_E2E_NAMESPACE:-caplab-e2e}
EXAMPLES_NS=${CAPLAB_E2E_EXAMPLES_NAMESPACE:-caplab-e2e-examples}
OPNS=${CAPLAB_E2E_OPERATOR_NAMESPACE:-caplab-system}
RELEASE=${CAPLAB_E2E_RELEASE:-caplab}
TAG=${CAPLAB_E2E_IMAGE_TAG:-0.1.0}
CHART=${CAPLAB_E2E_CHART:-$ROOT/charts/caplab}
EXAMPLES=${CAPLAB_E2E_EXAMPLES:-$ROOT/examples}
FACTOR=${CAPLAB_E2E_DEADLINE_FACTOR:-1}
ARTIFACTS=${CAPLAB_E2E_ARTIFACTS:-}
POLL=2            # seconds between polls
HTTP_TIMEOUT=5    # seconds per HTTP request to a member
CLIENT_PORT=${CAPLAB_E2E_CLIENT_PORT:-8080}  # members' client API port
RUN_ID=$(date +%s)
read -r -a HELM_ARGS <<<"${CAPLAB_E2E_HELM_ARGS:-}"

# Helm's fullname rule (see charts/caplab/templates/_helpers.tpl).
if [[ $RELEASE == *caplab* ]]; then OPDEPLOY=$RELEASE; else OPDEPLOY=$RELEASE-caplab; fi

STEP_NAMES=(install raft3 ui partition scale crash rollout async sync invalid examples experiment delete)

# ---------------------------------------------------------------------------
# basics

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
k() { "$KUBECTL" "$@"; }
kn() { "$KUBECTL" -n "$NS" "$@"; }

# jp <regc name> <jsonpath>: a field of a RegisterCluster ("" when absent).
jp() { kn get registercluster "$1" -o "jsonpath=$2" 2>/dev/null; }

# Dump everything useful for a post-mortem (stdout, and $CAPLAB_E2E_ARTIFACTS if set).
dump_diagnostics() {
  local why=$1
  {
    echo "================ FAILURE: $why ================"
    echo "---- RegisterClusters (all namespaces) ----"
    k get registerclusters -A -o yaml 2>&1
    echo "---- describe ----"
    kn describe registerclusters 2>&1
    echo "---- events in $NS ----"
    kn get events --sort-by=.metadata.creationTimestamp 2>&1 | tail -n 80
    echo "---- events in $OPNS ----"
    k -n "$OPNS" get events --sort-by=.metadata.creationTimestamp 2>&1 | tail -n 30
    echo "---- pods ----"
    kn get pods,services,secrets,pvc -o wide 2>&1
    k -n "$OPNS" get pods -o wide 2>&1
    echo "---- operator log (deploy/$OPDEPLOY) ----"
    k -n "$OPNS" logs "deploy/$OPDEPLOY" --all-containers --tail=400 2>&1
    if [[ $(k -n "$OPNS" get pods -l "app.kubernetes.io/instance=$RELEASE" \
              -o 'jsonpath={.items[*].status.containerStatuses[*].restartCount}' 2>/dev/null) =~ [1-9] ]]; then
      echo "---- operator log, previous container ----"
      k -n "$OPNS" logs "deploy/$OPDEPLOY" --all-containers --previous --tail=200 2>&1
    fi
    local p
    for p in $(kn get pods -l caplab.dev/cluster -o 'jsonpath={.items[*].metadata.name}' 2>/dev/null); do
      echo "---- member log $p (tail) ----"
      kn logs "$p" --all-containers --tail=40 2>&1
    done
    echo "================ end of dump ================"
  } | if [[ -n $ARTIFACTS ]]; then
        mkdir -p "$ARTIFACTS"
        tee -a "$ARTIFACTS/e2e-failure-$RUN_ID.log"
      else
        cat
      fi
}

fail() { # <message>: dump and end the current step (steps run in subshells)
  log "FAIL: $*"
  dump_diagnostics "$*"
  exit 1
}

# wait_for <description> <deadline-seconds> <command...>
# Polls the command every $POLL s until it succeeds; its output is shown as progress.
# On timeout: prints the last output, dumps diagnostics and exits (the step fails).
wait_for() {
  local desc=$1 deadline=$(( $2 * FACTOR )); shift 2
  local start=$SECONDS last_shown=$SECONDS out=""
  log "waiting up to ${deadline}s for: $desc"
  while true; do
    if out=$("$@" 2>&1); then
      log "  ok after $(( SECONDS - start ))s: $desc${out:+ ($out)}"
      return 0
    fi
    if (( SECONDS - start >= deadline )); then
      log "  last observation: ${out:-<none>}"
      fail "timed out after ${deadline}s waiting for: $desc"
    fi
    if (( SECONDS - last_shown >= 15 )); then
      log "  still waiting ($(( SECONDS - start ))s): ${out:-<no output>}"
      last_shown=$SECONDS
    fi
    sleep "$POLL"
  done
}

# check <description> <command...>: a one-shot assertion.
check() {
  local desc=$1 out; shift
  if out=$("$@" 2>&1); then
    log "  ok: $desc${out:+ ($out)}"
  else
    log "  observed: ${out:-<none>}"
    fail "$desc"
  fi
}

# ---------------------------------------------------------------------------
# RegisterCluster predicates (print what they saw; succeed when it matches)

summary() { # <name>
  local s PH AV RR SR LD TM
  s=$(jp "$1" '{.status.phase}|{.status.conditions[?(@.type=="Available")].status}|{.status.readyReplicas}|{.spec.replicas}|{.status.leader}|{.status.term}')
  IFS='|' read -r PH AV RR SR LD TM <<<"$s"
  echo "phase=${PH:-?} available=${AV:-?} ready=${RR:-0}/${SR:-?} leader=${LD:-none} term=${TM:-?}"
}

# members <name>: one line per member "name|role|reachable|term|lag|ordinal"
members() {
  jp "$1" '{range .status.members[*]}{.name}|{.role}|{.reachable}|{.term}|{.lag}|{.ordinal}{"\n"}{end}'
}

is_leader_role() { [[ ${1,,} == leader || ${1,,} == primary ]]; }

# converged <name> <n>: phase Ready, Available=True, n ready members, all reachable,
# exactly one leader, which is status.leader, and (Raft) every member in the same term.
converged() {
  local name=$1 n=$2 PH AV RR SR LD TM
  IFS='|' read -r PH AV RR SR LD TM < <(jp "$name" '{.status.phase}|{.status.conditions[?(@.type=="Available")].status}|{.status.readyReplicas}|{.spec.replicas}|{.status.leader}|{.status.term}'; echo)
  local count=0 leaders=0 problems="" terms="" lagging="" m role reach term lag ord
  while IFS='|' read -r m role reach term lag ord; do
    [[ -z $m ]] && continue
    count=$(( count + 1 ))
    if is_leader_role "$role"; then
      leaders=$(( leaders + 1 ))
      [[ $m == "$LD" ]] || problems+=" leader-role:$m!=status.leader:$LD"
    fi
    [[ $reach == true ]] || problems+=" unreachable:$m"
    [[ -n $term && " $terms " != *" $term "* ]] && terms+=" $term"
    [[ -z $lag || $lag == 0 ]] || lagging+=" $m:$lag"
  done < <(members "$name")
  echo "$(summary "$name") members=$count leaders=$leaders terms=[${terms# }] problems=[${problems# }] lagging=[${lagging# }]"
  [[ $PH == Ready && $AV == True && ${RR:-0} == "$n" && $count == "$n" && $leaders == 1 \
     && -n $LD && -z $problems && -z $lagging && ${terms# } != *" "* ]]
}

# available_with_leader <name> <n> [term]: Available=True, n ready, a leader and, unless
# the third argument is "no-term" (primary-secondary modes), a term >= 1.
available_with_leader() {
  local name=$1 n=$2 AV RR LD TM
  IFS='|' read -r AV RR LD TM < <(jp "$name" '{.status.conditions[?(@.type=="Available")].status}|{.status.readyReplicas}|{.status.leader}|{.status.term}'; echo)
  summary "$name"
  [[ $AV == True && ${RR:-0} == "$n" && -n $LD ]] || return 1
  [[ ${3:-} == no-term ]] || [[ $TM =~ ^[0-9]+$ && $TM -ge 1 ]]
}

member_count_is() { # <name> <n>
  local c; c=$(jp "$1" '{.status.members[*].name}' | wc -w)
  echo "members=$c"; [[ $c == "$2" ]]
}

pod_count_is() { # <name> <n>: member pods that exist (any phase)
  local c; c=$(kn get pods -l "caplab.dev/cluster=$1" -o name 2>/dev/null | wc -l)
  echo "pods=$c"; [[ $c == "$2" ]]
}

# fault_active <name> <fault>: state active with resolved targets (or groups) recorded.
fault_active() {
  local st tg
  st=$(jp "$1" "{.status.faults[?(@.name==\"$2\")].state}")
  tg=$(jp "$1" "{.status.faults[?(@.name==\"$2\")].targets}{.status.faults[?(@.name==\"$2\")].groups}")
  echo "fault $2: state=${st:-absent} targets=${tg:-none}"
  [[ ${st,,} == active && -n $tg && $tg != "[]" ]]
}

# fault_healed <name> <fault>: gone from status, or reverted/expired.
fault_healed() {
  local st; st=$(jp "$1" "{.status.faults[?(@.name==\"$2\")].state}")
  echo "fault $2: state=${st:-absent}"
  [[ -z $st || ${st,,} == reverted || ${st,,} == expired ]]
}

# new_leader <name> <old leader> <old term>: another leader; in a higher term unless
# the old term is empty (primary-secondary modes need not report one).
new_leader() {
  local LD TM
  IFS='|' read -r LD TM < <(jp "$1" '{.status.leader}|{.status.term}'; echo)
  echo "leader=${LD:-none} term=${TM:-?} (was $2 in term ${3:-?})"
  [[ -n $LD && $LD != "$2" ]] || return 1
  [[ -z $3 ]] || [[ $TM =~ ^[0-9]+$ && $3 =~ ^[0-9]+$ && $TM -gt $3 ]]
}

# observed_within <name> <seconds>: status.observedAt is at most that old (issue 19 §2:
# status follows the members within about 2 s while anything changes).
observed_within() {
  local at age
  at=$(jp "$1" '{.status.observedAt}')
  [[ -n $at ]] || { echo "no status.observedAt"; return 1; }
  age=$(( $(date +%s) - $(date -d "$at" +%s 2>/dev/null || echo 0) ))
  echo "observedAt=$at (${age}s ago)"
  (( age <= $2 * FACTOR ))
}

# member_replicating_is <name> <member> <true|false>: whether the leader acknowledged the
# member recently (status.members[].replicating; `reachable` only says the operator polled it,
# which a partition between members never stops).
member_replicating_is() {
  local r; r=$(jp "$1" "{.status.members[?(@.name==\"$2\")].replicating}")
  echo "$2 replicating=${r:-?}"; [[ $r == "$3" ]]
}

phase_is() { # <name> <phase> [Available status]
  local PH AV
  IFS='|' read -r PH AV < <(jp "$1" '{.status.phase}|{.status.conditions[?(@.type=="Available")].status}'; echo)
  echo "phase=${PH:-?} available=${AV:-?}"
  [[ $PH == "$2" && ( -z ${3:-} || $AV == "$3" ) ]]
}

pod_down() { # <pod>: deleted, terminating, or not ready
  local s
  if ! s=$(kn get pod "$1" -o 'jsonpath={.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null); then
    echo "$1 absent"; return 0
  fi
  echo "$1 deletion/ready=$s"
  [[ $s != "|True" ]]
}

regc_gone() { local l; l=$(kn get registerclusters -o name 2>/dev/null); echo "left: ${l:-none}"; [[ -z $l ]]; }

# Events about one object, as "reason: message" lines.
events_of() {
  kn get events --field-selector "involvedObject.name=$1" \
    -o 'jsonpath={range .items[*]}{.reason}: {.message}{"\n"}{end}' 2>/dev/null
}
# The Events about an object, one per line: "<name>:<count>:<series count>:<last seen>
# <TAB> <reason>: <message>"; a line changes whenever its Event is repeated.
events_fingerprint() {
  kn get events --field-selector "involvedObject.name=$1" \
    -o 'jsonpath={range .items[*]}{.metadata.name}:{.count}:{.series.count}:{.lastTimestamp}:{.eventTime}{"\t"}{.reason}: {.message}{"\n"}{end}' 2>/dev/null | sort
}

# invalid_reported <name>: a condition says the spec is invalid.
invalid_reported() {
  local line t s r hit=""
  while IFS='|' read -r t s r; do
    [[ -z $t ]] && continue
    if [[ ${t,,} == *invalid* && $s == True ]] \
       || [[ ${t,,} == *valid* && ${t,,} != *invalid* && $s == False ]] \
       || [[ ${r,,} == *invalid* && ${t} != Available ]]; then
      hit+=" $t=$s($r)"
    fi
  done < <(jp "$1" '{range .status.conditions[*]}{.type}|{.status}|{.reason}{"\n"}{end}')
  line=$(jp "$1" '{range .status.conditions[*]}{.type}={.status} {end}')
  echo "conditions: ${line:-none}${hit:+ -> invalid:$hit}"
  [[ -n $hit ]]
}
invalid_cleared() { ! invalid_reported "$1"; }

new_event_matching() { # <name> <events_fingerprint before> <regex>: an Event created or
  local ev                # repeated since then says "<reason>: <message>" matching <regex>
  ev=$(comm -13 <(printf '%s\n' "$2") <(events_fingerprint "$1") | cut -f2- | grep -Ei "$3" | tail -n 3)
  echo "new events matching /$3/: ${ev:-none}"
  [[ -n $ev ]]
}

# ---------------------------------------------------------------------------
# client API (through the client Service's ClusterIP, the leader's pod IP or any member)

HTTP_CODE="" HTTP_BODY=""
http() { # <method> <url> [json body]; sets HTTP_CODE / HTTP_BODY
  local out
  local args=(-sS -L -m "$HTTP_TIMEOUT" --connect-timeout 3 -X "$1" -w '\n%{http_code}')
  [[ -n ${3:-} ]] && args+=(-H 'content-type: application/json' --data "$3")
  HTTP_CODE="" HTTP_BODY=""
  out=$(curl "${args[@]}" "$2" 2>&1) || { HTTP_BODY=$out; return 1; }
  HTTP_CODE=${out##*$'\n'}
  HTTP_BODY=${out%$'\n'*}
  [[ $HTTP_CODE == 200 ]]
}

# json_value <body>: the integer `value` of a member's JSON answer (nothing if there is none).
json_value() { jq -r 'if (.value | type) == "number" then .value else empty end' <<<"$1" 2>/dev/null; }

pod_ip() { kn get pod "$1" -o 'jsonpath={.status.podIP}' 2>/dev/null; }

# endpoints <name> <any|leader|service>: candidate client addresses, best first.
endpoints() {
  local name=$1 scope=$2 leader
  {
    if [[ $scope == any || $scope == service ]]; then
      kn get services -l "caplab.dev/cluster=$name" \
        -o 'jsonpath={range .items[*]}{.spec.clusterIP}{"\n"}{end}' 2>/dev/null | grep -v -e '^None$' || true
    fi
    if [[ $scope == any || $scope == leader ]]; then
      leader=$(jp "$name" '{.status.leader}')
      [[ -n $leader ]] && pod_ip "$leader" && echo
    fi
    if [[ $scope == any ]]; then
      kn get pods -l "caplab.dev/cluster=$name" \
        -o 'jsonpath={range .items[*]}{.status.podIP}{"\n"}{end}' 2>/dev/null
    fi
  } | awk 'NF && !seen[$0]++'
}

client_addr() { [[ $1 == *:* ]] && echo "$1" || echo "$1:$CLIENT_PORT"; } # <ip or ip:port>

# kv_put <name> <key> <value> [scope]: write; succeeds on the first endpoint that acks,
# and then says which endpoints failed before it ("after failures: ...").
kv_put() {
  local name=$1 key=$2 val=$3 scope=${4:-any} ip errs=""
  for ip in $(endpoints "$name" "$scope"); do
    if http PUT "http://$(client_addr "$ip")/v1/kv/$key" "{\"value\":$val}" \
       && [[ $(json_value "$HTTP_BODY") == "$val" ]]; then
      echo "PUT $key=$val acked by $ip${errs:+ (after failures:$errs)}"
      return 0
    fi
    errs+=" $ip:${HTTP_CODE:-err}:${HTTP_BODY:0:120}"
  done
  echo "PUT $key=$val not acked:${errs:- no endpoints}"
  return 1
}

# kv_get <name> <key> [scope]: linearizable read (the API's default); prints the value.
kv_get() {
  local name=$1 key=$2 scope=${3:-any} ip errs=""
  for ip in $(endpoints "$name" "$scope"); do
    if http GET "http://$(client_addr "$ip")/v1/kv/$key"; then
      json_value "$HTTP_BODY"
      return 0
    fi
    errs+=" $ip:${HTTP_CODE:-err}:${HTTP_BODY:0:120}"
  done
  echo "GET $key failed:${errs:- no endpoints}" >&2
  return 1
}

kv_reads() { # <name> <key> <expected> [scope]
  local v; v=$(kv_get "$1" "$2" "${4:-any}") || { echo "read of $2 failed"; return 1; }
  echo "$2=$v"; [[ $v == "$3" ]]
}

# ---------------------------------------------------------------------------
# shared fixtures

patch_spec() { # <name> <json for .spec>
  log "patch regc/$1 spec: $2"
  kn patch registercluster "$1" --type merge -p "{\"spec\":$2}"
}

ensure_demo() { # create examples/raft-3.yaml's cluster if a step runs on its own
  if ! kn get registercluster demo >/dev/null 2>&1; then
    log "regc/demo missing: applying examples/raft-3.yaml"
    kn apply -f "$EXAMPLES/raft-3.yaml" || fail "kubectl apply raft-3.yaml"
  fi
  wait_for "regc/demo converged with 3 members" 300 converged demo 3
}

# ---------------------------------------------------------------------------
# step ui: `caplab ui --cluster demo` against the real cluster (issue 17). The live view
# polls the members through the API server's pod proxy: it sees the three members and the
# leader, each member's log tail holds a write made through the client Service, a workload
# shows up as live ops/s, and a deleted member pod is drawn down and then back.
# The caplab binary: $CAPLAB_E2E_CAPLAB, else target/{release,debug}/caplab (built by
# `cargo build -p caplab-cli`; also under $CARGO_TARGET_DIR).

UI_PID=""
UI_URL=""
UI_OUT=""

find_caplab() {
  local c
  for c in "${CAPLAB_E2E_CAPLAB:-}" "${CARGO_TARGET_DIR:-$ROOT/target}/release/caplab" \
           "${CARGO_TARGET_DIR:-$ROOT/target}/debug/caplab"; do
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}

ui_state() { curl -sf --max-time 5 "${UI_URL}state"; }

# ui_sees <jq filter>: the live view's JSON satisfies the filter (prints a summary).
ui_sees() {
  local s; s=$(ui_state) || { echo "the ui does not answer"; return 1; }
  jq -r '[.members[] | "\(.label)=\(if .up then .status.role else "down" end)"] | join(" ")' <<<"$s"
  jq -e "$1" <<<"$s" >/dev/null
}

stop_ui() { [[ -n $UI_PID ]] && kill "$UI_PID" 2>/dev/null; UI_PID=""; }

step_ui() {
  local caplab key=e2e-$RUN_ID-ui pod start workload
  caplab=$(find_caplab) || fail "no caplab binary: build it (cargo build -p caplab-cli) or set CAPLAB_E2E_CAPLAB"
  ensure_demo
  UI_OUT=$(mktemp)
  trap 'stop_ui; rm -f "$UI_OUT"' EXIT
  "$caplab" ui --cluster demo -n "$NS" --listen 127.0.0.1:0 >"$UI_OUT" 2>&1 &
  UI_PID=$!
  wait_for "caplab ui printed its URL" 30 grep -o 'http://[^ ]*/' "$UI_OUT"
  UI_URL=$(grep -o 'http://[^ ]*/' "$UI_OUT" | head -n 1)
  check "the page is served" curl -sf --max-time 5 -o /dev/null "$UI_URL"
  wait_for "the ui shows 3 members up and one leader" 60 \
    ui_sees '([.members[] | select(.up)] | length) == 3 and ([.members[] | select(.status.role == "leader")] | length) == 1'
  wait_for "write $key=7 through the client Service (or a member)" 60 kv_put demo "$key" 7
  wait_for "the members' log tails hold $key=7" 30 \
    ui_sees "[.members[].log[]?.op] | any(startswith(\"$key=7\"))"
  start=$(date +%s%3N)
  "$caplab" workload --cluster demo -n "$NS" --clients 2 --duration 15 --settle 0 --quiet \
    --out "$(mktemp -d)/history.json" >/dev/null 2>&1 &
  workload=$!
  wait_for "the ui counts the workload's operations (ops/s after it started)" 60 \
    ui_sees "[.history[] | select(.t > $start) | .ops.opsPerSecond // 0] | max > 0"
  wait "$workload" || fail "caplab workload failed"
  pod=$(jp demo '{.status.members[?(@.role!="leader")].name}' | awk '{print $1}')
  [[ -n $pod ]] || fail "no follower pod in status.members"
  kn delete pod "$pod" --wait=false >/dev/null || fail "delete pod $pod"
  wait_for "the ui shows $pod down" 30 ui_sees "any(.members[]; .label == \"$pod\" and (.up | not))"
  wait_for "the ui shows $pod back" 180 ui_sees "any(.members[]; .label == \"$pod\" and .up)"
  stop_ui
}

# ---------------------------------------------------------------------------
# steps

step_install() {
  log "helm upgrade --install $RELEASE $CHART -n $OPNS (images tag $TAG)"
  "$HELM" upgrade --install "$RELEASE" "$CHART" -n "$OPNS" --create-namespace \
    --set "image.tag=$TAG" --set "nodeImage.tag=$TAG" --set "cliImage.tag=$TAG" "${HELM_ARGS[@]}" \
    || fail "helm upgrade --install failed"
  wait_for "CRD registerclusters.caplab.dev established" 60 \
    k wait --for=condition=Established --timeout=5s crd/registerclusters.caplab.dev
  wait_for "operator deployment $OPNS/$OPDEPLOY rolled out and ready" 180 \
    k -n "$OPNS" rollout status "deployment/$OPDEPLOY" --timeout=5s
  log "helm test $RELEASE"
  if ! "$HELM" test "$RELEASE" -n "$OPNS" --timeout 3m --logs; then
    k -n "$OPNS" logs "$OPDEPLOY-test-operator-healthy" 2>&1 | tail -n 50
    fail "helm test failed"
  fi
  check "operator runs as non-root with a read-only root filesystem" operator_hardened
  k create namespace "$NS" >/dev/null 2>&1 || true
  check "namespace $NS exists" k get namespace "$NS" -o name
}

operator_hardened() {
  local s; s=$(k -n "$OPNS" get deployment "$OPDEPLOY" \
    -o 'jsonpath={.spec.template.spec.securityContext.runAsNonRoot} {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.spec.template.spec.containers[0].securityContext.capabilities.drop[*]}')
  echo "$s"; [[ $s == "true true ALL" ]]
}

step_raft3() {
  log "kubectl apply -f examples/raft-3.yaml -n $NS"
  kn apply -f "$EXAMPLES/raft-3.yaml" || fail "kubectl apply raft-3.yaml"
  wait_for "regc/demo Available=True with 3 ready members, a leader and a term" 300 available_with_leader demo 3
  wait_for "regc/demo converged (Ready, 3 members, one leader, all reachable)" 120 converged demo 3
  check "exactly 3 member pods" pod_count_is demo 3
  check_spread_and_budget demo 3
  local key=e2e-$RUN_ID-a
  wait_for "write $key=5 through the client Service (or a member)" 60 kv_put demo "$key" 5
  wait_for "linearizable read of $key returns 5" 30 kv_reads demo "$key" 5
}

# pods_spread_by_hostname <name>: every member pod prefers not to share a node with
# another member of its cluster (preferred pod anti-affinity on kubernetes.io/hostname).
pods_spread_by_hostname() {
  local out bad
  out=$(kn get pods -l "caplab.dev/cluster=$1" -o 'jsonpath={range .items[*]}{.metadata.name}={.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[*].podAffinityTerm.topologyKey}{"\n"}{end}')
  echo "${out//$'\n'/ }"
  bad=$(grep -v '=.*kubernetes\.io/hostname' <<<"$out")
  [[ -n $out && -z $bad ]]
}

# budget_allows_one <name> <n>: the cluster's PodDisruptionBudget covers its n pods and lets
# exactly one go (a budget the disruption controller cannot evaluate allows none: with
# maxUnavailable on pods without a scaling controller it says "found no controllers").
budget_allows_one() {
  local s
  s=$(kn get poddisruptionbudgets -l "caplab.dev/cluster=$1" \
    -o 'jsonpath={range .items[*]}{.metadata.name}|{.spec.minAvailable}|{.spec.maxUnavailable}|{.status.expectedPods}|{.status.disruptionsAllowed}{"\n"}{end}' 2>&1)
  echo "pdb name|minAvailable|maxUnavailable|expectedPods|disruptionsAllowed: ${s:-none}"
  [[ $s == *"|$2|1" && $(grep -c . <<<"$s") == 1 ]]
}

# check_spread_and_budget <name> <n>: issue 18 §6, once the operator builds these objects
# (operator/src/resources.rs); an older checkout says so and skips the check.
check_spread_and_budget() {
  if ! grep -q 'PodDisruptionBudget' "$ROOT/operator/src/resources.rs" 2>/dev/null; then
    log "  SKIP: this operator builds no PodDisruptionBudget or anti-affinity (operator/src/resources.rs)"
    return 0
  fi
  check "member pods prefer distinct nodes (anti-affinity on kubernetes.io/hostname)" pods_spread_by_hostname "$1"
  wait_for "a PodDisruptionBudget for $1 allowing one disruption of $2 pods" 60 budget_allows_one "$1" "$2"
}

step_partition() {
  ensure_demo
  local old_leader old_term
  old_leader=$(jp demo '{.status.leader}'); old_term=$(jp demo '{.status.term}')
  log "leader before the partition: $old_leader (term $old_term)"
  [[ -n $old_leader && $old_term =~ ^[0-9]+$ ]] || fail "no leader/term before the partition"
  local fp; fp=$(events_fingerprint demo)
  patch_spec demo '{"faults":[{"name":"cut-leader","kind":"partition","groups":[["leader"],["followers"]]}]}' \
    || fail "patch spec.faults"
  wait_for "fault cut-leader active with resolved targets" 60 fault_active demo cut-leader
  wait_for "a new leader (not $old_leader) in a term > $old_term" 120 new_leader demo "$old_leader" "$old_term"
  wait_for "a LeaderChanged Event naming the previous leader $old_leader" 60 \
    new_event_matching demo "$fp" "^LeaderChanged: .*$old_leader.* -> "
  check "status observed recently while a fault is active (status.observedAt)" observed_within demo 10
  wait_for "$old_leader reported not replicating (the majority's leader does not hear it)" 60 \
    member_replicating_is demo "$old_leader" false
  local key=e2e-$RUN_ID-b
  wait_for "write $key=7 through the majority's leader" 60 kv_put demo "$key" 7 leader
  wait_for "linearizable read of $key from the majority returns 7" 30 kv_reads demo "$key" 7 leader
  patch_spec demo '{"faults":[]}' || fail "patch spec.faults"
  wait_for "fault cut-leader healed" 120 fault_healed demo cut-leader
  wait_for "all 3 members converge (reachable, one leader, same term, no lag)" 180 converged demo 3
  wait_for "read of $key after healing returns 7" 30 kv_reads demo "$key" 7
}

# Background single writer: values 1, 2, 3, ... to one key, through kv_put. Each value is
# appended to $dir/invoked before its request, to $dir/acked once a member acknowledged it,
# and to $dir/clean if that acknowledgement came without any failed attempt before it.
# Every invoked value that is not clean is indeterminate: a request that timed out, was
# refused in a way that may still have applied it, was retried on another endpoint, or
# was in flight when the writer was stopped may take effect (even after later writes).
WRITER_PID="" WRITER_DIR=""
start_writer() { # <name> <key> <dir>
  local name=$1 key=$2 dir=$3
  : >"$dir/invoked"; : >"$dir/acked"; : >"$dir/clean"; rm -f "$dir/stop"
  (
    i=0
    until [[ -e $dir/stop ]]; do
      i=$(( i + 1 )); echo "$i" >>"$dir/invoked"
      if out=$(kv_put "$name" "$key" "$i"); then
        echo "$i" >>"$dir/acked"
        [[ $out == *"after failures"* ]] || echo "$i" >>"$dir/clean"
      fi
      sleep 0.3   # pacing, not a wait: a few writes per second are enough
    done
  ) &
  WRITER_PID=$! WRITER_DIR=$dir
}

# stop_writer: asks the writer to stop after its current request and waits for it (one
# request tries every endpoint, each within HTTP_TIMEOUT). A writer that does not stop
# in time is killed: its request in flight stays indeterminate (invoked, not clean).
stop_writer() {
  [[ -n $WRITER_PID ]] || return 0
  touch "$WRITER_DIR/stop"
  local deadline=$(( SECONDS + 120 * FACTOR ))
  while kill -0 "$WRITER_PID" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  if kill -0 "$WRITER_PID" 2>/dev/null; then
    log "  background writer did not stop within $(( 120 * FACTOR ))s; killing it (its last write counts as indeterminate)"
    kill "$WRITER_PID" 2>/dev/null
  fi
  wait "$WRITER_PID" 2>/dev/null
  WRITER_PID=""
}

# writer_acks_after <dir> <count>: the writer has more than <count> acknowledged writes.
writer_acks_after() {
  local n; n=$(wc -l <"$1/acked")
  echo "acked=$n (was $2)"; (( n > $2 ))
}

indeterminate_writes() { grep -vxF -f "$1/clean" "$1/invoked"; } # <dir>

# no_ack_lost <name> <key> <dir>: the final value is the last acknowledged one, or an
# indeterminate write (one that may have taken effect after it).
no_ack_lost() {
  local name=$1 key=$2 dir=$3 v last
  last=$(tail -n 1 "$dir/acked")
  v=$(kv_get "$name" "$key") || { echo "read of $key failed"; return 1; }
  echo "$key=$v last-acked=${last:-none} invoked=$(wc -l <"$dir/invoked") acked=$(wc -l <"$dir/acked")" \
       "indeterminate=[$(indeterminate_writes "$dir" | tr '\n' ' ')]"
  [[ -n $last && -n $v ]] || return 1
  [[ $v == "$last" ]] || indeterminate_writes "$dir" | grep -qxF -- "$v"
}

# finish_writer <name> <key> <dir>: lets the writer get acknowledgements from the settled
# cluster, stops it and checks that no acknowledged write was lost.
finish_writer() {
  wait_for "the background writer acknowledged writes on the settled cluster" 60 \
    writer_acks_after "$3" "$(wc -l <"$3/acked")"
  stop_writer
  wait_for "no acknowledged write of the background writer lost" 30 no_ack_lost "$1" "$2" "$3"
}

SCALE_TMP=""
step_scale() {
  ensure_demo
  SCALE_TMP=$(mktemp -d)
  trap 'stop_writer; rm -rf "$SCALE_TMP"' EXIT
  local tmp=$SCALE_TMP
  local i keys=()
  for i in 1 2 3; do
    keys+=("e2e-$RUN_ID-s$i")
    wait_for "write ${keys[-1]}=$i" 60 kv_put demo "${keys[-1]}" "$i"
  done
  local counter=e2e-$RUN_ID-counter
  start_writer demo "$counter" "$tmp"
  log "background writer on $counter (pid $WRITER_PID)"

  patch_spec demo '{"replicas":5}' || fail "patch replicas 5"
  wait_for "regc/demo scaled to 5 members, converged" 420 converged demo 5
  check "exactly 5 member pods" pod_count_is demo 5
  for i in 1 2 3; do wait_for "read ${keys[i-1]} after scale-up" 30 kv_reads demo "${keys[i-1]}" "$i"; done
  for i in 4 5; do
    keys+=("e2e-$RUN_ID-s$i")
    wait_for "write ${keys[-1]}=$i on 5 members" 60 kv_put demo "${keys[-1]}" "$i"
  done

  patch_spec demo '{"replicas":3}' || fail "patch replicas 3"
  wait_for "regc/demo scaled to 3 members, converged" 420 converged demo 3
  wait_for "member pods 3 and 4 deleted" 120 pod_count_is demo 3
  finish_writer demo "$counter" "$tmp"
  for i in 1 2 3 4 5; do wait_for "read ${keys[i-1]} after scale-down" 30 kv_reads demo "${keys[i-1]}" "$i"; done
}

step_crash() {
  ensure_demo
  local leader ord="" m role reach term lag o
  leader=$(jp demo '{.status.leader}')
  while IFS='|' read -r m role reach term lag o; do
    if [[ -n $m && $m != "$leader" ]]; then ord=${o:-${m##*-}}; break; fi
  done < <(members demo)
  [[ $ord =~ ^[0-9]+$ ]] || fail "could not pick a follower to crash (leader $leader)"
  log "crashing follower demo-$ord (leader is $leader)"
  patch_spec demo "{\"faults\":[{\"name\":\"crash-one\",\"kind\":\"crash\",\"targets\":[$ord]}]}" || fail "patch spec.faults"
  wait_for "fault crash-one active" 60 fault_active demo crash-one
  wait_for "pod demo-$ord down" 60 pod_down "demo-$ord"
  wait_for "phase Degraded while still Available=True" 120 phase_is demo Degraded True
  local key=e2e-$RUN_ID-c
  wait_for "write $key=11 while degraded" 60 kv_put demo "$key" 11
  patch_spec demo '{"faults":[]}' || fail "patch spec.faults"
  wait_for "fault crash-one healed" 120 fault_healed demo crash-one
  wait_for "back to Ready with 3 members" 240 converged demo 3
  wait_for "read $key after recovery" 30 kv_reads demo "$key" 11
}

# pods_requesting_cpu <name> <count> <cpu>: exactly <count> live member pods, all
# requesting <cpu> (that is, recreated from the changed spec).
pods_requesting_cpu() {
  local out live
  out=$(kn get pods -l "caplab.dev/cluster=$1" \
    -o 'jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].resources.requests.cpu}={.metadata.deletionTimestamp}{"\n"}{end}' 2>/dev/null)
  live=$(grep '=$' <<<"$out")  # no deletionTimestamp
  echo "${out//$'\n'/ }"
  [[ $(grep -c "=$3=\$" <<<"$live") -eq $2 && $(grep -c . <<<"$live") -eq $2 ]]
}

rolled_events() { # <name>: the MemberRolled events of this run, one per pod
  local n
  n=$(kn get events --field-selector reason=MemberRolled -o name 2>/dev/null | grep -c .)
  echo "$n MemberRolled events"; (( n >= 3 ))
}

ROLL_TMP=""
step_rollout() {
  ensure_demo
  ROLL_TMP=$(mktemp -d)
  trap 'stop_writer; rm -rf "$ROLL_TMP"' EXIT
  local key=e2e-$RUN_ID-r counter=e2e-$RUN_ID-rc
  wait_for "write $key=13 before the rollout" 60 kv_put demo "$key" 13
  start_writer demo "$counter" "$ROLL_TMP"
  log "background writer on $counter (pid $WRITER_PID)"
  patch_spec demo '{"resources":{"requests":{"cpu":"20m"}}}' || fail "patch spec.resources"
  wait_for "every member pod recreated with the 20m cpu request" 900 pods_requesting_cpu demo 3 20m
  wait_for "back to Ready with 3 members" 300 converged demo 3
  finish_writer demo "$counter" "$ROLL_TMP"
  check "one MemberRolled event per pod" rolled_events demo
  wait_for "read $key after the rollout" 30 kv_reads demo "$key" 13
}

ASYNC_TMP=""
step_async() {
  local name=async-demo
  log "kubectl apply -f examples/async-3-failover.yaml -n $NS"
  kn apply -f "$EXAMPLES/async-3-failover.yaml" || fail "kubectl apply async-3-failover.yaml"
  wait_for "regc/$name Available with 3 ready members and a primary" 300 available_with_leader "$name" 3 no-term
  wait_for "regc/$name converged" 120 converged "$name" 3
  local primary term fp i
  primary=$(jp "$name" '{.status.leader}'); term=$(jp "$name" '{.status.term}')
  log "primary: $primary (term/epoch $term)"
  for i in 1 2 3; do wait_for "write a$i=$i to the primary" 60 kv_put "$name" "e2e-$RUN_ID-a$i" "$i" leader; done
  fp=$(events_fingerprint "$name")
  patch_spec "$name" '{"faults":[{"name":"kill-primary","kind":"crash","targets":["leader"]}]}' || fail "patch spec.faults"
  wait_for "fault kill-primary active" 60 fault_active "$name" kill-primary
  wait_for "primary pod $primary down" 60 pod_down "$primary"
  # The term (primary epoch) is only required to grow if the operator reports one.
  wait_for "the operator promotes a secondary (failoverAfterSeconds: 10)" 180 new_leader "$name" "$primary" "$term"
  wait_for "a failover Event" 60 new_event_matching "$name" "$fp" 'failover|promot'
  check "the possible loss of acknowledged writes is reported (Event or status)" loss_reported "$name"
  wait_for "write b1=21 to the new primary" 60 kv_put "$name" "e2e-$RUN_ID-b1" 21 leader
  wait_for "read b1 from the new primary" 30 kv_reads "$name" "e2e-$RUN_ID-b1" 21 leader
  local newp; newp=$(jp "$name" '{.status.leader}')
  patch_spec "$name" '{"faults":[]}' || fail "patch spec.faults"
  wait_for "fault kill-primary healed" 120 fault_healed "$name" kill-primary
  wait_for "old primary back as a secondary; 3 members converged" 300 converged "$name" 3
  check "the promoted primary stays primary" primary_is "$name" "$newp"
  # A rollout: the primary hands its role to an up-to-date secondary instead of failing
  # over, so no acknowledged write is lost (unlike the failover above): a background
  # writer runs through the rollout and the scale-down.
  ASYNC_TMP=$(mktemp -d)
  trap 'stop_writer; rm -rf "$ASYNC_TMP"' EXIT
  local counter=e2e-$RUN_ID-ac
  start_writer "$name" "$counter" "$ASYNC_TMP"
  log "background writer on $counter (pid $WRITER_PID)"
  fp=$(events_fingerprint "$name")
  patch_spec "$name" '{"resources":{"requests":{"cpu":"20m"}}}' || fail "patch spec.resources"
  wait_for "every $name pod recreated with the 20m cpu request" 900 pods_requesting_cpu "$name" 3 20m
  wait_for "$name back to 3 converged members" 300 converged "$name" 3
  wait_for "a Switchover Event (no failover for the rollout)" 60 new_event_matching "$name" "$fp" 'Switchover'
  wait_for "read b1 after the rollout" 30 kv_reads "$name" "e2e-$RUN_ID-b1" 21 leader
  # Scale-down: ordinal 2 goes (after a switchover if it is the primary), nothing is lost.
  patch_spec "$name" '{"replicas":2}' || fail "patch replicas 2"
  wait_for "$name scaled to 2 converged members" 300 converged "$name" 2
  wait_for "pod $name-2 deleted" 120 pod_count_is "$name" 2
  finish_writer "$name" "$counter" "$ASYNC_TMP"
  wait_for "read b1 after the scale-down" 30 kv_reads "$name" "e2e-$RUN_ID-b1" 21 leader
}

# Issue 18 §4: after a sync failover the new primary's member set must let writes
# progress (the dead member no longer among the secondaries every write waits for), and
# the returning member must be re-added cleanly.
step_sync() {
  local name=e2e-sync primary key=e2e-$RUN_ID-y
  log "creating regc/$name (sync, 3 members, failoverAfterSeconds 10)"
  kn apply -f - <<YAML || fail "kubectl apply regc/$name"
apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {name: $name}
spec: {replicas: 3, replication: sync, failoverAfterSeconds: 10}
YAML
  wait_for "regc/$name converged with 3 members" 300 converged "$name" 3
  wait_for "write $key=1 (every secondary confirms)" 60 kv_put "$name" "$key" 1 leader
  primary=$(jp "$name" '{.status.leader}')
  patch_spec "$name" '{"faults":[{"name":"kill-primary","kind":"crash","targets":["leader"]}]}' || fail "patch spec.faults"
  wait_for "fault kill-primary active" 60 fault_active "$name" kill-primary
  wait_for "primary pod $primary down" 60 pod_down "$primary"
  wait_for "a secondary promoted" 180 new_leader "$name" "$primary" ""
  wait_for "sync writes accepted again by the new primary, the old one still down" 120 \
    kv_put "$name" "$key" 2 leader
  patch_spec "$name" '{"faults":[]}' || fail "patch spec.faults"
  wait_for "fault kill-primary healed" 120 fault_healed "$name" kill-primary
  wait_for "the old primary re-added; 3 members converged" 300 converged "$name" 3
  wait_for "write $key=3 with all three members" 60 kv_put "$name" "$key" 3 leader
  wait_for "read $key=3" 30 kv_reads "$name" "$key" 3 leader
  kn delete registercluster "$name" --wait=false >/dev/null || fail "delete regc/$name"
  wait_for "the pods of $name gone" 180 pod_count_is "$name" 0
}

loss_reported() {
  local ev st
  ev=$(events_of "$1" | grep -Ei 'los[st]|acknowledged' | tail -n 2)
  # Any key or string of the status that speaks of a loss (lastFailover.possibleLoss, messages).
  st=$(kn get registercluster "$1" -o json 2>/dev/null | jq -r '.status | .. | (objects | keys[]), strings
        | select(test("los[st]|acknowledged"; "i"))' 2>/dev/null | head -n 2)
  echo "event: ${ev:-none}; status: ${st:-none}"
  [[ -n $ev || -n $st ]]
}

primary_is() { local l; l=$(jp "$1" '{.status.leader}'); echo "leader=$l"; [[ $l == "$2" ]]; }

# Apply an invalid spec change; it must be refused by the API server, or accepted and
# then reported through a condition and an Event while the cluster keeps running.
invalid_change() { # <description> <bad spec json> <restore spec json>
  local desc=$1 bad=$2 good=$3 fp out
  fp=$(events_fingerprint demo)
  log "invalid change ($desc): $bad"
  if ! out=$(kn patch registercluster demo --type merge -p "{\"spec\":$bad}" 2>&1); then
    log "  ok: refused by the API server: $out"
    return 0
  fi
  log "  accepted by the API server ($out); the operator must report it"
  wait_for "a condition reporting the invalid spec ($desc)" 90 invalid_reported demo
  wait_for "an Event about the invalid spec ($desc)" 60 new_event_matching demo "$fp" 'invalid|immutable|reject'
  check "cluster still Available with 3 ready members" available_with_leader demo 3
  check "the phase says what runs (not Failed); status.replication is what runs (raft)" running_as demo raft
  check "still 3 member pods" pod_count_is demo 3
  wait_for "data still readable" 30 kv_reads demo "$KEY_INVALID" 13
  patch_spec demo "$good" || fail "restore spec"
  wait_for "invalid-spec condition cleared" 90 invalid_cleared demo
  wait_for "regc/demo converged again" 180 converged demo 3
}

# running_as <name> <replication>: an invalid spec leaves the phase and the REPLICATION
# column (status.replication) describing the running cluster (issue 19 §2).
running_as() {
  local PH RP
  IFS='|' read -r PH RP < <(jp "$1" '{.status.phase}|{.status.replication}'; echo)
  echo "phase=${PH:-?} status.replication=${RP:-?}"
  [[ -n $PH && $PH != Failed && $RP == "$2" ]]
}

KEY_INVALID=""
step_invalid() {
  ensure_demo
  KEY_INVALID=e2e-$RUN_ID-i
  wait_for "write $KEY_INVALID=13" 60 kv_put demo "$KEY_INVALID" 13
  invalid_change "replicas: 0" '{"replicas":0}' '{"replicas":3}'
  invalid_change "replication raft -> async (immutable)" '{"replication":"async"}' '{"replication":"raft"}'
  check "replication is still raft in spec" spec_replication_is demo raft
  wait_for "data still readable at the end" 30 kv_reads demo "$KEY_INVALID" 13
  long_name_refused
}

# long_name_refused: a RegisterCluster whose name makes a pod hostname longer than 63
# characters is refused by the API server, or reported (SpecValid=False and a Warning
# Event naming the longest name allowed) without any pod created (issue 19 §3).
long_name_refused() {
  local name fp out
  name=e2e-long-$(printf 'n%.0s' {1..53})   # 62 characters: <name>-0 is a 64-character hostname
  fp=$(events_fingerprint "$name")
  if ! out=$(kn apply -f - 2>&1 <<YAML
apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {name: $name}
spec: {replicas: 1, replication: raft}
YAML
  ); then
    log "  ok: a ${#name}-character name refused by the API server: $out"
    return 0
  fi
  wait_for "a condition reporting the ${#name}-character name" 90 invalid_reported "$name"
  wait_for "a Warning Event saying the longest name allowed" 60 new_event_matching "$name" "$fp" 'longest'
  check "no pod created for it" pod_count_is "$name" 0
  kn delete registercluster "$name" --wait=true --timeout=60s >/dev/null || fail "delete regc/$name"
}

spec_replication_is() { local r; r=$(jp "$1" '{.spec.replication}'); echo "spec.replication=$r"; [[ $r == "$2" ]]; }

# ---------------------------------------------------------------------------
# examples: each examples/*.yaml promises in its header comment, one checkpoint per line,
#   # expect: phase=Ready members=3 leader=yes
# and the step applies it (in its own namespace) and waits, checkpoint after checkpoint,
# until every key of the line holds at once:
#   phase=Ready|Degraded     status.phase (alternatives with |)
#   members=3                entries in status.members        ready=3  status.readyReplicas
#   leader=yes|no|<pod>      status.leader set / unset / that pod (a glob: demo-*)
#   term=2 term>=2           status.term                       replicas=5  spec.replicas
#   replication=raft         status.replication (what runs)
#   faults=none|<n>|a,b      active faults in status.faults (count or names)
#   <Condition>=True|False   a condition's status, e.g. Available=True Degraded=False
#   experiment=Done          status.experiment.phase (Pending|Running|Checking|Done|Failed)
#   linearizable=true        status.experiment.verdict.linearizable (true|false)
#   lost>=1                  lost acknowledged writes the verdict counts (0 when none)
#   serving=3                quorum mode: pods in status.quorum.serving (they reach max(R, W))
#   lwwLost>=1               quorum mode: writes lost to last-writer-wins, summed over
#                            status.quorum.lwwLostWrites
#   inDoubt>=1               2pc: transactions in doubt, as the Blocked condition's message
#                            counts them ("N transaction(s) in doubt"; 0 when it says none)
#   within=300               deadline of this checkpoint in seconds (default 300)
# An unknown key fails the step: a promise nobody checks is not kept.

# expectation_holds <name> <line>: every key=value of the line holds now.
expectation_holds() {
  local name=$1 tok key val op got bad="" seen=""
  for tok in $2; do
    [[ $tok == *=* ]] || { echo "not key=value: $tok"; return 2; }
    key=${tok%%=*} val=${tok#*=} op="="
    if [[ $key == *[\<\>] ]]; then op="${key: -1}="; key=${key%?}; fi
    [[ $key == within ]] && continue
    if ! got=$(expectation_observe "$name" "$key"); then echo "unknown key: $key"; return 2; fi
    seen+=" $key=${got:-<none>}"
    expectation_matches "$key" "$op" "$val" "$got" || bad+=" $tok"
  done
  echo "observed:$seen${bad:+; not yet:$bad}"
  [[ -z $bad ]]
}

expectation_observe() { # <name> <key>: prints the observed value; fails on unknown keys
  case $2 in
    phase|leader|term|replication) jp "$1" "{.status.$2}" ;;
    members) jp "$1" '{.status.members[*].name}' | wc -w ;;
    ready) jp "$1" '{.status.readyReplicas}' ;;
    replicas) jp "$1" '{.spec.replicas}' ;;
    faults) jp "$1" '{range .status.faults[?(@.state=="active")]}{.name}{","}{end}' | sed 's/,$//' ;;
    [A-Z]*) jp "$1" "{.status.conditions[?(@.type==\"$2\")].status}" ;;
    experiment) jp "$1" '{.status.experiment.phase}' ;;
    linearizable) jp "$1" '{.status.experiment.verdict.linearizable}' ;;
    lost) kn get registercluster "$1" -o json 2>/dev/null \
      | jq '.status.experiment.verdict.anomalyCounts["lost-acknowledged-write"] // 0' ;;
    serving) jp "$1" '{.status.quorum.serving[*]}' | wc -w ;;
    lwwLost) kn get registercluster "$1" -o json 2>/dev/null \
      | jq '[.status.quorum.lwwLostWrites // {} | .[]] | add // 0' ;;
    inDoubt) jp "$1" '{.status.conditions[?(@.type=="Blocked")].message}' \
      | sed -n 's/.*; \([0-9][0-9]*\) transaction(s) in doubt.*/\1/p;t;s/.*/0/p' ;;
    *) return 1 ;;
  esac
}

expectation_matches() { # <key> <op> <wanted> <observed>
  local key=$1 op=$2 want=$3 got=$4 alt n
  if [[ $op != "=" ]]; then
    [[ $got =~ ^[0-9]+$ && $want =~ ^[0-9]+$ ]] || return 1
    if [[ $op == ">=" ]]; then (( got >= want )); else (( got <= want )); fi
    return
  fi
  case $key in
    leader)
      case $want in yes) [[ -n $got ]]; return ;; no) [[ -z $got ]]; return ;; esac ;;
    faults)
      n=$(tr ',' '\n' <<<"$got" | grep -c .)
      case $want in none) (( n == 0 )); return ;; esac
      [[ $want =~ ^[0-9]+$ ]] && { (( n == want )); return; }
      [[ $(tr ',' '\n' <<<"$got" | sort | paste -sd,) == "$(tr ',' '\n' <<<"$want" | sort | paste -sd,)" ]]
      return ;;
  esac
  for alt in ${want//|/ }; do
    # shellcheck disable=SC2053 # a glob on purpose (leader=demo-*)
    [[ $got == $alt ]] && return 0
  done
  return 1
}

# expectations <file>: its "# expect:" lines, without the prefix.
expectations() { sed -n 's/^#[[:space:]]*expect:[[:space:]]*//p' "$1"; }

ex_pods_gone() { local c; c=$(k -n "$EXAMPLES_NS" get pods -l caplab.dev/cluster -o name 2>/dev/null | wc -l); echo "pods=$c"; (( c == 0 )); }

# check_example <file>: applies it in $EXAMPLES_NS, walks its checkpoints, deletes it.
check_example() {
  local file=$1 name line tok within n=0
  name=$(sed -n '/^metadata:/,/^[a-z]/{s/^  name:[[:space:]]*\([^[:space:]]*\).*/\1/p}' "$file" | head -n 1)
  [[ -n $name ]] || fail "no metadata.name in $file"
  while IFS= read -r line; do
    for tok in $line; do
      [[ $tok =~ ^(phase|members|ready|replicas|leader|term|replication|faults|experiment|linearizable|lost|serving|lwwLost|inDoubt|within|[A-Z][A-Za-z]*)[\<\>]?=. ]] \
        || fail "examples/$(basename "$file"): cannot check '$tok' in '# expect: $line' (format: tests/e2e/run.sh, step_examples)"
    done
  done < <(expectations "$file")
  log "kubectl apply -f examples/$(basename "$file") -n $EXAMPLES_NS (regc/$name)"
  k -n "$EXAMPLES_NS" apply -f "$file" || fail "kubectl apply $file"
  while IFS= read -r line; do
    n=$(( n + 1 ))
    within=$(grep -o 'within=[0-9]*' <<<"$line" | cut -d= -f2)
    # (jp, kn and the failure dump read $NS: point them at the examples' namespace)
    NS=$EXAMPLES_NS wait_for "$(basename "$file") promise $n: $line" "${within:-300}" expectation_holds "$name" "$line"
  done < <(expectations "$file")
  k -n "$EXAMPLES_NS" delete registercluster "$name" --wait=true --timeout=120s >/dev/null || fail "delete regc/$name"
  wait_for "the pods of $name gone" 180 ex_pods_gone
}

step_examples() {
  local f checked=0
  k create namespace "$EXAMPLES_NS" >/dev/null 2>&1 || true
  for f in "$EXAMPLES"/*.yaml; do
    if [[ -z $(expectations "$f") ]]; then
      log "  SKIP examples/$(basename "$f"): no '# expect:' line in its header"
      continue
    fi
    check_example "$f"
    checked=$(( checked + 1 ))
  done
  log "  $checked example(s) kept every promise of their header"
}

# owned_objects: pods/services/secrets/PVCs/PodDisruptionBudgets in $NS labelled caplab.dev/cluster or owned
# by a RegisterCluster, as kind/name lines.
owned_objects() {
  {
    kn get pods,services,secrets,persistentvolumeclaims,poddisruptionbudgets -l caplab.dev/cluster -o name 2>/dev/null
    kn get pods,services,secrets,persistentvolumeclaims,poddisruptionbudgets \
      -o 'jsonpath={range .items[*]}{.kind}/{.metadata.name}|{.metadata.ownerReferences[*].kind}{"\n"}{end}' 2>/dev/null \
      | awk -F'|' '$2 ~ /RegisterCluster/ { split($1, a, "/"); print tolower(a[1]) "/" a[2] }'
  } | awk 'NF && !seen[$0]++'
}

none_left() { # <file with kind/name lines>
  local left o
  left=$(owned_objects)
  while read -r o; do
    [[ -z $o ]] && continue
    kn get "$o" -o name >/dev/null 2>&1 && left+=$'\n'"$o"
  done <"$1"
  left=$(awk 'NF && !seen[$0]++' <<<"$left" | tr '\n' ' ')
  echo "left: ${left:-none}"
  [[ -z ${left// /} ]]
}

# ---------------------------------------------------------------------------
# experiment: spec.workload run by the operator as a Job (issue 16).

experiment_phase_is() { # <name> <phase>...: status.experiment.phase is one of them
  local name=$1 ph; shift
  ph=$(jp "$name" '{.status.experiment.phase}')
  echo "experiment=${ph:-none} reason=$(jp "$name" '{.status.experiment.reason}')"
  [[ " $* " == *" $ph "* ]]
}

verdict_is() { # <name> <linearizable true|false>
  local v; v=$(jp "$1" '{.status.experiment.verdict.linearizable}')
  echo "linearizable=${v:-unknown} summary=$(jp "$1" '{.status.experiment.summary}')"
  [[ $v == "$2" ]]
}

run_pod_hardened() { # <name>: the run's pod is non-root, read-only root, no capabilities
  local s
  s=$(kn get jobs -l "caplab.dev/experiment=$1" \
    -o 'jsonpath={.items[0].spec.template.spec.securityContext.runAsNonRoot} {.items[0].spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.items[0].spec.template.spec.containers[0].securityContext.capabilities.drop[*]}')
  echo "$s"; [[ $s == "true true ALL" ]]
}

window_seen() { # <name> <fault>: the fault's window is the members' view, with its availability
  local s; s=$(kn get registercluster "$1" -o json | jq -r --arg f "$2" \
    '.status.experiment.windows[] | select(.name == $f) | "\(.seenByMembers) \(.availability != null)"')
  echo "window $2: ${s:-none}"; [[ $s == "true true" ]]
}

restart_operator() {
  log "restarting the operator mid-run"
  k -n "$OPNS" delete pods -l "app.kubernetes.io/instance=$RELEASE" --wait=false >/dev/null \
    || fail "delete the operator pods"
  wait_for "operator deployment $OPNS/$OPDEPLOY ready again" 180 \
    k -n "$OPNS" rollout status "deployment/$OPDEPLOY" --timeout=5s
}

step_experiment() {
  local name=e2e-exp bad=e2e-exp-bad fp out
  fp=$(events_fingerprint "$bad")
  if ! out=$(kn apply -f - 2>&1 <<YAML
apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {name: $bad}
spec:
  replicas: 1
  workload: {clients: 2, durationSeconds: 10, keys: 1, mix: {read: 50, write: 40}}
YAML
  ); then
    log "  ok: a mix of 90 % refused by the API server: $out"
  else
    wait_for "a condition reporting the mix of 90 %" 90 invalid_reported "$bad"
    wait_for "a Warning Event saying the mix must sum to 100" 60 new_event_matching "$bad" "$fp" 'sum to 100'
    kn delete registercluster "$bad" --wait=true --timeout=60s >/dev/null || fail "delete regc/$bad"
  fi
  fp=$(events_fingerprint "$name")
  log "creating regc/$name: raft, 3 members, a 60 s workload, member 0 (leader or follower) crashed 10 s in"
  kn apply -f - <<YAML || fail "kubectl apply regc/$name"
apiVersion: caplab.dev/v1alpha1
kind: RegisterCluster
metadata: {name: $name}
spec:
  replicas: 3
  workload: {clients: 4, durationSeconds: 60, keys: 2, mix: {read: 50, write: 30, cas: 20}, ratePerSecond: 50}
  faults:
    - {name: kill-one, kind: crash, targets: [0], startAfterSeconds: 10, durationSeconds: 15}
YAML
  wait_for "the run of $name started" 300 experiment_phase_is "$name" Running Checking
  check "the run's pod is non-root with a read-only root filesystem" run_pod_hardened "$name"
  restart_operator
  wait_for "the run of $name done (the operator re-adopted its Job)" 420 experiment_phase_is "$name" Done
  check "the verdict is linearizable" verdict_is "$name" true
  wait_for "a Verdict Event" 60 new_event_matching "$name" "$fp" 'Verdict: run .*linearizable'
  check "the fault's window is the members' view, with its availability" window_seen "$name" kill-one
  kn delete registercluster "$name" --wait=true --timeout=120s >/dev/null || fail "delete regc/$name"
  wait_for "the pods of $name gone" 180 pod_count_is "$name" 0
}

DELETE_TMP=""
step_delete() {
  DELETE_TMP=$(mktemp)
  trap 'rm -f "$DELETE_TMP"' EXIT
  local tmp=$DELETE_TMP
  owned_objects >"$tmp"
  log "objects created for the RegisterClusters: $(tr '\n' ' ' <"$tmp")"
  [[ -s $tmp ]] || log "  (none found: nothing was running; checking that anyway)"
  log "kubectl delete registerclusters --all -n $NS"
  kn delete registerclusters --all --wait=false || fail "kubectl delete registerclusters"
  wait_for "RegisterClusters gone" 120 regc_gone
  wait_for "every pod, service, secret, PVC and PodDisruptionBudget they created is gone" 180 none_left "$tmp"
}

# ---------------------------------------------------------------------------
# runner

teardown() {
  if [[ ${CAPLAB_E2E_KEEP:-0} == 1 ]]; then
    log "CAPLAB_E2E_KEEP=1: leaving release $OPNS/$RELEASE and namespace $NS in place"
    return
  fi
  log "teardown: deleting namespace $NS and uninstalling $RELEASE"
  kn delete registerclusters --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  k -n "$EXAMPLES_NS" delete registerclusters --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  k delete namespace "$NS" "$EXAMPLES_NS" --wait=true --timeout=120s >/dev/null 2>&1 || true
  "$HELM" uninstall "$RELEASE" -n "$OPNS" --wait --timeout 2m >/dev/null 2>&1 \
    || "$HELM" uninstall "$RELEASE" -n "$OPNS" >/dev/null 2>&1 || true
}

select_steps() {
  local tok i out=()
  if [[ -z ${CAPLAB_E2E_STEPS:-} ]]; then echo "${STEP_NAMES[*]}"; return; fi
  for tok in ${CAPLAB_E2E_STEPS//,/ }; do
    if [[ $tok =~ ^[0-9]+$ ]] && (( tok >= 1 && tok <= ${#STEP_NAMES[@]} )); then
      out+=("${STEP_NAMES[tok-1]}")
    else
      for i in "${STEP_NAMES[@]}"; do [[ $i == "$tok" ]] && out+=("$tok"); done
      [[ " ${out[*]} " == *" $tok "* ]] || { echo "unknown step: $tok (steps: ${STEP_NAMES[*]})" >&2; return 1; }
    fi
  done
  echo "${out[*]}"
}

main() {
  local steps passed=0 failed=0 skipped=0 s n stop=0 failed_names=()
  steps=$(select_steps) || exit 2
  command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }
  command -v "$HELM" >/dev/null || { echo "helm not found (set HELM)" >&2; exit 2; }
  "$KUBECTL" version >/dev/null 2>&1 || { echo "cannot reach the cluster with $KUBECTL (KUBECONFIG=${KUBECONFIG:-unset})" >&2; exit 2; }
  log "kubectl=$KUBECTL helm=$HELM release=$OPNS/$RELEASE namespace=$NS tag=$TAG steps: $steps"
  for s in $steps; do
    n=0; for n in "${!STEP_NAMES[@]}"; do [[ ${STEP_NAMES[n]} == "$s" ]] && break; done
    if (( stop )); then skipped=$(( skipped + 1 )); log "SKIP step $((n + 1)) $s"; continue; fi
    log "======== step $((n + 1)): $s ========"
    local t0=$SECONDS
    if ( "step_$s" ); then
      passed=$(( passed + 1 )); log "PASS step $((n + 1)) $s ($(( SECONDS - t0 ))s)"
    else
      failed=$(( failed + 1 )); failed_names+=("$s"); log "FAIL step $((n + 1)) $s ($(( SECONDS - t0 ))s)"
      [[ ${CAPLAB_E2E_KEEP_GOING:-0} == 1 ]] || stop=1
    fi
  done
  if (( failed == 0 )); then teardown; else log "leaving everything in place for inspection after failure"; fi
  (( skipped )) && log "$skipped step(s) skipped after the failure of: ${failed_names[*]}"
  echo "$passed passed, $failed failed"
  (( failed == 0 ))
}

trap 'echo "interrupted" >&2; exit 130' INT TERM

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
