#!/usr/bin/env bash
# One warden-authz decision with 1,000 rules and 10,000 principals
# (criterion; the bar is a median under 50 µs). Prints each benchmark's
# median; the full criterion output goes to bench/authz/last-run.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/authz/last-run.txt
timeout "${AUTHZ_BENCH_TIMEOUT:-3000}" cargo bench -p warden-authz --bench decide "$@" 2>&1 | tee "$out" >/dev/null
grep -E '^loaded|^allowed:' "$out" || true
# criterion prints "NAME  time: [low median high]"; the name may be on the line before.
awk '
  /^decide\// { name = $1 }
  /time:/ {
    if ($1 ~ /^decide\//) name = $1
    gsub(/[\[\]]/, "")
    for (i = 1; i <= NF; i++) if ($i == "time:") printf "%s median %s %s\n", name, $(i + 3), $(i + 4)
  }
' "$out"
