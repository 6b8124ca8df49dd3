#!/usr/bin/env bash
# WebAssembly benchmarks of issue 3, reproducible from the repository root:
#
#   bench/wasm.sh                 # everything (builds what it needs first)
#   SKIP_BUILD=1 bench/wasm.sh    # reuse the release builds already there
#   ONLY=hello,cli,meter,deadline bench/wasm.sh   # a subset
#
#   (a) hello:    per-invocation cost of a WASI hello through Warden's library
#                 API (run_prepared, run_with_io) beside raw wasmtime 48 in the
#                 same process, median and p99, runs/s on 1 and 2 threads
#                 (examples/bench_hello.rs);
#   (b) cli:      whole process, hyperfine: `warden run hello.wasm` and
#                 `warden run hello.cwasm` (precompiled by `warden compile`)
#                 against `wasmtime run hello.wasm` and
#                 `wasmtime run --allow-precompiled hello.cwasm` (precompiled
#                 by `wasmtime compile`); the guests' own compute the same way;
#   (c) meter:    metering cost on a call-heavy guest (recursive fib) and a
#                 loop-heavy one (SHA-256): Warden's default limits and
#                 --fuel against raw wasmtime with no metering, epoch checks,
#                 fuel, both (examples/bench_meter.rs) and against the same
#                 Rust code compiled natively (hyperfine, minus process start);
#   (d) deadline: latency from the wall-clock deadline to the run reported
#                 stopped (examples/bench_deadline.rs, and the CLI's report).
#
# Guests are Rust programs in bench/guests, built here for wasm32-wasip1 and
# for the host; nothing is downloaded but the wasmtime CLI (cargo install,
# into a directory of its own, never a project dependency) when missing.
# Timed commands run under `chrt -f 50` (real-time priority) when possible,
# so that other work on the machine does not preempt them. Results go to
# bench/out/wasm/ (git-ignored).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/bench/out/wasm}
work=${BENCH_DIR:-/tmp/warden-wasm-bench}
HELLO_RUNS=${HELLO_RUNS:-20000}
WARMUP=${WARMUP:-10}
RUNS=${RUNS:-100}
METER_RUNS=${METER_RUNS:-15}
NATIVE_RUNS=${NATIVE_RUNS:-30}
FIB_N=${FIB_N:-35}
SHA_MIB=${SHA_MIB:-10}
DEADLINE_RUNS=${DEADLINE_RUNS:-50}
WASMTIME_VERSION=48.0.8
ONLY=${ONLY:-hello,cli,meter,deadline}
mkdir -p "$out" "$work"

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { printf '\n== %s\n' "$*"; }

host=$(rustc -vV | sed -n 's/^host: //p')
rel=$root/target/$host/release
warden=$rel/warden
guests=$root/target/bench-guests

# Real-time priority for the timed commands, when allowed.
prio=()
if command -v chrt >/dev/null && chrt -f 50 true 2>/dev/null; then
    prio=(chrt -f 50)
else
    echo "note: chrt -f 50 not available; timings may be disturbed by other load" >&2
fi

# --- tools -------------------------------------------------------------------
if ! command -v hyperfine >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y hyperfine
fi
if ! rustc --print target-libdir --target wasm32-wasip1 >/dev/null 2>&1 ||
    [ ! -d "$(rustc --print target-libdir --target wasm32-wasip1)" ]; then
    rustup target add wasm32-wasip1
fi
# The wasmtime CLI, same version as Warden's wasmtime: $WASMTIME, or one
# installed before (the lead's /work/tools, or ours), or install it.
find_wasmtime() {
    for w in "${WASMTIME:-}" /work/tools/wasmtime-48/bin/wasmtime "$root/target/bench-tools/wasmtime-$WASMTIME_VERSION/bin/wasmtime"; do
        if [ -n "$w" ] && [ -x "$w" ] && "$w" --version 2>/dev/null | grep -q " $WASMTIME_VERSION"; then
            echo "$w"
            return 0
        fi
    done
    return 1
}
if want cli; then
    if ! wasmtime=$(find_wasmtime); then
        say "installing wasmtime-cli $WASMTIME_VERSION (cargo install, ~10 minutes on 2 cores)"
        cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked \
            --root "$root/target/bench-tools/wasmtime-$WASMTIME_VERSION"
        wasmtime=$(find_wasmtime)
    fi
fi

# --- builds ------------------------------------------------------------------
say "guests (bench/guests) for wasm32-wasip1 and $host"
(
    cd "$root/bench/guests"
    unset CARGO_TARGET_DIR CARGO_BUILD_TARGET RUSTFLAGS CARGO_ENCODED_RUSTFLAGS 2>/dev/null || true
    cargo build --quiet --release --target wasm32-wasip1 --target-dir "$guests"
    cargo build --quiet --release --target "$host" --target-dir "$guests"
)
wasm=$guests/wasm32-wasip1/release
native=$guests/$host/release
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "warden and the benchmark examples (release)"
    # Two invocations: target flags (--example) apply to every -p package.
    (cd "$root" && cargo build --release -p warden-cli &&
        cargo build --release -p warden-wasm \
            --example bench_hello --example bench_meter --example bench_deadline)
fi
ex=$rel/examples

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), nproc $(nproc)"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel: $(uname -r)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc: $(rustc --version)"
    echo "hyperfine: $(hyperfine --version)"
    [ -n "${wasmtime:-}" ] && echo "wasmtime: $("$wasmtime" --version) ($wasmtime)"
    echo "warden: $(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "priority: ${prio[*]:-normal}"
} >"$out/machine.txt"
cat "$out/machine.txt"

# --- (a) per-invocation cost through the library --------------------------------
if want hello; then
    say "(a) per-invocation cost, library API ($HELLO_RUNS runs per variant)"
    "${prio[@]}" "$ex/bench_hello" "$wasm/hello.wasm" "$HELLO_RUNS" | tee "$out/hello.txt"
fi

# --- (b) whole process --------------------------------------------------------
if want cli; then
    say "(b) whole process: warden run vs wasmtime run (hyperfine -N, $RUNS runs)"
    cp "$wasm/hello.wasm" "$wasm/fib.wasm" "$wasm/sha256.wasm" "$work/"
    cd "$work"
    "$warden" compile hello.wasm -o hello.cwasm
    "$wasmtime" compile hello.wasm -o hello.wasmtime.cwasm
    # Each command must work (and prints the same line) before it is timed;
    # one run of each also fills both compile caches.
    for cmd in "$wasmtime run hello.wasm" "$warden run hello.wasm" \
        "$wasmtime run --allow-precompiled hello.wasmtime.cwasm" "$warden run hello.cwasm"; do
        got=$($cmd)
        [ "$got" = "Hello, world!" ] || { echo "$cmd printed: $got" >&2; exit 1; }
    done
    # `warden` hands WebAssembly to the `warden-wasm` binary beside it (when
    # built that way): measure that binary directly too.
    full=()
    if [ -x "$rel/warden-wasm" ]; then
        full=(-n "warden-wasm run hello.cwasm" "$rel/warden-wasm run hello.cwasm")
    fi
    # --prepare: an idle pause before each run keeps a real-time process
    # below the kernel's real-time budget (95% of each second; beyond it,
    # it is stopped for 50 ms).
    "${prio[@]}" hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style basic \
        --prepare "sleep 0.02" \
        --export-json "$out/cli.json" --export-markdown "$out/cli.md" \
        -n "wasmtime run hello.wasm" "$wasmtime run hello.wasm" \
        -n "warden run hello.wasm" "$warden run hello.wasm" \
        -n "wasmtime run --allow-precompiled hello.cwasm" "$wasmtime run --allow-precompiled hello.wasmtime.cwasm" \
        -n "warden run hello.cwasm" "$warden run hello.cwasm" \
        "${full[@]}"
    say "(b) whole process, compute-heavy guests (default limits; wasmtime run meters nothing)"
    "${prio[@]}" hyperfine -N --warmup 2 --runs "$METER_RUNS" --style basic \
        --prepare "sleep 0.05" \
        --export-json "$out/cli-compute.json" \
        -n "native fib $FIB_N" "$native/fib $FIB_N" \
        -n "wasmtime run fib.wasm $FIB_N" "$wasmtime run fib.wasm $FIB_N" \
        -n "warden run fib.wasm $FIB_N" "$warden run fib.wasm $FIB_N" \
        -n "native sha256 $SHA_MIB" "$native/sha256 $SHA_MIB" \
        -n "wasmtime run sha256.wasm $SHA_MIB" "$wasmtime run sha256.wasm $SHA_MIB" \
        -n "warden run sha256.wasm $SHA_MIB" "$warden run sha256.wasm $SHA_MIB"
    cd "$root"
fi

# --- (c) metering ---------------------------------------------------------------
if want meter; then
    say "(c) metering: fib($FIB_N) and SHA-256 over $SHA_MIB MiB, in one process"
    "${prio[@]}" "$ex/bench_meter" "$wasm" "$METER_RUNS" "$FIB_N" "$SHA_MIB" | tee "$out/meter.txt"
    for g in "fib $FIB_N" "sha256 $SHA_MIB"; do
        n=$($native/$g)
        w=$(cd / && $warden run "$wasm/${g%% *}.wasm" ${g#* })
        [ "$n" = "$w" ] || { echo "native and wasm $g differ: $n / $w" >&2; exit 1; }
    done
    say "(c) the same code natively (hyperfine -N, minus a native hello: process start)"
    "${prio[@]}" hyperfine -N --warmup 3 --runs "$NATIVE_RUNS" --style basic \
        --prepare "sleep 0.05" \
        --export-json "$out/native.json" \
        -n "native hello" "$native/hello" \
        -n "native fib $FIB_N" "$native/fib $FIB_N" \
        -n "native sha256 $SHA_MIB" "$native/sha256 $SHA_MIB"
fi

# --- (d) deadline latency ---------------------------------------------------------
if want deadline; then
    say "(d) deadline latency, library API (--wall-time 50ms)"
    "${prio[@]}" "$ex/bench_deadline" "$wasm" "$DEADLINE_RUNS" 50 | tee "$out/deadline.txt"
    say "(d) deadline latency, CLI: report wall_ms − 50 and process time − 50 ($DEADLINE_RUNS runs)"
    "${prio[@]}" python3 "$root/bench/wasm_deadline_cli.py" "$warden" "$wasm/spin.wasm" "$DEADLINE_RUNS" |
        tee "$out/deadline-cli.txt"
fi

say "ratios"
python3 "$root/bench/wasm_ratios.py" "$out" | tee "$out/ratios.md"
