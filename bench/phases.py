#!/usr/bin/env python3
"""Phase breakdown of `warden run -- /bin/true` from a `perf trace` log (see bench/profile.sh)."""
import re
import statistics as st
import sys

lines = open(sys.argv[1]).read().splitlines()
rx = re.compile(r'^\s*([\d.]+|\?) \(\s*([\d.]*)\s*(?:ms)?\s*\): (\S+?)/(\d+) (\S+?)\((.*)')
NEWNET, NEWCGROUP = 0x40000000, 0x02000000
runs = []
cur = None
for line in lines:
    m = rx.match(line)
    if not m:
        continue
    ts, dur, comm, pid, sc, rest = m.groups()
    if ts == '?':
        continue
    ts = float(ts)
    dur = float(dur) if dur else 0.0
    if sc == 'execve' and comm == 'warden' and 'continued' not in line:
        cur = {'start': ts}
        runs.append(cur)
        continue
    if cur is None:
        continue
    flags = re.search(r'unshare_flags: (\d+)', rest)
    flags = int(flags.group(1)) if flags else 0
    if sc == 'mkdir' and 'mk1' not in cur:
        cur['mk1'] = ts
    if sc == 'clone' and 'NEWUSER' in rest:
        cur['clone0'], cur['clone1'] = ts, ts + dur
    if sc == 'unshare' and flags == NEWNET:
        cur['net0'], cur['net1'] = ts, ts + dur
    elif sc == 'unshare' and flags == NEWCGROUP:
        cur['cg'] = ts
    elif sc == 'unshare' and 'ns' not in cur:
        cur['ns'] = ts
    if sc == 'pivot_root':
        cur['pivot'] = ts
    if sc == 'setns':
        cur['setns'] = ts
    if sc == 'seccomp':
        cur['sc0'], cur['sc1'] = ts, ts + dur
    if sc == 'execve' and comm == 'true':
        cur['ex0'] = ts
    if sc == 'exit_group' and comm == 'true':
        cur['texit'] = ts
    if sc == 'rmdir' and 'rm1' not in cur:
        cur['rm1'] = ts
    if sc == 'exit_group' and comm == 'warden' and 'texit' in cur:
        cur['end'] = ts

phases = [
    ('start -> 1st cgroup mkdir (exec, ld.so, CLI, policy, /etc reads, cgroup detect)', 'start', 'mk1'),
    ('1st cgroup mkdir -> clone', 'mk1', 'clone0'),
    ('clone(NEWUSER|NEWPID)', 'clone0', 'clone1'),
    ('clone -> unshare(NEWNS|...) in init (uid map wait)', 'clone1', 'ns'),
    ('unshare -> pivot_root (root build)', 'ns', 'pivot'),
    ('pivot_root -> setns(net) (waits for the netns helper)', 'pivot', 'setns'),
    ('  helper: unshare(NEWNET) duration', 'net0', 'net1'),
    ('  helper: clone -> unshare(NEWNET) start', 'clone1', 'net0'),
    ('setns -> unshare(NEWCGROUP)', 'setns', 'cg'),
    ('unshare(NEWCGROUP) -> seccomp (fork, caps, rlimits)', 'cg', 'sc0'),
    ('seccomp load', 'sc0', 'sc1'),
    ('seccomp -> execve(program)', 'sc1', 'ex0'),
    ('program runs (/bin/true)', 'ex0', 'texit'),
    ('program exit -> 1st rmdir (reap, stats)', 'texit', 'rm1'),
    ('1st rmdir -> exit', 'rm1', 'end'),
    ('TOTAL', 'start', 'end'),
]
need = {k for _, a, b in phases for k in (a, b)}
ok = [r for r in runs if need <= r.keys()][1:]
print(f"runs parsed: {len(ok)} of {len(runs)} (first complete run excluded as cold)")
for name, a, b in phases:
    v = [r[b] - r[a] for r in ok]
    if v:
        print(f"{st.median(v):7.3f} ms median  {st.mean(v):7.3f} mean  {max(v):7.3f} max  {name}")
