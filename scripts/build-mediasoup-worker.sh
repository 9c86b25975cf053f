#!/usr/bin/env bash
# Build (or reuse a cached build of) the mediasoup C++ worker, offline.
#
# Usage: bash scripts/build-mediasoup-worker.sh [--print-entry]
#   stdout: only the absolute path of the ready mediasoup-worker binary.
#   stderr: progress; the full build log is written next to the cache entry.
#
# mediasoup's own build downloads its dependencies (meson wraps) from the
# internet. We have none, so we build the npm package's worker sources against
# Debian 12 -dev packages instead:
#   apt-get install meson ninja-build pkg-config libuv1-dev libssl-dev \
#     libsrtp2-dev libusrsctp-dev libabsl-dev flatbuffers-compiler libflatbuffers-dev
#
# Cache key, lock, log, progress and install: scripts/lib/native-build.sh (its env too).
# Env:
#   VERBATIM_BUILD_JOBS  parallel compile jobs (default: nproc)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/native-build.sh
source "$SCRIPT_DIR/lib/native-build.sh"
nb_init mediasoup-worker "$@"

REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SUPPORT_DIR="$SCRIPT_DIR/mediasoup-worker"
MEDIASOUP_DIR="$REPO_ROOT/node_modules/mediasoup"

[[ -f "$MEDIASOUP_DIR/package.json" && -d "$MEDIASOUP_DIR/worker" ]] \
  || nb_die "mediasoup is not installed in $MEDIASOUP_DIR (run npm ci first)"

# The key covers this recipe and every support file (subproject stand-ins, srtp
# adapter, patch logic): changing any of them yields a new cache entry.
MS_VERSION="$(nb_package_version "$MEDIASOUP_DIR/package.json")"
INPUTS_HASH="$(nb_inputs_hash "${BASH_SOURCE[0]}" "$SUPPORT_DIR")"
nb_claim_entry mediasoup-worker "$MS_VERSION-$INPUTS_HASH" mediasoup-worker

# --- Preflight -----------------------------------------------------------------
APT_HINT="apt-get install meson ninja-build pkg-config libuv1-dev libssl-dev libsrtp2-dev libusrsctp-dev libabsl-dev flatbuffers-compiler libflatbuffers-dev"
nb_require_tools "$APT_HINT" meson ninja pkg-config flatc python3 c++ cc
for mod in libuv openssl libsrtp2 usrsctp flatbuffers absl_flat_hash_map absl_strings absl_optional; do
  pkg-config --exists "$mod" || nb_die "missing pkg-config module '$mod' ($APT_HINT)"
done

JOBS="${VERBATIM_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
nb_start_build "mediasoup-worker $MS_VERSION (inputs $INPUTS_HASH, -j$JOBS)"

# --- Prepare sources -----------------------------------------------------------
# Work on a copy: node_modules must never be modified.
WORKER="$NB_BUILD_ROOT/worker"
nb_step "copying worker sources" cp -a "$MEDIASOUP_DIR/worker" "$WORKER"
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
nb_step "patching sources" python3 "$SUPPORT_DIR/patch-sources.py" "$WORKER"

# --- Build ---------------------------------------------------------------------
nb_step "meson setup" meson setup "$WORKER/build" "$WORKER" \
  --buildtype=release \
  --wrap-mode=nodownload \
  -Dms_disable_liburing=true

# The generated FlatBuffers headers (fbs/FBS) are not a declared dependency of
# the worker target, so generate them first or compilation races/fails.
nb_step "generating FlatBuffers headers" ninja -C "$WORKER/build" -j "$JOBS" fbs/FBS
nb_step_progress "compiling mediasoup-worker (about 10 min on 2 cores, once)" \
  ninja -C "$WORKER/build" -j "$JOBS" mediasoup-worker

nb_install "$WORKER/build/mediasoup-worker"
