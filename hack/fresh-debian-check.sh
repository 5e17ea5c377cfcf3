#!/usr/bin/env bash
# fresh-debian-check.sh [rootfs-dir] — proves that hack/install-deps.sh brings a fresh
# Debian 12 to where the workspace builds: makes a clean rootfs with
# `debootstrap --variant=minbase bookworm` (kept and reused), clones this repository's
# HEAD into it, runs hack/install-deps.sh there, then runs, inside the rootfs,
#   cargo check --workspace --all-targets --locked   (every build script: protoc, cc, ...)
#   cargo check --target x86_64-unknown-linux-musl -p caplab-node -p caplab-operator
#                                                     (the images' C parts, with musl-gcc)
# The Rust toolchain is this machine's rustup home, mounted read-only (rustup is what
# install-deps.sh installs on a machine without Rust), and the crate cache is shared, so
# nothing is downloaded from crates.io that this machine already has.
#
# Needs root, debootstrap and access to deb.debian.org. Takes 20-40 minutes (the apt
# downloads and a full `cargo check`); runs at the lowest CPU priority.
# Exit status 0 when everything passed; otherwise the failing step's output is shown.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
# The rootfs: the argument, else $CAPLAB_DEBIAN_ROOTFS, else /var/tmp/caplab-debian12.
ROOTFS="${1:-${CAPLAB_DEBIAN_ROOTFS:-/var/tmp/caplab-debian12}}"
MIRROR="${CAPLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RUSTUP_HOME_HOST="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_HOME_HOST="${CARGO_HOME:-$HOME/.cargo}"

log() { echo "[fresh-debian-check $(date +%H:%M:%S)] $*" >&2; }
die() { echo "[fresh-debian-check] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
[ -d "$RUSTUP_HOME_HOST/toolchains" ] || die "no rustup toolchains in $RUSTUP_HOME_HOST (set RUSTUP_HOME)"

if [ ! -x "$ROOTFS/usr/bin/apt-get" ]; then
  log "debootstrap --variant=minbase bookworm $ROOTFS"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $ROOTFS.debootstrap.log"
fi
# A Debian 12 machine's usual sources (debootstrap writes only the main suite).
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
# Package scripts must not start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# This host's own CAs (a TLS-inspecting proxy, say) go in too: Debian's ca-certificates,
# installed by install-deps.sh, adds them to the system bundle, which npm is pointed at.
mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true

mounts=()
cleanup() {
  local i
  for (( i = ${#mounts[@]} - 1; i >= 0; i-- )); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind <host path> <path in rootfs> [ro]
  mkdir -p "$ROOTFS$2"
  mount --bind "$1" "$ROOTFS$2"
  mounts+=("$ROOTFS$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$ROOTFS$2"; fi
}
mkdir -p "$ROOTFS/proc"
mount -t proc proc "$ROOTFS/proc"; mounts+=("$ROOTFS/proc")
bind /dev /dev
bind "$RUSTUP_HOME_HOST" /opt/rustup ro
bind "$CARGO_HOME_HOST/registry" /opt/cargo/registry
mkdir -p "$ROOTFS/opt/cargo/bin"
cp -a "$CARGO_HOME_HOST/bin/." "$ROOTFS/opt/cargo/bin/"

log "cloning $ROOT (HEAD $(git -C "$ROOT" rev-parse --short HEAD)) into $ROOTFS/src/caplab"
rm -rf "$ROOTFS/src/caplab"
git clone -q "$ROOT" "$ROOTFS/src/caplab"

in_rootfs() { # in_rootfs <description> <bash script>
  log "$1"
  nice -n 19 chroot "$ROOTFS" env -i HOME=/root TERM=dumb \
    PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo CARGO_TARGET_DIR=/var/tmp/target \
    CARGO_TERM_COLOR=never NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt bash -euo pipefail -c "cd /src/caplab && $2" \
    || die "failed in the fresh rootfs: $1"
}
if [ -x "$ROOTFS/usr/sbin/update-ca-certificates" ]; then   # a rootfs reused from a run before
  chroot "$ROOTFS" update-ca-certificates >/dev/null
fi
in_rootfs "hack/install-deps.sh" "hack/install-deps.sh"
in_rootfs "cargo check --workspace --all-targets --locked" \
  "cargo check -q --workspace --all-targets --locked --offline"
in_rootfs "cargo check --target x86_64-unknown-linux-musl -p caplab-node -p caplab-operator" \
  "cargo check -q --locked --offline --target x86_64-unknown-linux-musl -p caplab-node -p caplab-operator"
log "a fresh Debian 12 builds the workspace with what install-deps.sh installed"
