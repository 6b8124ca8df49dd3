"""Summarizes bench/egress/run.sh rounds: medians, spreads, ratios, bars."""
import json
import statistics
import sys

rows = {"direct": [], "warden": []}
for line in sys.stdin:
    kind, _, data = line.partition(" ")
    if kind in rows:
        rows[kind].append(json.loads(data))
        print(line.rstrip())
    else:
        print(line.rstrip())


def med(kind, key):
    return statistics.median(r[key] for r in rows[kind])


def spread(kind, key):
    v = [r[key] for r in rows[kind]]
    return f"{min(v):.1f}-{max(v):.1f}"


for key in ["connect_p50_us", "connect_p99_us", "connect_mean_us", "throughput_mib_s"]:
    d, w = med("direct", key), med("warden", key)
    print(f"{key:18} direct {d:9.1f} ({spread('direct', key)})  "
          f"warden {w:9.1f} ({spread('warden', key)})  ratio {w / d:5.2f}")
d, w = med("direct", "connect_p50_us"), med("warden", "connect_p50_us")
ok = "met" if w <= 1.5 * d + 100 else "NOT met"
print(f"bar connect p50: warden {w:.1f} us <= 1.5 x {d:.1f} + 100 = {1.5 * d + 100:.1f} us: {ok}")
d, w = med("direct", "throughput_mib_s"), med("warden", "throughput_mib_s")
ok = "met" if w >= 0.8 * d else "NOT met"
print(f"bar throughput: warden {w / d * 100:.0f}% of direct (>= 80%): {ok}")
