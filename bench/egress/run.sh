#!/usr/bin/env bash
# Egress cost (issue 17): an allowed TCP connection through Warden's jail
# (the supervisor connects and hands the socket over) against the same
# client run bare, to the same local server, in one private network
# namespace whose loopback carries a "public" address. Root only.
# Usage: bench/egress/run.sh   (SKIP_BUILD=1: use the release binary as it
# is; ROUNDS=5; CONNECTS=2000; MIB=512)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "needs root (a private network namespace)" >&2; exit 1; }
if [ "${SKIP_BUILD:-}" != 1 ]; then
    timeout 2400 cargo build --release -p warden-cli
fi
R=target/x86_64-unknown-linux-gnu/release
[ -x "$R/warden" ] || R=target/release
export ROUNDS=${ROUNDS:-5} CONNECTS=${CONNECTS:-2000} MIB=${MIB:-512} W="${WARDEN:-$PWD/$R/warden}" B="$PWD/bench/egress"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)'); $CONNECTS connects and $MIB MiB per round, $ROUNDS rounds"
timeout 1800 unshare -n bash -c '
set -euo pipefail
ip link set lo up
ip addr add 11.22.33.44/32 dev lo
python3 "$B/server.py" 11.22.33.44 9000 & SRV=$!
trap "kill $SRV" EXIT
sleep 0.5
STATE=$(mktemp -d /var/tmp/warden-egress-bench-XXXXXX)
HOSTS=$STATE-hosts; echo "11.22.33.44 bench.example" > "$HOSTS"
for i in $(seq "$ROUNDS"); do
  echo "direct $(python3 "$B/client.py" 11.22.33.44 9000 "$CONNECTS" "$MIB")"
  echo "warden $(WARDEN_EGRESS_HOSTS=$HOSTS "$W" --state "$STATE" run --no-audit --allow net:connect:bench.example:9000 --allow net:limit:connections:1000000 \
      --allow fs:read:"$B" -- /usr/bin/python3 "$B/client.py" bench.example 9000 "$CONNECTS" "$MIB")"
done
rm -rf "$STATE" "$HOSTS"
' | python3 "$B/summary.py"
