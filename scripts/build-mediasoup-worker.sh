#!/usr/bin/env bash
# Build (or reuse a cached build of) the mediasoup C++ worker, offline.
#
# Usage: bash scripts/build-mediasoup-worker.sh
#   stdout: only the absolute path of the ready mediasoup-worker binary.
#   stderr: progress; the full build log is written next to the cache entry.
#
# mediasoup's own build downloads its dependencies (meson wraps) from the
# internet. We have none, so we build the npm package's worker sources against
# Debian 12 -dev packages instead:
#   apt-get install meson ninja-build pkg-config libuv1-dev libssl-dev \
#     libsrtp2-dev libusrsctp-dev libabsl-dev flatbuffers-compiler libflatbuffers-dev
#
# Env:
#   VERBATIM_CACHE_DIR   cache root (default: $HOME/.cache/verbatim)
#   VERBATIM_BUILD_JOBS  parallel compile jobs (default: nproc)
set -euo pipefail

log() { printf 'build-mediasoup-worker: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SUPPORT_DIR="$SCRIPT_DIR/mediasoup-worker"
MEDIASOUP_DIR="$REPO_ROOT/node_modules/mediasoup"

[[ -f "$MEDIASOUP_DIR/package.json" && -d "$MEDIASOUP_DIR/worker" ]] \
  || die "mediasoup is not installed in $MEDIASOUP_DIR (run npm ci first)"

# --- Cache key -------------------------------------------------------------
# Plain grep/sed rather than node/python so the cached fast path stays well
# under a second.
MS_VERSION="$(sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
  "$MEDIASOUP_DIR/package.json" | head -n1)"
[[ -n "$MS_VERSION" ]] || die "cannot read version from $MEDIASOUP_DIR/package.json"

# Hash of the build inputs we own: this script plus every support file
# (subproject stand-ins, srtp adapter, patch logic). Relative paths are hashed
# too, so renames count. Changing any of them yields a new cache entry.
inputs_hash() {
  {
    printf '%s\n' "build-mediasoup-worker.sh"
    sha256sum < "${BASH_SOURCE[0]}"
    (cd "$SUPPORT_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-12
}
INPUTS_HASH="$(inputs_hash)"

CACHE_ROOT="${VERBATIM_CACHE_DIR:-$HOME/.cache/verbatim}/mediasoup-worker"
ENTRY_DIR="$CACHE_ROOT/$MS_VERSION-$INPUTS_HASH"
BIN="$ENTRY_DIR/mediasoup-worker"

# Fast path: already built.
if [[ -x "$BIN" ]]; then
  printf '%s\n' "$BIN"
  exit 0
fi

# --- Lock --------------------------------------------------------------------
# Serialise concurrent runs for the same cache entry; the loser waits and then
# finds the binary the winner installed.
mkdir -p "$CACHE_ROOT"
LOCK_FILE="$CACHE_ROOT/.$MS_VERSION-$INPUTS_HASH.lock"
exec 9>"$LOCK_FILE"
if ! flock -n 9; then
  log "another build of $MS_VERSION-$INPUTS_HASH is running; waiting for it..."
  flock 9
fi
if [[ -x "$BIN" ]]; then
  printf '%s\n' "$BIN"
  exit 0
fi

# --- Preflight -----------------------------------------------------------------
APT_HINT="apt-get install meson ninja-build pkg-config libuv1-dev libssl-dev libsrtp2-dev libusrsctp-dev libabsl-dev flatbuffers-compiler libflatbuffers-dev"
for tool in meson ninja pkg-config flatc python3 c++ cc; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' ($APT_HINT)"
done
for mod in libuv openssl libsrtp2 usrsctp flatbuffers absl_flat_hash_map absl_strings absl_optional; do
  pkg-config --exists "$mod" || die "missing pkg-config module '$mod' ($APT_HINT)"
done

JOBS="${VERBATIM_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# Build in a scratch dir next to the cache (same filesystem, no tmpfs limits).
# It is removed on success and kept on failure for inspection.
BUILD_ROOT="$(mktemp -d "$CACHE_ROOT/.build-$MS_VERSION-$INPUTS_HASH.XXXXXX")"
BUILD_LOG="$CACHE_ROOT/$MS_VERSION-$INPUTS_HASH.build.log"
: > "$BUILD_LOG"
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "build FAILED (exit $rc); last lines of $BUILD_LOG:"
    tail -n 60 "$BUILD_LOG" >&2 || true
    log "build dir kept for inspection: $BUILD_ROOT"
  else
    rm -rf "$BUILD_ROOT"
  fi
}
trap on_exit EXIT

# Run a build step with its output going to the log file only.
step() {
  log "$1"
  shift
  printf '\n==> %s\n' "$*" >> "$BUILD_LOG"
  "$@" >> "$BUILD_LOG" 2>&1
}

SECONDS=0
log "building mediasoup-worker $MS_VERSION (inputs $INPUTS_HASH, -j$JOBS); log: $BUILD_LOG"

# --- Prepare sources -----------------------------------------------------------------
# Work on a copy: node_modules must never be modified.
WORKER="$BUILD_ROOT/worker"
step "copying worker sources" cp -a "$MEDIASOUP_DIR/worker" "$WORKER"
rm -rf "$WORKER/out" "$WORKER/build"  # drop any stale build output from the package

# Replace the download-only wraps with local subprojects that map to the
# Debian pkg-config dependencies. Deleting every .wrap guarantees nothing is
# fetched (liburing/wingetopt are disabled / Windows-only).
rm -f "$WORKER"/subprojects/*.wrap
rm -rf "$WORKER"/subprojects/packagecache
for sub in "$SUPPORT_DIR"/subprojects/*/; do
  name="$(basename "$sub")"
  rm -rf "${WORKER:?}/subprojects/$name"
  cp -a "$sub" "$WORKER/subprojects/$name"
done

# Source fixes (meson version, DTLS/kTLS crash); fails loudly if a pattern moved.
step "patching sources" python3 "$SUPPORT_DIR/patch-sources.py" "$WORKER"

# --- Build -------------------------------------------------------------------------------
step "meson setup" meson setup "$WORKER/build" "$WORKER" \
  --buildtype=release \
  --wrap-mode=nodownload \
  -Dms_disable_liburing=true

# The generated FlatBuffers headers (fbs/FBS) are not a declared dependency of
# the worker target, so generate them first or compilation races/fails.
step "generating FlatBuffers headers" ninja -C "$WORKER/build" -j "$JOBS" fbs/FBS
step "compiling mediasoup-worker (several minutes)" ninja -C "$WORKER/build" -j "$JOBS" mediasoup-worker

BUILT="$WORKER/build/mediasoup-worker"
[[ -x "$BUILT" ]] || die "ninja finished but $BUILT is missing"

# --- Install atomically --------------------------------------------------------------------
mkdir -p "$ENTRY_DIR"
TMP_BIN="$ENTRY_DIR/.mediasoup-worker.tmp.$$"
cp "$BUILT" "$TMP_BIN"
chmod 0755 "$TMP_BIN"
mv -f "$TMP_BIN" "$BIN"
cp "$BUILD_LOG" "$ENTRY_DIR/build.log" 2>/dev/null || true

log "done in ${SECONDS}s: $BIN"
printf '%s\n' "$BIN"
