#!/usr/bin/env bash
# Build (or reuse a cached build of) whisper-cli from the whisper.cpp sources that
# the nodejs-whisper npm package ships, offline.
#
# Usage: bash scripts/build-whisper.sh [--print-entry]
#   stdout: only the absolute path of the ready whisper-cli binary.
#   stderr: progress; the full build log is written next to the cache entry.
#
# Needs cmake, make, g++ (Debian: apt-get install cmake make g++). No downloads:
# curl, SDL2, ffmpeg, CUDA, BLAS, KleidiAI and every other fetch-capable option are
# off. Static libraries, so the binary is self-contained (libc/libstdc++ aside).
#
# Cache key, lock, log, progress and install: scripts/lib/native-build.sh (its env too).
# Env:
#   VERBATIM_BUILD_JOBS  parallel compile jobs (default: 2)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/native-build.sh
source "$SCRIPT_DIR/lib/native-build.sh"
nb_init whisper-cli "$@"

REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SUPPORT_DIR="$SCRIPT_DIR/whisper"
PKG_DIR="$REPO_ROOT/node_modules/nodejs-whisper"
SRC_DIR="$PKG_DIR/cpp/whisper.cpp"

[[ -f "$PKG_DIR/package.json" && -f "$SRC_DIR/CMakeLists.txt" ]] \
  || nb_die "nodejs-whisper (with cpp/whisper.cpp) is not installed in $PKG_DIR (run npm install first)"

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

PKG_VERSION="$(nb_package_version "$PKG_DIR/package.json")"
INPUTS_HASH="$(nb_inputs_hash "${BASH_SOURCE[0]}" "$SUPPORT_DIR" "$ISA")"
nb_claim_entry whisper "$PKG_VERSION-$INPUTS_HASH" whisper-cli

nb_require_tools "apt-get install cmake make g++" cmake make c++ cc

JOBS="${VERBATIM_BUILD_JOBS:-2}"
nb_start_build "whisper-cli (nodejs-whisper $PKG_VERSION, inputs $INPUTS_HASH, $ISA, -j$JOBS)"

# Work on a copy: node_modules must never be modified (and may hold stale builds).
SRC="$NB_BUILD_ROOT/whisper.cpp"
nb_step "copying whisper.cpp sources" cp -a "$SRC_DIR" "$SRC"
rm -rf "$SRC/build" "$SRC"/examples/*.node

ISA_FLAGS=()
if [[ "$ISA" == x86-base ]]; then
  ISA_FLAGS=(-DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF)
fi

# OpenMP off: ggml's own thread pool is used instead, honours -t exactly, and
# does not spin idle cores on a shared host.
nb_step "cmake configure" cmake -S "$SRC" -B "$SRC/build" \
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

nb_step_progress "compiling whisper-cli (about 2 min on 2 cores, once)" \
  cmake --build "$SRC/build" --target whisper-cli -j "$JOBS"

BUILT="$SRC/build/bin/whisper-cli"
[[ -x "$BUILT" ]] || nb_die "build finished but $BUILT is missing"
nb_step "smoke test (--help)" "$BUILT" --help

nb_install "$BUILT"
