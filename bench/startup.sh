#!/usr/bin/env bash
# Start-up benchmark for Warden (issue 2, "Speed").
#
# Compares, in ONE hyperfine run, the start-up cost of `/bin/true` and
# `python3 -c pass`:
#   bare                      - the program alone
#   unshare                   - unshare --user --map-root-user --mount --pid --fork --net
#                               (the floor for creating namespaces, no root change, no limits)
#   bwrap                     - bubblewrap with a setup equivalent to warden's jail
#                               (all namespaces, minimal root with the same /etc entries,
#                               hostname, /proc, /dev, tmpfs /tmp,
#                               cleared environment; no seccomp, no resource limits)
#   bwrap-noetc               - the same without /etc (cheaper for bwrap; what earlier
#                               runs compared with)
#   warden                    - `warden run --` with its default full isolation
#                               (namespaces, pivot_root, seccomp, cgroup limits)
#
# Usage (from the repository root):   bench/startup.sh
# Tunables (environment):  WARMUP=20 RUNS=200 OUT=bench/out  SKIP_BUILD=1  BENCH_DIR=/tmp
#   ROUNDS=N  run the whole hyperfine invocation N times (RUNS each) and pool
#             the rounds, so that load that changes during a run hits every
#             command alike (each round's ratio is printed too)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WARMUP="${WARMUP:-20}"
RUNS="${RUNS:-200}"
ROUNDS="${ROUNDS:-1}"
OUT="${OUT:-$ROOT/bench/out}"
BENCH_DIR="${BENCH_DIR:-/tmp}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

log() { printf '==> %s\n' "$*" >&2; }

# --- 1. tools -----------------------------------------------------------------
need=()
command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
command -v bwrap     >/dev/null 2>&1 || need+=(bubblewrap)
command -v unshare   >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/bin/python3 ]              || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# --- 2. build warden ------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building warden (release)"
    (cd "$ROOT" && cargo build --release -p warden-cli)
fi
WARDEN="${WARDEN:-${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release/warden}"
[ -x "$WARDEN" ] || { echo "warden binary not found at $WARDEN" >&2; exit 1; }
WARDEN="$(cd "$(dirname "$WARDEN")" && pwd)/$(basename "$WARDEN")"

# --- 3. the commands --------------------------------------------------------------
# Absolute program paths everywhere (no PATH lookup, no pyenv/asdf shims).
PY=/usr/bin/python3
UNSHARE="unshare --user --map-root-user --mount --pid --fork --net"
# bwrap gets the same /etc as the jail (the entries of ETC_ENTRIES in
# crates/warden-jail/src/mounts.rs that exist here, and passwd, group, hosts,
# hostname, which warden writes its own of) and a hostname of its own, so
# that programs find the same files under both (python3 reads nsswitch.conf,
# passwd and /etc/ssl at start-up when they are there).
BWRAP_ETC=""
for e in ld.so.cache localtime nsswitch.conf host.conf gai.conf protocols services \
    locale.alias os-release debian_version alternatives ssl python3.11 python3.12 \
    python3.13 php nodejs passwd group hosts hostname; do
    [ -e "/etc/$e" ] && BWRAP_ETC="$BWRAP_ETC --ro-bind /etc/$e /etc/$e"
done
BWRAP="bwrap --unshare-all --die-with-parent --new-session --hostname warden \
--ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib \
--symlink usr/lib64 /lib64 --symlink usr/sbin /sbin$BWRAP_ETC \
--proc /proc --dev /dev --tmpfs /tmp --clearenv --setenv PATH /usr/bin:/bin --"
# The same without any /etc (what earlier runs of this bench compared with):
# cheaper for bwrap, and programs find no passwd, nsswitch.conf or certificates.
BWRAP_NOETC="bwrap --unshare-all --die-with-parent --new-session \
--ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib \
--symlink usr/lib64 /lib64 --symlink usr/sbin /sbin \
--proc /proc --dev /dev --tmpfs /tmp --clearenv --setenv PATH /usr/bin:/bin --"
WARDEN_RUN="$WARDEN run --"

names=(); cmds=()
add() { names+=("$1"); cmds+=("$2"); }
for label in "/bin/true" "python3 -c pass"; do
    case $label in
        /bin/true) p="/bin/true" ;;
        python3*)  p="$PY -c pass" ;;
    esac
    add "bare $label"    "$p"
    add "unshare $label" "$UNSHARE $p"
    add "bwrap-noetc $label" "$BWRAP_NOETC $p"
    add "bwrap $label"   "$BWRAP $p"
    add "warden $label"  "$WARDEN_RUN $p"
done

cd "$BENCH_DIR"

# --- 4. sanity: every command must actually run and exit 0 ------------------------
log "checking that every command runs (cwd: $PWD)"
for i in "${!cmds[@]}"; do
    # shellcheck disable=SC2086 # word splitting is intended: these are argv lists
    if ! ${cmds[$i]} </dev/null >/dev/null 2>"$OUT/check.err"; then
        echo "command '${names[$i]}' failed: ${cmds[$i]}" >&2
        cat "$OUT/check.err" >&2
        exit 1
    fi
done
rm -f "$OUT/check.err"

# --- 5. machine ---------------------------------------------------------------------
{
    echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "nproc:   $(nproc)"
    echo "kernel:  $(uname -r)"
    echo "memory:  $(free -h | awk '/^Mem:/ {print $2}')"
    echo "hyperfine: $(hyperfine --version)"
    echo "bwrap:   $(bwrap --version)"
    echo "unshare: $(unshare --version)"
    echo "python:  $($PY --version 2>&1)"
    echo "warden:  $WARDEN ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ', dirty tree'))"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --- 6. one hyperfine run -------------------------------------------------------------
hf=(hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style basic
    --export-markdown "$OUT/startup.md")
for i in "${!cmds[@]}"; do
    hf+=(--command-name "${names[$i]}" "${cmds[$i]}")
done
printf '%q ' "${hf[@]}" > "$OUT/command.txt"; echo >> "$OUT/command.txt"
if [ "$ROUNDS" -gt 1 ]; then
    echo "(repeated ROUNDS=$ROUNDS times; round 1 exported to startup.json, round r to startup-r.json)" >> "$OUT/command.txt"
fi
log "running: $(cat "$OUT/command.txt") --export-json $OUT/startup.json"
"${hf[@]}" --export-json "$OUT/startup.json" </dev/null
exports=("$OUT/startup.json")
for ((r = 2; r <= ROUNDS; r++)); do
    log "round $r of $ROUNDS"
    "${hf[@]}" --export-json "$OUT/startup-$r.json" </dev/null
    exports+=("$OUT/startup-$r.json")
done

# --- 7. ratios ------------------------------------------------------------------------------
python3 "$ROOT/bench/ratios.py" "${exports[@]}" | tee "$OUT/ratios.md"
log "results in $OUT/ (startup.json, startup.md, ratios.md, machine.txt, command.txt)"
