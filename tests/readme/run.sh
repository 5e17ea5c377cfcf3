#!/usr/bin/env bash
# tests/readme/run.sh — runs README.md's examples of section "The member" as a user would:
# the `for` loop of the "three members on loopback" block that starts three caplab-node
# members, then every `curl` command of the section's sh blocks in order (the loopback
# block's, then "Faults inside the member"), each of which must answer 2xx; a command
# whose trailing comment is a JSON value must answer that JSON. Members are started from a
# fresh `cargo build -p caplab-node`, on free ports and a temporary data directory (the
# 808x/700x ports and /tmp/caplab are rewritten), so the test can run next to anything
# else. Between the init request and the first client request it waits for every member
# to be ready (a user reading along does the same).
#
# Env: CAPLAB_NODE_BIN (a built caplab-node; default: cargo build), README (default:
#      README.md at the repository root), CAPLAB_README_TIMEOUT (seconds per wait, 60).
# Exit status: 0 when every command succeeded; 1 with the failing one, its status and body.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
README="${README:-$ROOT/README.md}"
TIMEOUT="${CAPLAB_README_TIMEOUT:-60}"
SECTION="## The member (\`caplab-node\`)"
# The data directory the README's commands use; rewritten to a temporary one.
README_DATA_DIR=/tmp/caplab/
WORK=""

log() { echo "[readme $(date +%H:%M:%S)] $*" >&2; }
die() {
  echo "[readme] FAIL: $*" >&2
  if [[ -s ${WORK:-}/members.log ]]; then
    echo "---- last 40 lines of the members' output ----" >&2
    tail -n 40 "$WORK/members.log" >&2
  fi
  exit 1
}

# The shell commands of the sh blocks in section "The member", one per line: a command
# starts at a line beginning with `for ` or `curl ` and takes the lines after it (joined,
# backslashes dropped) up to the next command, a blank line or the end of the block.
readme_commands() {
  awk -v section="$SECTION" '
    /^## / { insection = ($0 == section) }
    !insection { next }
    /^```sh/ { inblock = 1; next }
    /^```/ { if (cmd != "") print cmd; cmd = ""; inblock = 0; next }
    !inblock { next }
    /^(for|curl) / { if (cmd != "") print cmd; cmd = $0; sub(/[[:space:]]*\\$/, "", cmd); next }
    /^[[:space:]]*(#.*)?$/ { if (cmd != "") print cmd; cmd = ""; next }
    cmd != "" { line = $0; sub(/^[[:space:]]*/, "", line); sub(/[[:space:]]*\\$/, "", line); cmd = cmd " " line }
  ' "$README"
}

# A free port prefix P (ports P1, P2, P3) below the ephemeral port range.
free_prefix() {
  local p n
  for _ in $(seq 1 50); do
    p=$(( 2000 + RANDOM % 1200 ))
    for n in 1 2 3; do
      (exec 3<>"/dev/tcp/127.0.0.1/$p$n") 2>/dev/null && continue 2
    done
    echo "$p"; return 0
  done
  die "no free ports found"
}

node_binary() {
  if [[ -n ${CAPLAB_NODE_BIN:-} ]]; then echo "$CAPLAB_NODE_BIN"; return; fi
  log "cargo build --locked -p caplab-node"
  (cd "$ROOT" && cargo build -q --locked -p caplab-node >&2)
  local target
  target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | jq -r .target_directory)
  echo "$target/debug/caplab-node"
}

# wait_http <what> <url> <expected status>: polls until the URL answers that status.
wait_http() {
  local deadline=$(( SECONDS + TIMEOUT )) code
  while :; do
    code=$(curl -s -o "$WORK/wait-body" -m 5 -w '%{http_code}' "$2" || true)
    [[ $code == "$3" ]] && return 0
    (( SECONDS < deadline )) \
      || die "$1: $2 answered ${code:-nothing} for ${TIMEOUT}s (wanted $3): $(head -c 300 "$WORK/wait-body" 2>/dev/null)"
    sleep 0.2
  done
}

is_json() { jq -n --argjson v "$1" true >/dev/null 2>&1; }

# same_json <a> <b>: equal as JSON values (key order and spacing ignored).
same_json() {
  jq -n -e --argjson a "$1" --argjson b "$2" '$a == $b' >/dev/null 2>&1
}

# run_curl <line>: runs one README curl line with the status written out; checks it.
run_curl() {
  local line=$1 cmd comment="" code body
  cmd=${line%%#*}
  [[ $line == *#* ]] && comment=$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"${line#*#}")
  # `curl ARGS` -> `curl -sS -o <body file> -w <status> ARGS` (the README's own words after it).
  code=$(cd "$WORK" && bash -c "curl -sS -o '$WORK/body' -w '%{http_code}' ${cmd#curl }") \
    || die "could not run: $line"
  body=$(cat "$WORK/body")
  [[ $code == 2?? ]] || die "$line -> HTTP $code: ${body:0:300}"
  if is_json "$comment" && ! same_json "$comment" "$body"; then
    die "$line -> $body (the README promises $comment)"
  fi
  log "ok $code: $line"
}

main() {
  local block node cp pp start_loop line ready=0
  block=$(readme_commands)
  [[ $block == *caplab-node* ]] || die "no sh block starting caplab-node members in section '$SECTION' of $README"
  node=$(node_binary)
  [[ -x $node ]] || die "$node is not an executable caplab-node"
  WORK=$(mktemp -d)
  cp=$(free_prefix); pp=$(free_prefix)
  [[ $cp != "$pp" ]] || pp=$(( cp + 1 ))
  log "members on 127.0.0.1:${cp}1-3 (client) and :${pp}1-3 (peer), data in $WORK"
  block=$(sed -e "s#127\.0\.0\.1:808#127.0.0.1:$cp#g" -e "s#127\.0\.0\.1:700#127.0.0.1:$pp#g" \
              -e "s#$README_DATA_DIR#$WORK/data/#g" -e "s#target/release/caplab-node#$node#g" <<<"$block")

  # The member-starting loop, run in its own process group.
  start_loop=$(grep -m 1 '^for .*caplab-node' <<<"$block") || die "no loop starting caplab-node members"
  setsid bash -c "$start_loop"$'\nwait' >"$WORK/members.log" 2>&1 &
  MEMBERS=$!
  trap 'kill -- -"$MEMBERS" 2>/dev/null || true; wait "$MEMBERS" 2>/dev/null || true; rm -rf "$WORK"' EXIT
  for n in 1 2 3; do wait_http "member $n started" "http://127.0.0.1:$cp$n/healthz" 200; done

  while IFS= read -r line; do
    [[ $line == curl* ]] || continue
    if [[ $line != */v1/admin/init* ]] && (( ! ready )); then
      for n in 1 2 3; do wait_http "member $n ready after init" "http://127.0.0.1:$cp$n/readyz" 200; done
      ready=1
    fi
    run_curl "$line"
  done <<<"$block"
  log "every curl command of the README's section '$SECTION' succeeded"
}

main "$@"
