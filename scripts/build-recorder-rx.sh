#!/usr/bin/env bash
# Build (or reuse a cached build of) recorder-rx, the recorder's native receive path
# (services/recorder/native: C, epoll + recvmmsg, libdeflate CRC-32, OpenSSL SHA-256, libsrtp2 for the SRTP tap), offline.
#
# Usage: bash scripts/build-recorder-rx.sh [--print-entry]
#   stdout: only the absolute path of the ready recorder-rx binary.
#   stderr: progress; the full build log is written next to the cache entry.
#
# Needs gcc, libdeflate-dev, libssl-dev and libsrtp2-dev (Debian: apt-get install gcc libdeflate-dev libssl-dev libsrtp2-dev).
# Cache key, lock, log and install: scripts/lib/native-build.sh (its env too).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/native-build.sh
source "$SCRIPT_DIR/lib/native-build.sh"
nb_init recorder-rx "$@"

REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SRC_DIR="$REPO_ROOT/services/recorder/native"

INPUTS_HASH="$(nb_inputs_hash "${BASH_SOURCE[0]}" "$SRC_DIR" "$(uname -m)")"
nb_claim_entry recorder-rx "$INPUTS_HASH" recorder-rx

nb_require_tools "apt-get install gcc libdeflate-dev libssl-dev libsrtp2-dev" cc
nb_start_build "recorder-rx (inputs $INPUTS_HASH)"

# OPENSSL_API_COMPAT: the one-shot SHA256_* calls, without OpenSSL 3's deprecation noise.
nb_step "compiling recorder-rx" cc -O2 -g -Wall -Wextra -Werror -std=gnu11 -DOPENSSL_API_COMPAT=0x10100000L \
  -o "$NB_BUILD_ROOT/recorder-rx" "$SRC_DIR"/*.c -lsrtp2 -ldeflate -lcrypto -lpthread
# Smoke test: it must answer "ready" and leave when its input ends.
nb_step "smoke test (ready)" bash -c "'$NB_BUILD_ROOT/recorder-rx' < /dev/null | grep -q '\"type\":\"ready\"'"

nb_install "$NB_BUILD_ROOT/recorder-rx"
