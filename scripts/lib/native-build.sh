# shellcheck shell=bash
# The skeleton every native build shares (scripts/build-*.sh source this file): cache key,
# cache entry under VERBATIM_CACHE_DIR, lock, build log, progress, atomic install.
# A build script keeps only its recipe: preflight, source preparation, compile commands.
#
# Contract of a build script using it: stdout carries only the absolute path of the ready
# binary; everything else goes to stderr, and the full build output to a log file next to
# the cache entry. With --print-entry it prints the entry directory it would use and exits.
#
# Env:
#   VERBATIM_CACHE_DIR      cache root (default: $HOME/.cache/verbatim)
#   VERBATIM_PROGRESS       bar | lines: how nb_step_progress shows progress (default: bar
#                           when stderr is a terminal, else lines)
#   VERBATIM_PROGRESS_EVERY seconds between two progress lines in lines mode (default: 10)

NB_NAME=native-build
NB_PRINT_ENTRY=0

nb_log() { printf '[setup] %s: %s\n' "$NB_NAME" "$*" >&2; }
nb_die() { nb_log "ERROR: $*"; exit 1; }

# nb_init NAME "$@": names the build in every log line and reads the script's arguments.
nb_init() {
  NB_NAME=$1
  shift
  case "${1:-}" in
    '') ;;
    --print-entry) NB_PRINT_ENTRY=1 ;;
    *) nb_die "unknown argument '$1' (the only one is --print-entry)" ;;
  esac
}

# nb_package_version PACKAGE_JSON: the "version" field. sed rather than node or python so
# the cached fast path stays well under a second.
nb_package_version() {
  local version
  version="$(sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n1)"
  [[ -n "$version" ]] || nb_die "cannot read version from $1"
  printf '%s\n' "$version"
}

# --- Cache key ---------------------------------------------------------------------------
# A rewritten recipe that runs exactly the build commands of the script it replaced may
# claim that script's identity here, so that binaries already cached stay valid (the
# mediasoup worker takes ~10 min to build). Each line: "<sha256 of the recipe now>
# <sha256 of the script it replaced>". An entry only matches the recipe byte for byte:
# any later edit of the recipe yields a new key, as before (and the entry can go).
NB_RECIPE_ALIASES=(
  # build-mediasoup-worker.sh and build-whisper.sh as they were before this library
  "d304ef32ed73c0112dc15ff484f7456eba85d82509220f31fc56fe901deb10ec a2139165c1ba90bdbb82ec762c590473b1b659a88acb408d8f2a4c9bf79aa577"
  "0e46dc30184511fee4ebb42e0e994398aa5dc5e0786c0bf3a8d1953a6c2b8e2d dd606f2570c74ba32a977c3d86afeb86c36d6dbd0082af43aeab51ed5d0ef106"
)
# This file is not part of the key: it runs the recipe but does not shape the binary. A
# change here that does (say, stripping on install) must set NB_KEY_EPOCH (e.g. to 2),
# which then enters every key and so rebuilds every tool once.
NB_KEY_EPOCH=

# nb__recipe_sum RECIPE: the recipe's sha256 line as `sha256sum < RECIPE` prints it, or
# the line of the script it replaced (NB_RECIPE_ALIASES).
nb__recipe_sum() {
  local sum alias
  sum="$(sha256sum < "$1")"
  sum="${sum%% *}"
  for alias in "${NB_RECIPE_ALIASES[@]}"; do
    if [[ "${alias%% *}" == "$sum" ]]; then
      sum="${alias##* }"
      break
    fi
  done
  printf '%s  -\n' "$sum"
}

# nb_inputs_hash RECIPE SUPPORT_DIR [KEY_LINE...]: 12 hex digits over the build inputs we
# own: the recipe's name and content, extra key lines (e.g. the CPU level), and every file
# under SUPPORT_DIR with its relative path (renames count). Computed exactly as the
# pre-library scripts did, so their cache entries keep their names.
nb_inputs_hash() {
  local recipe=$1 support=$2
  shift 2
  {
    printf '%s\n' "${recipe##*/}" "$@"
    [[ -z "$NB_KEY_EPOCH" ]] || printf 'epoch %s\n' "$NB_KEY_EPOCH"
    nb__recipe_sum "$recipe"
    if [[ -d "$support" ]]; then
      (cd "$support" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    fi
  } | sha256sum | cut -c1-12
}

# --- Cache entry and lock ----------------------------------------------------------------
# nb_claim_entry TOOL KEY BINARY: sets NB_CACHE_ROOT, NB_KEY, NB_ENTRY_DIR and NB_BIN. When
# the binary is cached it prints its path and exits 0 (the fast path). Otherwise it takes
# the entry's lock, so concurrent runs build once: the loser waits, then finds the binary.
nb_claim_entry() {
  NB_CACHE_ROOT="${VERBATIM_CACHE_DIR:-$HOME/.cache/verbatim}/$1"
  NB_KEY=$2
  NB_ENTRY_DIR="$NB_CACHE_ROOT/$NB_KEY"
  NB_BIN="$NB_ENTRY_DIR/$3"
  if (( NB_PRINT_ENTRY )); then
    printf '%s\n' "$NB_ENTRY_DIR"
    exit 0
  fi
  nb__exit_if_cached
  mkdir -p "$NB_CACHE_ROOT"
  exec 9>"$NB_CACHE_ROOT/.$NB_KEY.lock"
  if ! flock -n 9; then
    nb_log "another build of $NB_KEY is running; waiting for it..."
    flock 9
  fi
  nb__exit_if_cached
}

nb__exit_if_cached() {
  if [[ -x "$NB_BIN" ]]; then
    printf '%s\n' "$NB_BIN"
    exit 0
  fi
}

# nb_require_tools HINT TOOL...: dies naming the first missing tool and what installs it.
nb_require_tools() {
  local hint=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || nb_die "missing tool '$tool' ($hint)"
  done
}

# --- Build ---------------------------------------------------------------------------------
# nb_start_build DESCRIPTION: a scratch dir NB_BUILD_ROOT next to the cache (same
# filesystem, no tmpfs limits), removed on success and kept on failure, and an empty log
# NB_BUILD_LOG whose tail is printed if the build fails.
nb_start_build() {
  NB_BUILD_ROOT="$(mktemp -d "$NB_CACHE_ROOT/.build-$NB_KEY.XXXXXX")"
  NB_BUILD_LOG="$NB_CACHE_ROOT/$NB_KEY.build.log"
  : > "$NB_BUILD_LOG"
  trap nb__on_exit EXIT
  SECONDS=0
  nb_log "building $1; log: $NB_BUILD_LOG"
}

nb__on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    nb_log "build FAILED (exit $rc); last lines of $NB_BUILD_LOG:"
    tail -n 60 "$NB_BUILD_LOG" >&2 || true
    nb_log "build dir kept for inspection: $NB_BUILD_ROOT"
  else
    rm -rf "$NB_BUILD_ROOT"
  fi
}

# nb_step LABEL COMMAND...: runs COMMAND with its output going to the log only.
nb_step() {
  nb_log "$1"
  shift
  printf '\n==> %s\n' "$*" >> "$NB_BUILD_LOG"
  "$@" >> "$NB_BUILD_LOG" 2>&1
}

# nb_step_progress LABEL COMMAND...: nb_step for a long compile whose output has ninja's
# "[n/m]" or make's "[ nn%]" status lines: shows how far it is (nb_progress).
nb_step_progress() {
  nb_log "$1"
  shift
  printf '\n==> %s\n' "$*" >> "$NB_BUILD_LOG"
  # pipefail (set by every build script) keeps the command's exit status.
  "$@" 2>&1 | nb_progress >> "$NB_BUILD_LOG"
}

# nb_install BUILT: copies the binary into the cache entry atomically (a half-written file
# is never executable under its final name), keeps the log with it, prints its path.
nb_install() {
  local built=$1 name tmp
  name="$(basename "$NB_BIN")"
  [[ -x "$built" ]] || nb_die "the build finished but $built is missing"
  mkdir -p "$NB_ENTRY_DIR"
  tmp="$NB_ENTRY_DIR/.$name.tmp.$$"
  cp "$built" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$NB_BIN"
  cp "$NB_BUILD_LOG" "$NB_ENTRY_DIR/build.log" 2>/dev/null || true
  nb_log "done in ${SECONDS}s: $NB_BIN"
  printf '%s\n' "$NB_BIN"
}

# --- Progress ------------------------------------------------------------------------------
# nb_progress: a filter. Copies stdin to stdout unchanged (the log) and reports progress on
# stderr from the status lines it sees: on a terminal one bar redrawn in place, otherwise a
# plain line at most every VERBATIM_PROGRESS_EVERY seconds, e.g.
#   [setup] mediasoup-worker: 37% (212/573), ~6 min left
nb_progress() {
  local mode=${VERBATIM_PROGRESS:-} every=${VERBATIM_PROGRESS_EVERY:-10}
  local line finished total counts start last width=0 drawn=0
  if [[ -z "$mode" ]]; then
    if [[ -t 2 ]]; then mode=bar; else mode=lines; fi
  fi
  if [[ "$mode" == bar ]]; then nb__bar_width; width=$NB_BAR_WIDTH; fi
  nb__now
  start=$NB_NOW
  last=$NB_NOW
  while IFS= read -r line || [[ -n "$line" ]]; do
    printf '%s\n' "$line"
    if [[ "$line" =~ ^\[([0-9]+)/([0-9]+)\]\  ]]; then  # ninja: edges finished/total
      finished=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]} counts=1
    elif [[ "$line" =~ ^\[\ *([0-9]+)%\]\  ]]; then  # make (CMake): a percentage only
      finished=${BASH_REMATCH[1]} total=100 counts=0
    else
      continue
    fi
    nb__now
    nb_progress_text "$finished" "$total" $(( NB_NOW - start )) "$counts"
    if [[ "$mode" == bar ]]; then
      nb_progress_bar "$finished" "$total" "$width"
      printf '\r[setup] %s: %s%s\033[K' "$NB_NAME" "$NB_BAR" "$NB_PROGRESS_TEXT" >&2
      drawn=1
    elif (( NB_NOW - last >= every )); then
      nb_log "$NB_PROGRESS_TEXT"
      last=$NB_NOW
    fi
  done
  if (( drawn )); then printf '\n' >&2; fi
}

# The clock, in whole seconds; a function so that tests can drive it.
nb__now() { NB_NOW=$EPOCHSECONDS; }

# NB_BAR_WIDTH: as many cells (up to 30) as leave room on one terminal line for the prefix
# and the longest text, so that a redraw never wraps; 0 (no bar) on a very narrow one.
nb__bar_width() {
  local cols=${COLUMNS:-} size
  if [[ -z "$cols" ]]; then
    size="$(stty size 0<&2 2>/dev/null || true)"
    cols=${size#* }
  fi
  # Unknown, or 0 from a terminal that has no size (a pty nobody sized): assume 80.
  [[ "$cols" =~ ^[0-9]+$ ]] && (( cols > 0 )) || cols=80
  # 14: "[setup] ", ": ", "[", "] " and a spare column; 36: "99% (9999/9999), under a minute left".
  NB_BAR_WIDTH=$(( cols - ${#NB_NAME} - 14 - 36 ))
  if (( NB_BAR_WIDTH > 30 )); then NB_BAR_WIDTH=30; fi
  if (( NB_BAR_WIDTH < 5 )); then NB_BAR_WIDTH=0; fi
}

# nb_progress_text FINISHED TOTAL ELAPSED_S [COUNTS=1]: NB_PROGRESS_TEXT, e.g.
# "37% (212/573), ~6 min left". Whole percents rounded down, so 100% means done. The
# estimate assumes the rest goes at the pace so far; it is left out for the first 5 s,
# when that pace means little.
nb_progress_text() {
  local finished=$1 total=$2 elapsed=$3 counts=${4:-1} left
  if (( total > 0 )); then
    NB_PROGRESS_TEXT="$(( finished * 100 / total ))%"
  else
    NB_PROGRESS_TEXT="0%"
  fi
  if (( counts )); then NB_PROGRESS_TEXT+=" ($finished/$total)"; fi
  if (( finished > 0 && finished < total && elapsed >= 5 )); then
    left=$(( (elapsed * (total - finished) + finished / 2) / finished ))
    if (( left < 60 )); then
      NB_PROGRESS_TEXT+=", under a minute left"
    else
      NB_PROGRESS_TEXT+=", ~$(( (left + 30) / 60 )) min left"
    fi
  fi
}

# nb_progress_bar FINISHED TOTAL WIDTH: NB_BAR, e.g. "[#####.....] " for WIDTH 10; empty
# for WIDTH 0.
nb_progress_bar() {
  local width=$3 filled=0 cells
  NB_BAR=
  if (( width == 0 )); then return; fi
  if (( $2 > 0 )); then filled=$(( $1 * width / $2 )); fi
  if (( filled > width )); then filled=$width; fi
  printf -v cells '%*s' "$filled" ''
  NB_BAR="[${cells// /#}"
  printf -v cells '%*s' $(( width - filled )) ''
  NB_BAR+="${cells// /.}] "
}
