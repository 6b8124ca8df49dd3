#!/usr/bin/env python3
"""Ratios and bars of bench/wasm.sh, from the files it wrote in OUT
(default bench/out/wasm): hello.txt, cli.json, cli-compute.json, meter.txt,
native.json, deadline.txt. Prints Markdown; parts whose files are missing
are skipped.

Usage: wasm_ratios.py [OUT]
"""
import json
import os
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "out", "wasm")


def path(name):
    p = os.path.join(out, name)
    return p if os.path.exists(p) else None


def verdict(ok):
    return "**met**" if ok else "**not met**"


def hyperfine(name):
    """name -> (median, mean, stddev, min) in ms."""
    res = {}
    for r in json.load(open(name))["results"]:
        res[r["command"]] = (r["median"] * 1e3, r["mean"] * 1e3, r["stddev"] * 1e3, r["min"] * 1e3)
    return res


# (a) per-invocation cost
if path("hello.txt"):
    rows = {}
    for line in open(path("hello.txt")):
        m = re.match(r"^(warden \S+|raw wasmtime.*?)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            rows[m.group(1).strip()] = tuple(float(x) for x in m.groups()[1:])
    raw = rows.get("raw wasmtime (Warden's pool settings)")
    raw_async = rows.get("raw wasmtime, async + epoch")
    print("## (a) per-invocation cost (library API, WASI hello)\n")
    print("| variant | median µs | p99 µs | runs/s 1 thread | runs/s 2 threads | median vs raw |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, (med, p99, one, two) in rows.items():
        ratio = f"{med / raw[0]:.2f}×" if raw else ""
        print(f"| {k} | {med:.1f} | {p99:.1f} | {one:,.0f} | {two:,.0f} | {ratio} |")
    w = rows.get("warden run_prepared")
    if w and raw:
        print(f"\nBar: Warden ≤ 1.2× raw wasmtime (same pool settings): run_prepared "
              f"{w[0] / raw[0]:.2f}× — {verdict(w[0] / raw[0] <= 1.2)}"
              + (f" (vs raw wasmtime with the async + epoch machinery Warden's limits need: "
                 f"{w[0] / raw_async[0]:.2f}×)" if raw_async else ""))
        print(f"Bar: ≥ 25,000 runs/s on 2 threads: {w[3]:,.0f} — {verdict(w[3] >= 25000)}\n")

# (b) whole process
if path("cli.json"):
    h = hyperfine(path("cli.json"))
    print("## (b) whole process (hyperfine -N)\n")
    print("| command | median ms | mean ± σ ms | min ms |")
    print("|---|---:|---:|---:|")
    for k, (med, mean, sd, mn) in h.items():
        print(f"| {k} | {med:.2f} | {mean:.2f} ± {sd:.2f} | {mn:.2f} |")
    pairs = [
        ("warden run hello.wasm", "wasmtime run hello.wasm"),
        ("warden run hello.cwasm", "wasmtime run --allow-precompiled hello.cwasm"),
        ("warden-wasm run hello.cwasm", "wasmtime run --allow-precompiled hello.cwasm"),
    ]
    print()
    for a, b in pairs:
        if a in h and b in h:
            r = h[a][0] / h[b][0]
            bar = f" — bar ≤ 1.0×: {verdict(r <= 1.0)}" if "cwasm" in a else ""
            print(f"- {a} / {b}: **{r:.2f}×** (medians; of minimums {h[a][3] / h[b][3]:.2f}×){bar}")
    print()
if path("cli-compute.json"):
    h = hyperfine(path("cli-compute.json"))
    print("| whole process, compute | median ms | vs native |")
    print("|---|---:|---:|")
    for k, (med, mean, sd, mn) in h.items():
        guest = k.split()[-2]
        nat = next((v[0] for n, v in h.items() if n.startswith("native") and guest.split(".")[0] in n), None)
        print(f"| {k} | {med:.1f} | {med / nat:.2f}× |" if nat else f"| {k} | {med:.1f} | |")
    print()

# (c) metering
if path("meter.txt"):
    native = {}
    if path("native.json"):
        h = hyperfine(path("native.json"))
        base = h.get("native hello", (0,))[0]
        for k, v in h.items():
            if k != "native hello":
                native[k.split()[1]] = v[0] - base
    rows = {}
    for line in open(path("meter.txt")):
        m = re.match(r"^(fib|sha256)\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s*$", line)
        if m:
            rows.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    print("## (c) metering (median ms, one process; native: hyperfine minus process start)\n")
    print("| guest | variant | median ms | vs unmetered wasm | vs native |")
    print("|---|---|---:|---:|---:|")
    for g, vs in rows.items():
        base = vs.get("raw wasmtime, no metering")
        nat = native.get(g)
        if nat:
            print(f"| {g} | native (same Rust code) | {nat:.2f} | {nat / base:.2f}× | 1.00× |")
        for k, v in vs.items():
            print(f"| {g} | {k} | {v:.2f} | {v / base:.2f}× | {f'{v / nat:.2f}×' if nat else ''} |")
    print()
    for g, vs in rows.items():
        d, e = vs.get("warden, default limits"), vs.get("raw wasmtime, epoch checks")
        f, fr = vs.get("warden --fuel 10^15"), vs.get("raw wasmtime, fuel")
        if d and e:
            print(f"- {g}: Warden's own overhead, default limits over raw wasmtime with epoch checks: "
                  f"{(d / e - 1) * 100:+.1f}% — bar < 10%: {verdict(d / e < 1.10)}")
        if f and fr:
            print(f"- {g}: Warden --fuel over raw wasmtime with fuel: {(f / fr - 1) * 100:+.1f}% — "
                  f"bar < 10%: {verdict(f / fr < 1.10)}")
    print()

# (d) deadline latency
if path("deadline.txt"):
    print("## (d) deadline latency\n")
    print("```")
    print(open(path("deadline.txt")).read().rstrip())
    if path("deadline-cli.txt"):
        print(open(path("deadline-cli.txt")).read().rstrip())
    print("```")
    worst = 0.0
    for line in open(path("deadline.txt")):
        m = re.match(r"^(.+?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            worst = max(worst, float(m.group(3)))
    print(f"\nBar: median under 5 ms: worst median {worst / 1000:.2f} ms — {verdict(worst < 5000)}")
