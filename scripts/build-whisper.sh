#!/usr/bin/env bash
# Build (or reuse a cached build of) whisper-cli from the whisper.cpp sources that
# the nodejs-whisper npm package ships, offline.
#
# Usage: bash scripts/build-whisper.sh
#   stdout: only the absolute path of the ready whisper-cli binary.
#   stderr: progress; the full build log is written next to the cache entry.
#
# Needs cmake, make, g++ (Debian: apt-get install cmake make g++). No downloads:
# curl, SDL2, ffmpeg, CUDA, BLAS, KleidiAI and every other fetch-capable option are
# off. Static libraries, so the binary is self-contained (libc/libstdc++ aside).
#
# Env:
#   VERBATIM_CACHE_DIR   cache root (default: $HOME/.cache/verbatim)
#   VERBATIM_BUILD_JOBS  parallel compile jobs (default: 2)
set -euo pipefail

log() { printf 'build-whisper: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SUPPORT_DIR="$SCRIPT_DIR/whisper"
PKG_DIR="$REPO_ROOT/node_modules/nodejs-whisper"
SRC_DIR="$PKG_DIR/cpp/whisper.cpp"

[[ -f "$PKG_DIR/package.json" && -f "$SRC_DIR/CMakeLists.txt" ]] \
  || die "nodejs-whisper (with cpp/whisper.cpp) is not installed in $PKG_DIR (run npm install first)"

# --- Cache key -------------------------------------------------------------
# grep/sed only, so the cached fast path stays well under a second.
PKG_VERSION="$(sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
  "$PKG_DIR/package.json" | head -n1)"
[[ -n "$PKG_VERSION" ]] || die "cannot read version from $PKG_DIR/package.json"

# x86 SIMD level: AVX2/FMA/F16C (x86-64-v3, every server CPU since ~2013) when the
# host has it, else a plain build. Not -march=native, so a cache copied to another
# host of the same class still runs. The level is part of the key.
isa_level() {
  case "$(uname -m)" in
    x86_64|amd64)
      local f
      f="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
      for x in avx avx2 fma f16c bmi2 sse4_2; do
        [[ " $f " == *" $x "* ]] || { echo x86-base; return; }
      done
      echo x86-v3 ;;
    *) uname -m ;;
  esac
}
ISA="$(isa_level)"

inputs_hash() {
  {
    printf '%s\n' "build-whisper.sh" "$ISA"
    sha256sum < "${BASH_SOURCE[0]}"
    if [[ -d "$SUPPORT_DIR" ]]; then
      (cd "$SUPPORT_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    fi
  } | sha256sum | cut -c1-12
}
INPUTS_HASH="$(inputs_hash)"

CACHE_ROOT="${VERBATIM_CACHE_DIR:-$HOME/.cache/verbatim}/whisper"
KEY="$PKG_VERSION-$INPUTS_HASH"
ENTRY_DIR="$CACHE_ROOT/$KEY"
BIN="$ENTRY_DIR/whisper-cli"

if [[ -x "$BIN" ]]; then
  printf '%s\n' "$BIN"
  exit 0
fi

# --- Lock ------------------------------------------------------------------
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.$KEY.lock"
if ! flock -n 9; then
  log "another build of $KEY is running; waiting for it..."
  flock 9
fi
if [[ -x "$BIN" ]]; then
  printf '%s\n' "$BIN"
  exit 0
fi

# --- Preflight -------------------------------------------------------------
for tool in cmake make c++ cc; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' (apt-get install cmake make g++)"
done

JOBS="${VERBATIM_BUILD_JOBS:-2}"
BUILD_ROOT="$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")"
BUILD_LOG="$CACHE_ROOT/$KEY.build.log"
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

step() {
  log "$1"
  shift
  printf '\n==> %s\n' "$*" >> "$BUILD_LOG"
  "$@" >> "$BUILD_LOG" 2>&1
}

SECONDS=0
log "building whisper-cli (nodejs-whisper $PKG_VERSION, inputs $INPUTS_HASH, $ISA, -j$JOBS); log: $BUILD_LOG"

# Work on a copy: node_modules must never be modified (and may hold stale builds).
SRC="$BUILD_ROOT/whisper.cpp"
step "copying whisper.cpp sources" cp -a "$SRC_DIR" "$SRC"
rm -rf "$SRC/build" "$SRC"/examples/*.node

ISA_FLAGS=()
if [[ "$ISA" == x86-base ]]; then
  ISA_FLAGS=(-DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF)
fi

# OpenMP off: ggml's own thread pool is used instead, honours -t exactly, and
# does not spin idle cores on a shared host.
step "cmake configure" cmake -S "$SRC" -B "$SRC/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DWHISPER_BUILD_TESTS=OFF \
  -DWHISPER_BUILD_EXAMPLES=ON \
  -DWHISPER_BUILD_SERVER=OFF \
  -DWHISPER_CURL=OFF \
  -DWHISPER_SDL2=OFF \
  -DWHISPER_COMMON_FFMPEG=OFF \
  -DWHISPER_COREML=OFF \
  -DWHISPER_OPENVINO=OFF \
  -DGGML_NATIVE=OFF \
  -DGGML_CCACHE=OFF \
  -DGGML_OPENMP=OFF \
  -DGGML_BLAS=OFF \
  -DGGML_CUDA=OFF \
  -DGGML_VULKAN=OFF \
  -DGGML_METAL=OFF \
  -DGGML_CPU_KLEIDIAI=OFF \
  -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
  "${ISA_FLAGS[@]}"

step "compiling whisper-cli (about a minute or two)" cmake --build "$SRC/build" --target whisper-cli -j "$JOBS"

BUILT="$SRC/build/bin/whisper-cli"
[[ -x "$BUILT" ]] || die "build finished but $BUILT is missing"
step "smoke test (--help)" "$BUILT" --help

# --- Install atomically ----------------------------------------------------
mkdir -p "$ENTRY_DIR"
TMP_BIN="$ENTRY_DIR/.whisper-cli.tmp.$$"
cp "$BUILT" "$TMP_BIN"
chmod 0755 "$TMP_BIN"
mv -f "$TMP_BIN" "$BIN"
cp "$BUILD_LOG" "$ENTRY_DIR/build.log" 2>/dev/null || true

log "done in ${SECONDS}s: $BIN"
printf '%s\n' "$BIN"
