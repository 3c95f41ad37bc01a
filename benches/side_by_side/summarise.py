"""Summary of benches/side_by_side.sh: per connection count and target, the medians of req/s,
p50, p99 and server CPU per request, and each target's ratio to `ref` paired by round (median,
min-max). Ratios are oriented so that > 1 means "more than the reference": throughput ratio
> 1 is faster, latency and CPU ratios > 1 are slower / costlier.

usage: python3 summarise.py results.tsv CLK_TCK [simulator-stats-json]
"""

import csv
import json
import statistics
import sys
from collections import defaultdict


def micros(text):
    """wrk's latency ("812.00us", "1.20ms", "2.00s") in microseconds."""
    for unit, scale in (("us", 1.0), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


def spread(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    path, clk_tck = sys.argv[1], int(sys.argv[2])
    rows = defaultdict(dict)  # (conns, round) -> target -> metrics
    targets = []
    for r in csv.DictReader(open(path), delimiter="\t"):
        if r["target"] not in targets:
            targets.append(r["target"])
        requests = int(r["requests"])
        rows[(int(r["conns"]), int(r["round"]))][r["target"]] = {
            "rps": float(r["rps"]),
            "p50": micros(r["p50"]),
            "p99": micros(r["p99"]),
            "cpu": int(r["cpu_ticks"]) * 1e6 / clk_tck / max(requests, 1),
        }
    for conns in sorted({c for c, _ in rows}):
        rounds = [rows[k] for k in sorted(rows) if k[0] == conns]
        print(f"\n-- {conns} connection(s), {len(rounds)} rounds "
              "(medians; ratios to ref paired by round: median (min-max))")
        print(f"{'target':<7}{'req/s':>10}{'p50 us':>9}{'p99 us':>9}{'CPU us/req':>11}"
              f"   {'x ref req/s':<18}{'x ref p50':<18}{'x ref p99':<18}{'x ref CPU/req':<18}")
        for t in targets:
            runs = [r[t] for r in rounds if t in r and "ref" in r]
            if not runs:
                continue
            med = {m: statistics.median(x[m] for x in runs) for m in ("rps", "p50", "p99", "cpu")}
            ratios = {
                m: spread([r[t][m] / r["ref"][m] for r in rounds if r["ref"][m] > 0])
                for m in ("rps", "p50", "p99", "cpu")
            }
            print(f"{t:<7}{med['rps']:>10.0f}{med['p50']:>9.0f}{med['p99']:>9.0f}{med['cpu']:>11.1f}"
                  f"   {ratios['rps']:<18}{ratios['p50']:<18}{ratios['p99']:<18}{ratios['cpu']:<18}")
        gw_vs_nginx = [r["gw"]["rps"] / r["nginx"]["rps"] for r in rounds]
        print(f"gw / nginx req/s, paired by round: {spread(gw_vs_nginx)}")
        if "gw0" in targets:
            for m, label in (("rps", "req/s"), ("cpu", "CPU/req"), ("p50", "p50")):
                pairs = [r["gw"][m] / r["gw0"][m] for r in rounds if r["gw0"][m] > 0]
                print(f"gw / gw0 {label}, paired by round: {spread(pairs)}")
    if len(sys.argv) > 3:
        calls = json.loads(sys.argv[3]).get("calls", {})
        print(f"\nsimulator calls (priming only; every measured request was a hit): {calls}")


main()
