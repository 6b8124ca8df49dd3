#!/bin/sh
# Builds the Rust guest programs for warden-wasm's tests twice: as WASI
# preview-1 core modules (wasm32-wasip1) and as WASI 0.2 components
# (wasm32-wasip2). Never downloads binaries; needs only the targets'
# standard libraries (`rustup target add wasm32-wasip1 wasm32-wasip2`).
#
# Output: $WARDEN_GUESTS_OUT (default <repo>/target/tests-guests), printed
# on stdout, holding wasm32-wasip1/release/*.wasm and
# wasm32-wasip2/release/*.wasm. The WAT guests in wat/ need no build:
# Warden accepts the text format.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${WARDEN_GUESTS_OUT:-$root/target/tests-guests}

# This may run from inside `cargo test`: do not let the outer build's
# settings (its target, flags or target directory) leak into this one.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS RUSTFLAGS \
    CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER 2>/dev/null || true

cd "$here/rust"
for target in wasm32-wasip1 wasm32-wasip2; do
    libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null || true)
    if [ -z "$libdir" ] || [ ! -d "$libdir" ]; then
        echo "build.sh: the $target target is missing; run: rustup target add $target" >&2
        exit 1
    fi
    cargo build --quiet --release --target "$target" --target-dir "$out" "$@"
done
echo "$out"
