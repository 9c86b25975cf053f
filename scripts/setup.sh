#!/usr/bin/env bash
# One idempotent set-up behind `npm start`, `npm test` and `npm run bench`:
#   1. Debian packages (installed when root, else the exact apt-get line is printed)
#   2. npm install (locked) when node_modules is missing or older than package-lock.json
#   3. native builds cached outside node_modules (mediasoup worker, whisper-cli, recorder-rx), recorded in
#      .cache/toolchain.json for the services to read.
# A second run with nothing to do takes about a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(
  # mediasoup worker, built offline from the npm tarball
  meson ninja-build pkg-config g++ make python3 libuv1-dev libssl-dev libsrtp2-dev libusrsctp-dev libabsl-dev
  flatbuffers-compiler libflatbuffers-dev
  # whisper-cli, built offline from the whisper.cpp sources in nodejs-whisper
  cmake
  # recorder-rx, the recorder's native receive path (services/recorder/native)
  gcc libdeflate-dev libssl-dev libsrtp2-dev
  # a packet capture in the SRTP tap test (no clear RTP on the wire)
  tcpdump
  # media tools, browser for tests and the demo, embedded queue backend and database
  ffmpeg chromium espeak-ng sox redis-server postgresql
  # a real S3 server that enforces Object Lock (Ceph radosgw on a one-node cluster), for the WORM tests
  radosgw ceph-mon ceph-osd
  # a TURN server for the relay-only participant test (the tests start their own on 127.0.0.1)
  coturn
)

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    bash -c "$cmd" >&2
    # Only the binaries are needed: a system TURN server on port 3478 is not ours to start.
    if [[ " ${missing[*]} " == *" coturn "* ]] && [ -d /run/systemd/system ]; then
      log "coturn: disabling the system service the package enabled (the tests run their own)"
      systemctl disable --now coturn >&2 || true
    fi
  else
    log "missing Debian packages: ${missing[*]}"
    log "run as root:  sudo sh -c '$cmd'"
    exit 1
  fi
fi

# The mediasoup postinstall would try to download a prebuilt worker (no internet
# here) and then build one with downloaded subprojects; pointing it at our own
# binary makes it skip both.
worker_bin_hint="${VERBATIM_CACHE_DIR:-$HOME/.cache/verbatim}/mediasoup-worker/pending"
lock_sum=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
stamp=node_modules/.verbatim-install-stamp
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  log "installing npm dependencies (npm install from package-lock.json)"
  # Not `npm ci`: it insists on every platform's optional binaries being resolvable
  # (msgpackr-extract for darwin/win32), and registries that mirror only Linux
  # packages lack them. `npm install` follows the same lockfile and skips them.
  MEDIASOUP_WORKER_BIN="${MEDIASOUP_WORKER_BIN:-$worker_bin_hint}" npm install --no-audit --no-fund >&2
  cat package.json package-lock.json | sha256sum | cut -d' ' -f1 > "$stamp"
fi

worker_bin=$(bash scripts/build-mediasoup-worker.sh | tail -n 1)
[ -x "$worker_bin" ] || { log "mediasoup worker build did not produce a binary"; exit 1; }

whisper_bin=$(bash scripts/build-whisper.sh | tail -n 1)
[ -x "$whisper_bin" ] || { log "whisper-cli build did not produce a binary"; exit 1; }

rx_bin=$(bash scripts/build-recorder-rx.sh | tail -n 1)
[ -x "$rx_bin" ] || { log "recorder-rx build did not produce a binary"; exit 1; }

mkdir -p .cache
tmp=$(mktemp .cache/toolchain.json.XXXXXX)
printf '{\n  "mediasoupWorkerBin": "%s",\n  "whisperCliBin": "%s",\n  "recorderRxBin": "%s"\n}\n' "$worker_bin" "$whisper_bin" "$rx_bin" > "$tmp"
mv "$tmp" .cache/toolchain.json
