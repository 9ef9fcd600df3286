"""Paired p50/p99 step-latency ratios, mixmode+affinity over mixmode, from the rounds
bench/affinity-p99.sh ran: the median over rounds with a 95% percentile-bootstrap interval
(bench/stats.py's median_ci: 4000 resamples, fixed seed).

    python3 bench/affinity_p99.py OUT/raw.tsv [OUT2/raw.tsv ...]

With the steps in each summary.json (the demo writes them), also where the time goes
(`kinds`: rescued vs unrescued, hinted vs plain steps sent at the same time).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import median_ci  # noqa: E402


def load(path):
    runs = {}
    for line in open(path):
        if not line.strip():
            continue
        r, seed, order, setup, p50, p99, steps, rescued, transfers, failed, load = (
            line.rstrip("\n").split("\t"))
        runs.setdefault(int(r), {"seed": seed, "order": order, "load": float(load)})[setup] = dict(
            p50=float(p50), p99=float(p99), steps=int(steps), rescued=int(rescued),
            transfers=int(transfers), failed=int(failed))
    return runs


def main(paths):
    pooled = {"p50": [], "p99": []}
    for path in paths:
        runs = load(path)
        print(f"## {path}\n")
        print("round | seed | first            | load | p99 mixmode | p99 affinity | p99 ratio "
              "| p50 mixmode | p50 affinity | p50 ratio | rescued (m / a) | lost (m / a)")
        ratios = {"p50": [], "p99": []}
        loads = []
        for r, run in sorted(runs.items()):
            m, a = run.get("mixmode"), run.get("mixmode+affinity")
            if not m or not a:
                continue
            row = {k: a[k] / m[k] for k in ("p50", "p99")}
            for k in row:
                ratios[k].append(row[k])
                pooled[k].append(row[k])
            loads.append(run["load"])
            print(f"{r:5} | {run['seed']:>4} | {run['order'].split(',')[0]:<16} | {run['load']:4.1f} "
                  f"| {m['p99']:11.2f} | {a['p99']:12.2f} | {row['p99']:9.3f} "
                  f"| {m['p50']:11.2f} | {a['p50']:12.2f} | {row['p50']:9.3f} "
                  f"| {m['rescued']:>5} / {a['rescued']:<5} | {m['failed']} / {a['failed']}")
        print()
        for k in ("p99", "p50"):
            med, lo, hi = median_ci(ratios[k])
            worse = sum(1 for x in ratios[k] if x > 1)
            print(f"{k} ratio affinity/mixmode: median {med:.3f} [{lo:.3f}, {hi:.3f}] over "
                  f"{len(ratios[k])} rounds ({worse} worse with affinity)")
        if loads:
            print(f"load average (1 min) at round start: {min(loads):.1f} to {max(loads):.1f}\n")
    if len(paths) > 1:
        for k in ("p99", "p50"):
            med, lo, hi = median_ci(pooled[k])
            worse = sum(1 for x in pooled[k] if x > 1)
            print(f"all files, {k} ratio affinity/mixmode: median {med:.3f} [{lo:.3f}, {hi:.3f}] "
                  f"over {len(pooled[k])} rounds ({worse} worse with affinity)")
        print()




def pct(sorted_values, q):
    """The demo's percentile (demo/src/run.rs percentile_ms): nearest rank."""
    if not sorted_values:
        return float("nan")
    i = round((len(sorted_values) - 1) * q)
    return sorted_values[min(i, len(sorted_values) - 1)]


def kinds(out_dir, window_ms=500):
    """From each round's summary.json steps: where the time goes.
    - unrescued steps only (a rescued step is two upstream requests): p50 and p99 of the
      affinity run over the mixmode run, paired by round;
    - within the affinity run, a hinted step (cookie, not rescued) against a plain step (no
      cookie, not rescued) sent in the same `window_ms` window (same machine load): the median
      over windows of the ratio of their medians, per round."""
    import glob
    import json
    import statistics
    rows = {"p50 unrescued": [], "p99 unrescued": [], "hinted/plain same window": [],
            "p99 all": []}
    print(f"## step kinds, {out_dir}\n")
    print("round | unrescued p50 m / a | unrescued p99 m / a | rescued share m / a "
          "| hinted/plain (same 0.5 s window) | windows")
    for path in sorted(glob.glob(os.path.join(out_dir, "r*", "summary.json")),
                       key=lambda p: int(p.split("/")[-2][1:])):
        r = int(path.split("/")[-2][1:])
        runs = {s["setup"]: s for s in json.load(open(path))}
        m, a = runs.get("mixmode"), runs.get("mixmode+affinity")
        if not m or not a or "steps" not in m:
            continue
        un = {k: sorted(s["us"] for s in v["steps"] if not s["rescued"]) for k, v in
              (("m", m), ("a", a))}
        share = {k: sum(1 for s in v["steps"] if s["rescued"]) / len(v["steps"]) for k, v in
                 (("m", m), ("a", a))}
        rows["p50 unrescued"].append(pct(un["a"], .5) / pct(un["m"], .5))
        rows["p99 unrescued"].append(pct(un["a"], .99) / pct(un["m"], .99))
        win = {}
        for s in a["steps"]:
            if s["rescued"]:
                continue
            win.setdefault(s["at_ms"] // window_ms, ([], []))[0 if s["cookie"] else 1].append(
                s["us"])
        ratios = [statistics.median(h) / statistics.median(p) for h, p in win.values()
                  if len(h) >= 3 and len(p) >= 3]
        if ratios:
            rows["hinted/plain same window"].append(statistics.median(ratios))
        print(f"{r:5} | {pct(un['m'], .5)/1000:6.2f} / {pct(un['a'], .5)/1000:6.2f} "
              f"| {pct(un['m'], .99)/1000:7.2f} / {pct(un['a'], .99)/1000:7.2f} "
              f"| {share['m']:5.1%} / {share['a']:5.1%} "
              f"| {statistics.median(ratios) if ratios else float('nan'):.3f} | {len(ratios)}")
    print()
    for k, v in rows.items():
        if not v:
            continue
        med, lo, hi = median_ci(v)
        print(f"{k}: median {med:.3f} [{lo:.3f}, {hi:.3f}] over {len(v)} rounds "
              f"({sum(1 for x in v if x > 1)} above 1)")
    print()
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
    all_rows = {}
    for p in sys.argv[1:]:
        for k, v in kinds(os.path.dirname(p)).items():
            all_rows.setdefault(k, []).extend(v)
    if len(sys.argv) > 2:
        for k, v in all_rows.items():
            if v:
                med, lo, hi = median_ci(v)
                print(f"all files, {k}: median {med:.3f} [{lo:.3f}, {hi:.3f}] over {len(v)} rounds "
                      f"({sum(1 for x in v if x > 1)} above 1)")
