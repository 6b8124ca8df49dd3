#!/usr/bin/env bash
# StreamRedactor throughput (docs/secrets.md, "Measured"): ~256 MiB of
# log-like text in 64 KiB chunks, 16 leased secrets of 16-40 bytes, one
# core. Prints the median of several runs for text with planted secrets,
# text without any, and the no-secrets passthrough.
# Usage: bench/redact/run.sh [MIB] [RUNS] [CORE]   (defaults 256 7 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-256}
runs=${2:-7}
core=${3:-1}

timeout 1800 cargo build --release -p warden-secrets --example redact_bench
bin=target/x86_64-unknown-linux-gnu/release/examples/redact_bench
[ -x "$bin" ] || bin=target/release/examples/redact_bench

echo "== machine"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $bin --mib $mib --runs $runs --secrets 16, pinned to core $core"
timeout 1800 taskset -c "$core" "$bin" --mib "$mib" --runs "$runs" --secrets 16
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
