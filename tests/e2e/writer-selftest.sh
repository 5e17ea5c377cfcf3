#!/usr/bin/env bash
# tests/e2e/writer-selftest.sh — checks the e2e suite's background writer and its
# "no acknowledged write lost" check (tests/e2e/run.sh) against three real caplab-node
# members on loopback, without Kubernetes:
#   1. the writer is killed while a write is in flight, and that write lands afterwards:
#      the check must count it as indeterminate and pass (the suite's scale and rollout
#      steps failed exactly so, now and then, when it counted such a write as lost);
#   2. an acknowledged write is then really lost (an older acknowledged value written
#      back): the check must fail;
#   3. a writer stopped the normal way finishes its request and passes the check.
# The writer talks to a follower whose links are delayed (80 ms, below the 100 ms
# heartbeat), so each write stays in flight long enough to be caught there.
#
# Env: CAPLAB_NODE_BIN (default: cargo build -p caplab-node). Exit status 0 on success.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=tests/e2e/run.sh
source "$HERE/run.sh"   # the suite's functions; its main() only runs when executed

TOKEN=selftest
WORK=""
MEMBERS=()

die() { log "FAIL: $*"; exit 1; }
# The suite's fail() dumps Kubernetes diagnostics; here there is no cluster.
fail() { die "$*"; }

cleanup() {
  local p
  for p in "${MEMBERS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${MEMBERS[@]}"; do wait "$p" 2>/dev/null; done
  [[ -n $WORK ]] && rm -rf "$WORK"
}
trap cleanup EXIT

node_binary() {
  if [[ -n ${CAPLAB_NODE_BIN:-} ]]; then echo "$CAPLAB_NODE_BIN"; return; fi
  (cd "$ROOT" && cargo build -q --locked -p caplab-node >&2) || return 1
  (cd "$ROOT" && cargo metadata --format-version 1 --no-deps) \
    | jq -r '.target_directory + "/debug/caplab-node"'
}

# Ports P1..P3 (client) and Q1..Q3 (peer), below the ephemeral range.
CP=$(( 2000 + RANDOM % 600 )); PP=$(( CP + 600 ))
client() { echo "127.0.0.1:$CP$1"; }
peer() { echo "127.0.0.1:$PP$1"; }

admin() { # <member> <method> <path> [json]
  curl -sS -f -m 10 -X "$2" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    ${4:+--data "$4"} "http://$(peer "$1")$3"
}

status_field() { # <member> <field>: a top-level field of /v1/status
  curl -s -m 5 "http://$(client "$1")/v1/status" \
    | jq -r --arg field "$2" '.[$field] // empty' 2>/dev/null
}

all_ready() {
  local n c
  for n in 1 2 3; do
    c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$(client "$n")/readyz")
    [[ $c == 200 ]] || { echo "member $n readyz $c"; return 1; }
  done
  echo "3 members ready"
}

start_members() {
  local node n
  node=$(node_binary) || die "cannot build caplab-node"
  for n in 1 2 3; do
    CAPLAB_ADMIN_TOKEN=$TOKEN "$node" --id "$n" --client-listen "$(client "$n")" \
      --peer-listen "$(peer "$n")" --data-dir "$WORK/data/$n" >>"$WORK/members.log" 2>&1 &
    MEMBERS+=("$!")
  done
  wait_for "members answer" 60 admin 1 GET /v1/admin/faults
  admin 1 POST /v1/admin/init \
    "{\"members\": {\"1\": \"$(peer 1)\", \"2\": \"$(peer 2)\", \"3\": \"$(peer 3)\"}}" >/dev/null \
    || die "init failed: $(tail -n 20 "$WORK/members.log")"
  wait_for "a leader and every member ready" 60 all_ready
}

# The writer's endpoint: one follower, whose peer links are delayed.
FOLLOWER=""
endpoints() { client "$FOLLOWER"; }

in_flight() { # <dir>: a write invoked and not (yet) acknowledged
  local last; last=$(tail -n 1 "$1/invoked")
  [[ -n $last ]] && ! grep -qxF -- "$last" "$1/acked" && echo "$last"
}

# kill_writer_mid_request <key> <dir>: runs the writer, SIGKILLs it while a write is in
# flight (polling every 20 ms; a write takes a few hundred ms here) and sets KILLED_WRITE
# to that write's value. Tries again on a new run when the kill landed between writes.
# (Not called in $(...): the writer would hold that pipe open.)
KILLED_WRITE=""
kill_writer_mid_request() {
  local key=$1 dir=$2 attempt v
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    start_writer selftest "$key" "$dir"
    wait_for "three acknowledged writes (attempt $attempt)" 60 writer_acks_after "$dir" 2
    until in_flight "$dir" >/dev/null; do sleep 0.02; done
    kill -KILL "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null; WRITER_PID=""
    # The writer records an acknowledgement right after it; dead, it records nothing more.
    if v=$(in_flight "$dir"); then KILLED_WRITE=$v; return 0; fi
  done
  return 1
}

value_is() { # <key> <value>
  local v; v=$(kv_get selftest "$1") || return 1
  echo "$1=$v"; [[ $v == "$2" ]]
}

main_selftest() {
  WORK=$(mktemp -d)
  start_members
  local leader n key=writer-selftest dir="$WORK/writer" v first verdict
  leader=$(status_field 1 leader)
  [[ $leader =~ ^[1-3]$ ]] || die "no leader id in /v1/status: '$leader'"
  for n in 1 2 3; do [[ $n != "$leader" ]] && { FOLLOWER=$n; break; }; done
  admin "$FOLLOWER" PUT /v1/admin/faults "{\"delay\": {\"peers\": [$leader], \"latencyMs\": 80}}" >/dev/null \
    || die "could not delay member $FOLLOWER's links"
  log "writer -> member $FOLLOWER (follower, links to leader $leader delayed 80 ms)"

  # 1. Killed mid-request; the write in flight lands afterwards.
  mkdir -p "$dir"
  kill_writer_mid_request "$key" "$dir" || die "could not kill the writer while a write was in flight"
  v=$KILLED_WRITE
  log "killed the writer while write $v was in flight"
  wait_for "the killed writer's write $v lands" 30 value_is "$key" "$v"
  check "the landed, unacknowledged write counts as indeterminate (not lost)" no_ack_lost selftest "$key" "$dir"

  # 2. A real loss of an acknowledged write is still caught.
  first=$(head -n 1 "$dir/acked")
  kv_put selftest "$key" "$first" >/dev/null || die "could not write $key=$first"
  if verdict=$(no_ack_lost selftest "$key" "$dir"); then
    die "an acknowledged write lost went unnoticed: $verdict"
  fi
  log "  ok: a lost acknowledged write is reported ($verdict)"

  # 3. The normal stop: the request in flight finishes, nothing is left indeterminate by it.
  start_writer selftest "$key-2" "$dir"
  wait_for "three acknowledged writes" 60 writer_acks_after "$dir" 2
  stop_writer
  check "after a normal stop no acknowledged write is lost" no_ack_lost selftest "$key-2" "$dir"
  log "writer self-test passed"
}

main_selftest
