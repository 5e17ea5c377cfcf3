#!/usr/bin/env bash
# build-images.sh [node|operator|cli]... — build the static musl binaries and the
# FROM-scratch images caplab/node:$VERSION, caplab/operator:$VERSION and caplab/cli:$VERSION
# (default: all three; the operator runs experiments in the cli image).
# VERSION is [workspace.package] version from the workspace Cargo.toml (override: VERSION=...).
# The docker build context is a temp dir holding only the binary (target/ is huge).
# Prints the built image references on stdout, one per line.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK_DIR/.." && pwd)"
TARGET=x86_64-unknown-linux-musl

log() { echo "[build-images] $*" >&2; }

components=("$@")
[ "${#components[@]}" -gt 0 ] || components=(node operator cli)

# The binary each component's image holds (the cli crate's binary is `caplab`).
binary() {
  case "$1" in
    cli) echo caplab ;;
    *) echo "caplab-$1" ;;
  esac
}

if [ -z "${VERSION:-}" ]; then
  VERSION="$(awk '
    /^\[/ { in_pkg = ($0 ~ /^\[workspace\.package\][[:space:]]*$/) ; next }
    in_pkg && $1 == "version" { gsub(/^[^=]*=[[:space:]]*"|"[[:space:]]*$/, ""); print; exit }
  ' "$ROOT/Cargo.toml")"
fi
[ -n "$VERSION" ] || { log "ERROR: no [workspace.package] version in $ROOT/Cargo.toml"; exit 1; }

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >/dev/null
fi

pkgs=()
for c in "${components[@]}"; do
  case "$c" in
    node|operator|cli) pkgs+=(-p "caplab-$c") ;;
    *) log "ERROR: unknown component '$c' (expected node, operator or cli)"; exit 2 ;;
  esac
done

log "cargo build --release --target $TARGET ${pkgs[*]}"
(cd "$ROOT" && cargo build --release --target "$TARGET" "${pkgs[@]}" >&2)

TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
  | jq -r .target_directory)"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
for c in "${components[@]}"; do
  bin="$TARGET_DIR/$TARGET/release/$(binary "$c")"
  [ -x "$bin" ] || { log "ERROR: $bin not built"; exit 1; }
  rel="target/$TARGET/release/$(binary "$c")"
  rm -rf "${ctx:?}"/*
  mkdir -p "$ctx/$(dirname "$rel")"
  cp "$bin" "$ctx/$rel"
  image="caplab/$c:$VERSION"
  log "docker build $image"
  docker build -q -f "$ROOT/images/$c.Dockerfile" --build-arg "BINARY=$rel" -t "$image" "$ctx" >/dev/null
  echo "$image"
done
