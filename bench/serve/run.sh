#!/usr/bin/env bash
# warden serve under load (issue 16, "Speed and load"): oha on loopback
# against POST /v1/execute, beside the same programs run bare and through
# `warden run`. Release builds; a fresh state directory per run.
# Usage: bench/serve/run.sh   (SKIP_BUILD=1 to use the release binaries as
# they are; DURATION=10s per point; PORT=18080)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v oha >/dev/null || { echo "needs oha: cargo install oha --locked" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "needs hyperfine (scripts/setup.sh)" >&2; exit 1; }
if [ "${SKIP_BUILD:-}" != 1 ]; then
    timeout 2400 cargo build --release -p warden-cli -p warden-server
fi
R=target/x86_64-unknown-linux-gnu/release
[ -x "$R/warden-serve" ] || R=target/release
PORT=${PORT:-18080}
DURATION=${DURATION:-10s}
STATE=$(mktemp -d /var/tmp/warden-serve-bench-XXXXXX)
LOG=$(mktemp)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$STATE" "$STATE-sandboxes" "$LOG"; }
trap cleanup EXIT

"$R/warden-serve" --state "$STATE" --listen "127.0.0.1:$PORT" --queue 4096 2>"$LOG" &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
KEY=$(sed -n 's/^warden: development API key: //p' "$LOG")
[ -n "$KEY" ] || { cat "$LOG"; exit 1; }
URL="http://127.0.0.1:$PORT/v1/execute"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
point() { # NAME CONCURRENCY BODY
    local out
    out=$(oha -z "$DURATION" -c "$2" -m POST -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
        -d "$3" --no-tui --output-format json "$URL")
    python3 - "$1" "$2" "$out" <<'PY'
import json, sys
name, c, raw = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.loads(raw)
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(f"{name:28s} c={c:>3}  {s['requestsPerSec']:8.1f} req/s  p50 {p['p50']*1000:7.2f} ms  p99 {p['p99']*1000:7.2f} ms  codes {codes}")
PY
}
SH='{"language":"sh","files":[{"name":"m","content":"true"}]}'
PY='{"language":"python","files":[{"name":"m.py","content":"print(1)"}]}'
WAT='{"language":"wasm","files":[{"name":"m.wat","content":"(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) (result i32))) (memory (export \"memory\") 1) (data (i32.const 8) \"hello\\n\") (func (export \"_start\") (i32.store (i32.const 0) (i32.const 8)) (i32.store (i32.const 4) (i32.const 6)) (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"}]}'
for c in 1 4 8 64; do point "sh true" "$c" "$SH"; done
for c in 1 4 8; do point "python3 print(1)" "$c" "$PY"; done
for c in 1 8 64; do point "wasm hello (.wat)" "$c" "$WAT"; done
echo "== the same programs bare and through warden run (hyperfine -N, medians)"
hyperfine -N -w 10 -r 100 --export-json "$STATE/h.json" \
    "/bin/sh -c true" "$R/warden --state $STATE run --quiet -- /bin/sh -c true" \
    "/usr/bin/python3 -c print(1)" "$R/warden --state $STATE run --quiet -- /usr/bin/python3 -c print(1)" >/dev/null 2>&1
python3 - "$STATE/h.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command'][-44:]:44s} median {r['median']*1000:7.2f} ms")
PY
