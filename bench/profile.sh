#!/usr/bin/env bash
# Where does `warden run -- /bin/true` spend its time? Traces a few marker
# syscalls with `perf trace` over N runs (low overhead: only these syscalls
# are traced) and prints the median duration of each phase. Needs root + perf.
# Usage: bench/profile.sh [N]   (builds nothing; run bench/startup.sh first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-60}"
WARDEN="${WARDEN:-${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release/warden}"
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
OUT="${OUT:-$ROOT/bench/out}"; mkdir -p "$OUT"
cd /tmp
perf trace -e execve,clone,mkdir,rmdir,pivot_root,seccomp,exit_group,unshare,setns \
    -o "$OUT/phases.trace" -- bash -c "for i in \$(seq $N); do '$WARDEN' run -- /bin/true; done"
python3 "$ROOT/bench/phases.py" "$OUT/phases.trace"
