#!/usr/bin/env bash
# The audit ledger's benchmarks (bench/ledger/README.md); prints numbers.
# Usage: bench/ledger/run.sh [SCRATCH_DIR]   (default /var/tmp/warden-ledger-bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/var/tmp/warden-ledger-bench}

timeout 1800 cargo build --release -p warden-ledger --examples
bin=target/x86_64-unknown-linux-gnu/release/examples/ledger_bench
[ -x "$bin" ] || bin=target/release/examples/ledger_bench

rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
# Let the discards of earlier deletions (a previous run's 1.7 GB) finish.
sync
sleep 15

echo "== machine"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
df -T "$work" | tail -1 | awk '{print "scratch filesystem: " $1 " (" $2 ")"}'
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# The per-process cost first: deleting big files on this filesystem
# (mounted with discard) slows fsyncs for a while after.
echo "== 4: per process: open + one append + close, against open only (hyperfine -N)"
"$bin" append1 "$work/proc"
# Three rounds, so that a disturbance by other programs shows as a
# round apart rather than as a difference between the two commands.
for round in 1 2 3; do
    timeout 900 hyperfine -N -w 100 -r 1000 \
        "$bin open $work/proc" "$bin append1 $work/proc" \
        --export-json "$work/hyperfine-$round.json" >/dev/null 2>&1
done
python3 - "$work"/hyperfine-*.json <<'PY'
import json, sys
deltas = []
for path in sys.argv[1:]:
    r = json.load(open(path))["results"]
    for x in r:
        t = sorted(x["times"])
        name = x["command"].split(" ")[0].split("/")[-1] + " " + x["command"].split(" ")[1]
        print(f"  {path.split('/')[-1]}: {name:<20} mean {x['mean']*1e3:.3f} ms"
              f"  median {x['median']*1e3:.3f} ms  p90 {t[int(len(t)*0.9)]*1e3:.3f} ms"
              f"  min {x['min']*1e3:.3f} ms")
    d = ((r[1]["mean"] - r[0]["mean"]) * 1e3, (r[1]["median"] - r[0]["median"]) * 1e3)
    deltas.append(d)
    print(f"  delta (append1 - open): mean {d[0]:.3f} ms, median {d[1]:.3f} ms")
med = sorted(d[1] for d in deltas)[len(deltas) // 2]
print(f"delta of the medians, median of {len(deltas)} rounds: {med:.3f} ms")
PY
if command -v strace >/dev/null; then
    n=0
    for _ in $(seq 200); do
        n=$((n + $(strace -f -e trace=fsync,fdatasync "$bin" append1 "$work/proc" 2>&1 | grep -c '^fsync\|^fdatasync\|fsync(\|fdatasync(')))
    done
    echo "fsync calls per append1 process (200 runs): $(python3 -c "print($n / 200)")"
fi
echo "== 2: group commit, 8 writer threads, 10 s"
timeout 120 "$bin" group "$work/group" 8 10
echo "== 2 (for comparison): 1 writer thread, 5 s"
timeout 120 "$bin" group "$work/group1" 1 5

echo "== 1, 3: bulk append of 1,000,000 (append_stream, transactions of 1000), verify, proofs"
timeout 900 "$bin" bulk "$work/bulk" 1000000 1000
echo "== 1 (for comparison): the same through append_iter, once per batch of 1000"
timeout 900 "$bin" bulk-iter "$work/iter" 1000000 1000

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
