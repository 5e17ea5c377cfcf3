#!/usr/bin/env bash
# build-k8s.sh — build the Kubernetes v1.20.2 server binaries (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy) from Debian's
# bookworm source package `kubernetes`, the way debian/rules does it
# (why each step: hack/README.md):
#   * add a deb-src entry for bookworm, `apt-get source --download-only kubernetes`
#   * unpack the .orig.tar.gz (vendor/ included)
#   * replace vendor/github.com/modern-go/reflect2 with Debian's 1.0.2 source
#     (the vendored 1.0.1 makes the apiserver SIGSEGV under Go >= 1.18)
#   * GOPATH=<tree>/.go with .go/src/k8s.io/kubernetes -> <tree>
#   * CGO_ENABLED=0 make WHAT="cmd/..."
#
# Output: $CAPLAB_CACHE/k8s/bin/{kube-apiserver,...}. If all five binaries are
# already there, nothing is done. Takes ~4-5 minutes on 2 cores otherwise.
set -euo pipefail

CAPLAB_CACHE="${CAPLAB_CACHE:-/var/cache/caplab}"
K8S_DIR="$CAPLAB_CACHE/k8s"
BIN_DIR="$K8S_DIR/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { echo "[build-k8s] $*" >&2; }

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

if have_all; then
  log "cached binaries present in $BIN_DIR"
  exit 0
fi

# Serialize concurrent callers; the second one finds the finished binaries.
mkdir -p "$K8S_DIR"
exec 9>"$K8S_DIR/.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it"
  flock 9
fi
if have_all; then
  log "cached binaries present in $BIN_DIR"
  exit 0
fi

for tool in go rsync make; do
  command -v "$tool" >/dev/null 2>&1 || { log "ERROR: '$tool' missing (run hack/install-deps.sh)"; exit 1; }
done
[ -d "$REFLECT2_SRC" ] || { log "ERROR: $REFLECT2_SRC missing (apt-get install golang-github-modern-go-reflect2-dev)"; exit 1; }

# --- fetch the source package ------------------------------------------------
SRC_LIST=/etc/apt/sources.list.d/caplab-deb-src.sources
if [ ! -f "$SRC_LIST" ] && ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
  log "adding deb-src entries for bookworm ($SRC_LIST)"
  cat > "$SRC_LIST" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq
fi

SRC_DL="$K8S_DIR/src-download"
mkdir -p "$SRC_DL"
chown _apt "$SRC_DL" 2>/dev/null || true   # lets apt download sandboxed (no warning)
if ! ls "$SRC_DL"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  log "downloading Debian source package 'kubernetes'"
  (cd "$SRC_DL" && apt-get source --download-only -qq kubernetes >/dev/null) || {
    log "apt-get source failed; retrying after apt-get update"
    apt-get update -qq
    (cd "$SRC_DL" && apt-get source --download-only -qq kubernetes >/dev/null)
  }
fi
tarballs=("$SRC_DL"/kubernetes_*.orig.tar.gz)
ORIG_TAR="${tarballs[0]}"
[ -f "$ORIG_TAR" ] || { log "ERROR: no kubernetes_*.orig.tar.gz in $SRC_DL"; exit 1; }
log "using $(basename "$ORIG_TAR")"

# --- unpack into a fresh build tree -------------------------------------------
TREE="$K8S_DIR/tree"
rm -rf "$TREE"
mkdir -p "$TREE"
tar -xzf "$ORIG_TAR" -C "$TREE" --strip-components=1
[ -f "$TREE/Makefile" ] || { log "ERROR: unexpected source layout in $ORIG_TAR"; exit 1; }

log "replacing vendored modern-go/reflect2 with Debian's 1.0.2"
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
mkdir -p "$TREE/vendor/github.com/modern-go/reflect2"
cp -a "$REFLECT2_SRC/." "$TREE/vendor/github.com/modern-go/reflect2/"
# tests shipped in the Debian package are not part of a vendor dir
find "$TREE/vendor/github.com/modern-go/reflect2" -name '*_test.go' -delete

mkdir -p "$TREE/.go/src/k8s.io"
ln -sfn "$TREE" "$TREE/.go/src/k8s.io/kubernetes"

# --- build -----------------------------------------------------------------------
WHAT=""
for b in "${BINARIES[@]}"; do WHAT="$WHAT cmd/$b"; done
log "building:$WHAT (several minutes; log: $K8S_DIR/build.log)"
start=$(date +%s)
if ! (cd "$TREE/.go/src/k8s.io/kubernetes" && \
      env GOPATH="$TREE/.go" GOCACHE="$K8S_DIR/gocache" \
          CGO_ENABLED=0 KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean \
          make WHAT="${WHAT# }" >"$K8S_DIR/build.log" 2>&1); then
  log "ERROR: kubernetes build failed; tail of $K8S_DIR/build.log:"
  tail -n 40 "$K8S_DIR/build.log" >&2
  exit 1
fi

mkdir -p "$BIN_DIR"
for b in "${BINARIES[@]}"; do
  install -m 0755 "$TREE/_output/bin/$b" "$BIN_DIR/$b.tmp"
  mv -f "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
done
log "built in $(( $(date +%s) - start ))s -> $BIN_DIR"
# The source tree (~1 GB with build output) is not needed any more.
rm -rf "$TREE"
