#!/usr/bin/env bash
# warden-oci's speed (issue 19), against Debian's runc (and crun, which
# fails on this host's hybrid cgroups: its row says so), in one run:
#  1. the runtime's own lifecycle, `create` + `start` + `delete --force`,
#     and `run` (create, start, wait, delete) of /bin/true;
#  2. `ctr run --rm` of /bin/true through containerd's runc shim with
#     `--runc-binary` each runtime, under a private containerd.
# Root only. Usage: bench/oci/run.sh   (SKIP_BUILD=1, RUNS=30, ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for t in hyperfine runc ctr containerd busybox; do
    command -v "$t" >/dev/null || { echo "needs $t (scripts/setup.sh)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-}" != 1 ]; then
    timeout 2400 cargo build --release -p warden-oci --bin warden-oci
fi
R=target/x86_64-unknown-linux-gnu/release
[ -x "$R/warden-oci" ] || R=target/release
OCI="$PWD/$R/warden-oci"
RUNC=$(command -v runc)
CRUN=$(command -v crun || true)
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /var/tmp/warden-oci-bench-XXXXXX)
cleanup() {
    [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null || true
    pkill -f "containerd-shim-runc-v2 .*$WORK" 2>/dev/null || true
    umount -R "$WORK/ctrd/state" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# A static-busybox rootfs and runc's own default spec for it.
mkdir -p "$WORK/bundle/rootfs"/{bin,proc,dev,sys,tmp,etc}
cp "$(command -v busybox)" "$WORK/bundle/rootfs/bin/busybox"
ln -s busybox "$WORK/bundle/rootfs/bin/true"
(cd "$WORK/bundle" && runc spec)
python3 - "$WORK/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(sys.argv[1], "w"))
PY
export WARDEN_STATE="$WORK/warden-state"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)'); $($RUNC --version | head -1); $ROUNDS rounds of $RUNS runs"
lifecycle() { # runtime root
    echo "$1 --root $2 create --bundle $WORK/bundle b && $1 --root $2 start b && $1 --root $2 delete --force b"
}
summary() { # json baseline
    python3 - "$1" "$2" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r[sys.argv[2]]["median"]
for name, x in r.items():
    print(f"  {name:28s} median {x['median']*1000:7.2f} ms  mean {x['mean']*1000:7.2f} ± {x['stddev']*1000:5.2f} ms  x{x['median']/base:5.3f} of {sys.argv[2]}")
PY
}
# containerd, private.
mkdir -p "$WORK/ctrd"
cat > "$WORK/ctrd/config.toml" <<TOML
version = 2
root = "$WORK/ctrd/root"
state = "$WORK/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctrd/sock"
[ttrpc]
  address = "$WORK/ctrd/sock.ttrpc"
TOML
containerd --config "$WORK/ctrd/config.toml" >"$WORK/ctrd/log" 2>&1 &
CTRD_PID=$!
for _ in $(seq 100); do ctr --address "$WORK/ctrd/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
# (--rootfs is a flag: the directory is the first word after the options.)
CTR="ctr --address $WORK/ctrd/sock run --rm"
ROOTFS="--rootfs $WORK/bundle/rootfs"
if [ -n "$CRUN" ] && ! crun --root "$WORK/crun" run --bundle "$WORK/bundle" probe >/dev/null 2>&1; then
    echo "== crun fails here ($(crun --root "$WORK/crun" run --bundle "$WORK/bundle" probe2 2>&1 | head -1)): left out"
    CRUN=""
fi
for round in $(seq "$ROUNDS"); do
    echo "== round $round: the runtime's own lifecycle"
    args=(-n runc-create-start-delete "$(lifecycle "$RUNC" "$WORK/runc")"
          -n warden-oci-create-start-delete "$(lifecycle "$OCI" "$WORK/oci")"
          -n runc-run "$RUNC --root $WORK/runc run --bundle $WORK/bundle r"
          -n warden-oci-run "$OCI --root $WORK/oci run --bundle $WORK/bundle r")
    [ -n "$CRUN" ] && args+=(-n crun-run "$CRUN --root $WORK/crun run --bundle $WORK/bundle r")
    timeout 1200 hyperfine --warmup 3 --runs "$RUNS" --export-json "$WORK/life$round.json" "${args[@]}" >/dev/null
    summary "$WORK/life$round.json" runc-create-start-delete
    echo "== round $round: ctr run --rm /bin/true"
    args=(-n ctr-runc "$CTR --runc-binary $RUNC $ROOTFS t /bin/true"
          -n ctr-warden-oci "$CTR --runc-binary $OCI $ROOTFS t /bin/true")
    [ -n "$CRUN" ] && args+=(-n ctr-crun "$CTR --runc-binary $CRUN $ROOTFS t /bin/true")
    timeout 1200 hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/ctr$round.json" "${args[@]}" >/dev/null
    summary "$WORK/ctr$round.json" ctr-runc
done
