#!/usr/bin/env python3
"""Phase breakdown of `warden run -- /bin/true` from a `perf trace` log (see bench/profile.sh)."""
import re,sys,statistics as st
lines=open(sys.argv[1]).read().splitlines()
rx=re.compile(r'^\s*([\d.]+|\?) \(\s*([\d.]*)\s*(?:ms)?\s*\): (\S+?)/(\d+) (\S+?)\(')
runs=[];cur=None
for l in lines:
    m=rx.match(l)
    if not m: continue
    ts,dur,comm,pid,sc=m.groups()
    if ts=='?': continue
    ts=float(ts); dur=float(dur) if dur else 0.0
    if sc=='execve' and comm=='warden' and 'continued' not in l:
        cur={'start':ts};runs.append(cur);continue
    if cur is None: continue
    if sc=='mkdir' and 'mk1' not in cur: cur['mk1']=ts
    if sc=='clone' and 'NEWNS' in l: cur['clone0']=ts;cur['clone1']=ts+dur
    if sc=='pivot_root': cur['pivot']=ts
    if sc=='unshare': cur['unshare']=ts
    if sc=='seccomp': cur['sc0']=ts;cur['sc1']=ts+dur
    if sc=='execve' and comm=='true': cur['ex0']=ts
    if sc=='exit_group' and comm=='true': cur['texit']=ts
    if sc=='rmdir' and 'rm1' not in cur: cur['rm1']=ts
    if sc=='exit_group' and comm=='warden': cur['end']=ts
phases=[('start→1st cgroup mkdir (exec+ld.so+CLI+policy+mount plan+cgroup detect)','start','mk1'),
('cgroup stale scan+mkdir ×4','mk1','clone0'),
('clone(NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS)','clone0','clone1'),
('in-jail setup: mounts, pivot_root (+parent cgroup attach)','clone1','unshare'),
('unshare(NEWCGROUP)+fork of program','unshare','sc0'),
('seccomp load','sc0','sc1'),
('seccomp→execve(program) (caps, rlimits)','sc1','ex0'),
('program runs (/bin/true)','ex0','texit'),
('program exit→rmdir cgroups (reap, report)','texit','rm1'),
('rmdir ×4→exit','rm1','end'),
('TOTAL','start','end')]
ok=[r for r in runs if all(k in r for k in ('start','mk1','clone0','clone1','unshare','sc0','sc1','ex0','texit','rm1','end'))]
print(f"runs parsed: {len(ok)} (first run excluded as cold)")
ok=ok[1:]
for name,a,b in phases:
    v=[r[b]-r[a] for r in ok]
    print(f"{st.median(v):7.3f} ms median  {st.mean(v):7.3f} mean  {max(v):7.3f} max  {name}")
