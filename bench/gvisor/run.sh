#!/usr/bin/env bash
# gVisor start cost (issue 17): `warden run --backend gvisor -- /bin/true`
# against runsc alone in the same run — `runsc run` of a minimal bundle
# made once (what Warden's bundle does, without Warden), and `runsc do`
# (runsc's own shortcut) — beside the jail. Root only (runsc builds its
# sandbox as root here); ptrace platform (Debian 12's runsc has no systrap).
# Usage: bench/gvisor/run.sh   (SKIP_BUILD=1: use the release binary as is;
# RUNS=30; ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
command -v runsc >/dev/null || { echo "needs runsc (apt-get install runsc)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
if [ "${SKIP_BUILD:-}" != 1 ]; then
    timeout 2400 cargo build --release -p warden-cli --bin warden
fi
R=target/x86_64-unknown-linux-gnu/release
[ -x "$R/warden" ] || R=target/release
W="${WARDEN:-$PWD/$R/warden}"
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /var/tmp/warden-gvisor-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# The plain bundle: /usr and /proc, uid 1000, no network — the least a
# runsc run of /bin/true needs on this Debian (merged /usr).
mkdir -p "$WORK/bundle/rootfs"/{usr,proc,tmp,etc}
for l in bin lib lib64 sbin; do ln -s "usr/$l" "$WORK/bundle/rootfs/$l"; done
cat > "$WORK/bundle/config.json" <<'EOF'
{"ociVersion":"1.0.2",
 "process":{"terminal":false,"user":{"uid":1000,"gid":1000},"args":["/bin/true"],
  "env":["PATH=/usr/bin:/bin"],"cwd":"/","noNewPrivileges":true,
  "capabilities":{"bounding":[],"effective":[],"permitted":[],"inheritable":[],"ambient":[]}},
 "root":{"path":"rootfs","readonly":true},"hostname":"bench",
 "mounts":[{"destination":"/usr","type":"bind","source":"/usr","options":["rbind","ro","nosuid","nodev"]},
  {"destination":"/proc","type":"proc","source":"proc"},
  {"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["size=64m","mode=1777"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"network"}]}}
EOF
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)'); $(runsc --version | head -1); $ROUNDS rounds of $RUNS runs"
STATE="$WORK/state"
for round in $(seq "$ROUNDS"); do
    echo "== round $round"
    timeout 1200 hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/round$round.json" \
        -n runsc-run "runsc --root $WORK/runsc --network=none --platform=ptrace --ignore-cgroups run --bundle $WORK/bundle bench" \
        -n runsc-do "runsc --root $WORK/runsc --network=none --platform=ptrace do /bin/true" \
        -n warden-gvisor "$W --state $STATE run --no-audit --backend gvisor -- /bin/true" \
        -n warden-gvisor-audited "$W --state $STATE run --backend gvisor -- /bin/true" \
        -n warden-jail "$W --state $STATE run --no-audit -- /bin/true" >/dev/null
    python3 - "$WORK/round$round.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["runsc-run"]["median"]
for name, x in r.items():
    print(f"{name:24s} median {x['median']*1000:7.1f} ms  mean {x['mean']*1000:7.1f} ± {x['stddev']*1000:5.1f} ms  x{ x['median']/base:5.3f} of runsc run")
EOF
done
