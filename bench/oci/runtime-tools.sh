#!/usr/bin/env bash
# opencontainers/runtime-tools' validation suite (validation/*.t) against
# warden-oci and against Debian's runc, on the same host in the same run
# (issue 19's acceptance). It fetches nothing: give it a checkout of
# runtime-tools (commit 260e151 is the last whose go.mod builds with Debian
# 12's Go 1.19), never committed into this project.
# Usage: bench/oci/runtime-tools.sh /path/to/runtime-tools   (root; needs golang-go)
set -euo pipefail
cd "$(dirname "$0")/../.."
RT=${1:?usage: $0 RUNTIME_TOOLS_CHECKOUT}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
command -v go >/dev/null || { echo "needs Go (apt-get install golang-go)" >&2; exit 1; }
command -v runc >/dev/null || { echo "needs runc" >&2; exit 1; }
[ "${SKIP_BUILD:-}" = 1 ] || timeout 2400 cargo build --release -p warden-oci --bin warden-oci
R=target/x86_64-unknown-linux-gnu/release
[ -x "$R/warden-oci" ] || R=target/release
OCI="$PWD/$R/warden-oci"
OUT=$(mktemp -d /var/tmp/warden-oci-rt-XXXXXX)
echo "== building the validation tests in $RT"
# Offline: the checkout's vendor/ holds every module (GOPROXY is unreachable here).
(cd "$RT" && GOPROXY=off GOFLAGS=-mod=vendor timeout 1800 make runtimetest validation-executables >"$OUT/build.log" 2>&1) || {
    echo "build failed, see $OUT/build.log" >&2; exit 1; }
run_suite() { # name runtime
    local name=$1 runtime=$2 log="$OUT/$1.tap"
    : >"$log"
    for t in "$RT"/validation/*/*.t "$RT"/validation/*.t; do
        [ -x "$t" ] || continue
        echo "# $(basename "$(dirname "$t")")/$(basename "$t")" >>"$log"
        (cd "$RT" && RUNTIME="$runtime" timeout 120 "$t" >>"$log" 2>&1) || echo "# aborted: $t (exit $?)" >>"$log"
    done
    local ok notok aborted
    ok=$(grep -c '^ok ' "$log" || true)
    notok=$(grep -c '^not ok ' "$log" || true)
    aborted=$(grep -c '^# aborted' "$log" || true)
    echo "$name: $ok passed, $notok failed, $aborted files aborted ($log)"
}
run_suite runc "$(command -v runc)"
run_suite warden-oci "$OCI"
echo "== checks runc passes and warden-oci does not:"
only_runc=$(comm -23 <(grep '^ok ' "$OUT/runc.tap" | sed 's/^ok [0-9]* //' | sort -u) \
                     <(grep '^ok ' "$OUT/warden-oci.tap" | sed 's/^ok [0-9]* //' | sort -u))
echo "${only_runc:-(none)}"
echo "== warden-oci's failures, by file (each explained in docs/oci.md):"
awk '/^# [a-z_]+\/[a-z_]+\.t$/ {f = $2} /^not ok/ {sub(/^not ok [0-9]+ /, ""); print f ": " $0}
     /^# aborted/ {print $0}' "$OUT/warden-oci.tap" | sort | uniq -c
