#!/usr/bin/env python3
"""Read hyperfine's JSON export from bench/startup.sh and print a table and ratios.

Usage: bench/ratios.py bench/out/startup.json

Command names must be "<runner> <program>", runner in bare/unshare/bwrap/warden.
Prints markdown: per-command mean ± stddev, median, min (ms), then the ratios
warden/bwrap, warden/unshare, warden/bare (of means and of medians) per program,
and whether warden meets the bar (warden <= 1.0x bwrap).
"""
import json
import math
import sys


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/out/startup.json"
    with open(path) as f:
        results = json.load(f)["results"]

    stats = {}
    order = []
    for r in results:
        runner, prog = r["command"].split(" ", 1)
        stats[(runner, prog)] = r
        if prog not in order:
            order.append(prog)

    ms = lambda s: s * 1000.0  # noqa: E731
    print("| command | mean ± σ (ms) | median (ms) | min (ms) | runs |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['command']} | {ms(r['mean']):.2f} ± {ms(r['stddev'] or 0):.2f} "
            f"| {ms(r['median']):.2f} | {ms(r['min']):.2f} | {len(r['times'])} |"
        )
    print()
    print("| program | ratio | of means | of medians | of minimums |")
    print("|---|---|---:|---:|---:|")
    verdicts = []
    for prog in order:
        w = stats.get(("warden", prog))
        if w is None:
            continue
        for base in ("bwrap", "unshare", "bare"):
            b = stats.get((base, prog))
            if b is None:
                continue
            rm = w["mean"] / b["mean"]
            # propagated stddev of the ratio of means (independent samples)
            sm = rm * math.sqrt(
                ((w["stddev"] or 0) / w["mean"]) ** 2 + ((b["stddev"] or 0) / b["mean"]) ** 2
            )
            print(
                f"| {prog} | warden/{base} | {rm:.2f}× ± {sm:.2f} "
                f"| {w['median'] / b['median']:.2f}× | {w['min'] / b['min']:.2f}× |"
            )
            if base == "bwrap":
                verdicts.append((prog, rm, w["median"] / b["median"]))
    print()
    for prog, rm, rmed in verdicts:
        ok = "meets" if rmed <= 1.0 and rm <= 1.0 else "MISSES"
        print(
            f"- {prog}: warden/bwrap = {rm:.2f}× (means), {rmed:.2f}× (medians) — "
            f"{ok} the bar (≤ 1.0×)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
