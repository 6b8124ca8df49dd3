#!/usr/bin/env bash
# Builds every fuzz target (fuzz/fuzz_targets) with libFuzzer's coverage
# instrumentation on the stable toolchain (the flags cargo-fuzz passes, less
# the sanitizer, which needs nightly) and runs each for a bounded time over
# its seed corpus: a target that no longer builds, or crashes on a seed or
# within the bound, fails. Usage: scripts/fuzz.sh  (FUZZ_RUNS=N, FUZZ_SECONDS=S)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
RUNS="${FUZZ_RUNS:-2000}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGET=x86_64-unknown-linux-gnu
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks"
cargo build --release --locked --target "$TARGET" --bins
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for src in fuzz_targets/*.rs; do
  name="$(basename "$src" .rs)"
  corpus="$work/$name"
  mkdir -p "$corpus"
  # Seeds: fuzz/seeds/NAME/ if there is one; the policy parser also takes
  # the example policy and the dictionary.
  if [ -d "seeds/$name" ]; then cp -r "seeds/$name/." "$corpus/"; fi
  extra=()
  if [ "$name" = policy_parse ]; then
    cp seeds/*.yaml "$corpus/"
    extra+=(-dict=policy.dict)
  fi
  echo "fuzz: $name (${RUNS} runs, at most ${SECONDS_EACH}s)"
  "target/$TARGET/release/$name" "${extra[@]}" -runs="$RUNS" \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -print_final_stats=1 "$corpus" 2>&1 | tail -4
  # (pipefail: a crash, which libFuzzer reports with a non-zero exit, fails here)
done
echo "fuzz: every target built and ran clean"
