#!/usr/bin/env bash
# The whole output path of a jailed run with redaction on (one leased
# secret, so every byte the program prints goes through the streaming
# redactor) against the same run with none: a program prints 256 MiB of
# log-like text. The issue's bar: within 10%.
# Usage: bench/output_redaction.sh   (SKIP_BUILD=1 to use the release warden as is)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "needs hyperfine (scripts/setup.sh)"; exit 1; }
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -p warden-cli
W="$PWD/target/x86_64-unknown-linux-gnu/release/warden"
[ -x "$W" ] || W="$PWD/target/release/warden"
STATE="$(mktemp -d /var/tmp/warden-redact-bench-XXXXXX)"
trap 'rm -rf "$STATE"' EXIT
export WARDEN_STATE="$STATE"
printf 'hunter2-Very/Secret+Value-0042' | "$W" secret put k >/dev/null
# No double quotes inside: hyperfine -N splits the command like a shell.
GEN="yes 'ts=2026-12-06T23:00:00Z level=info msg=request_served path=/api/v1/items status=200 took_ms=12' | head -c 268435456"
hyperfine -N -w 2 -r "${RUNS:-10}" \
  -n off "$W run --no-audit --quiet --output-limit 1GiB -- sh -c \"$GEN\"" \
  -n on  "$W run --no-audit --quiet --output-limit 1GiB --allow secret:k -- sh -c \"$GEN\"" \
  --export-json "${OUT:-/tmp/output_redaction.json}"
python3 - "${OUT:-/tmp/output_redaction.json}" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
off, on = r["off"]["median"], r["on"]["median"]
print(f"median off {off*1000:.1f} ms, on {on*1000:.1f} ms: redaction costs {100*(on/off-1):+.1f}% ({268435456/on/1e9:.2f} GB/s end to end with it)")
PY
