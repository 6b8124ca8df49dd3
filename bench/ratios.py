#!/usr/bin/env python3
"""Read hyperfine's JSON export from bench/startup.sh and print a table and ratios.

Usage: bench/ratios.py bench/out/startup.json [MORE.json ...]

With several files (rounds of the same commands, see ROUNDS in startup.sh),
the times of each command are pooled over the rounds, and the warden/bwrap
ratio of medians of every round is printed too: load that changes during a
run then hits every command alike.

Command names must be "<runner> <program>", runner in bare/unshare/bwrap/
bwrap-noetc/warden.
Prints markdown: per-command mean ± stddev, median, min (ms), then the ratios
warden/bwrap, warden/unshare, warden/bare (of means and of medians) per program,
and whether warden meets the bar (warden <= 1.0x bwrap).
"""
import json
import math
import statistics
import sys


def main() -> int:
    paths = sys.argv[1:] or ["bench/out/startup.json"]
    rounds = []
    for path in paths:
        with open(path) as f:
            rounds.append(json.load(f)["results"])
    results = pool(rounds)

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
    noetc = []
    for prog in order:
        w = stats.get(("warden", prog))
        if w is None:
            continue
        for base in ("bwrap", "bwrap-noetc", "unshare", "bare"):
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
            if base == "bwrap-noetc":
                noetc.append((prog, rm, w["median"] / b["median"]))
    if len(rounds) > 1:
        print()
        print("| program | ratio of medians | per round | median of rounds |")
        print("|---|---|---|---:|")
        for prog in order:
            for base in ("bwrap", "bwrap-noetc"):
                per = []
                for rnd in rounds:
                    by = {r["command"]: r for r in rnd}
                    w, b = by.get(f"warden {prog}"), by.get(f"{base} {prog}")
                    if w and b:
                        per.append(
                            statistics.median(w["times"]) / statistics.median(b["times"])
                        )
                if per:
                    shown = " ".join(f"{x:.2f}" for x in per)
                    print(
                        f"| {prog} | warden/{base} | {shown} | {statistics.median(per):.2f}× |"
                    )
    print()
    for prog, rm, rmed in verdicts:
        ok = "meets" if rmed <= 1.0 and rm <= 1.0 else "MISSES"
        print(
            f"- {prog}: warden/bwrap = {rm:.2f}× (means), {rmed:.2f}× (medians) — "
            f"{ok} the bar (≤ 1.0×)"
        )
    for prog, rm, rmed in noetc:
        print(
            f"- {prog}: warden/bwrap-noetc (bwrap without /etc) = {rm:.2f}× (means), "
            f"{rmed:.2f}× (medians)"
        )
    return 0


def pool(rounds):
    """One result per command with the times of every round."""
    if len(rounds) == 1:
        return rounds[0]
    pooled = {}
    for rnd in rounds:
        for r in rnd:
            pooled.setdefault(r["command"], []).extend(r["times"])
    out = []
    for command, times in pooled.items():
        out.append(
            {
                "command": command,
                "times": times,
                "mean": statistics.mean(times),
                "stddev": statistics.stdev(times) if len(times) > 1 else 0.0,
                "median": statistics.median(times),
                "min": min(times),
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
