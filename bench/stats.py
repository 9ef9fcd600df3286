"""Ratios from interleaved rounds, with confidence intervals (used by report.py and run.sh).

A round measures every setup once per case, back to back in a shuffled order, so the machine's
load is about the same for all of them; the ratio of two setups is therefore taken within each
round (paired), and the rounds give its distribution. Reported: the median over rounds and a
95% percentile-bootstrap interval of that median (resampling rounds, fixed seed, so a result
file can be recomputed exactly).

    python3 bench/stats.py check RAW   # exit 0 when every target ratio's interval is within ±3%
"""

import random
import statistics
import sys
from collections import defaultdict

CASES = [("get", "GET /"), ("post1k", "POST 1 KiB"), ("post64k", "POST 64 KiB")]
# mixmode / no-op wasm, judged by Envoy's CPU per request.
TARGET = {"get": 0.97, "post1k": 0.95, "post64k": 0.95}
# An interval is "resolved" when it is this tight around its median (±3%).
RESOLUTION = 0.03
RESAMPLES = 4000


def load(path):
    """RAW TSV -> {(setup, case): {round: row}}."""
    by = defaultdict(dict)
    for line in open(path):
        if not line.strip():
            continue
        setup, case, rnd, rps, p50, p99, cpu, n, bad = line.rstrip("\n").split("\t")
        by[(setup, case)][int(rnd)] = dict(
            rps=float(rps), p50=float(p50), p99=float(p99), cpu=float(cpu), n=int(n), bad=int(bad))
    return by


def paired(by, num, den, case, key="cpu"):
    """Per round: num's value / den's value, for rounds that measured both. For CPU per
    request the lower is better, so callers pass (faster-is-num) the way the ratio should
    read: throughput(a)/throughput(b) = cpu(b)/cpu(a)."""
    a, b = by.get((num, case), {}), by.get((den, case), {})
    return [a[r][key] / b[r][key] for r in sorted(set(a) & set(b)) if b[r][key] > 0]


def throughput_ratio(by, setup, base, case):
    """setup's throughput on a dedicated core relative to base's: cpu(base) / cpu(setup)."""
    return paired(by, base, setup, case)


def median_ci(values, seed=1):
    """(median, low, high): the 95% percentile-bootstrap interval of the median."""
    if not values:
        return (float("nan"),) * 3
    med = statistics.median(values)
    if len(values) < 3:
        return med, float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(RESAMPLES))
    return med, meds[int(0.025 * RESAMPLES)], meds[int(0.975 * RESAMPLES) - 1]


def half_width(med, lo, hi):
    """The interval's larger distance from the median, relative to it."""
    if med != med or lo != lo or med == 0:
        return float("inf")
    return max(med - lo, hi - med) / med


def verdict(target, med, lo, hi):
    """met: the whole interval at or above the target; missed: the whole interval below it;
    not resolved: the interval straddles it."""
    if lo != lo:
        return "not resolved"
    if lo >= target:
        return "met"
    if hi < target:
        return "missed"
    return "not resolved"


def target_intervals(by):
    """{case: (median, low, high)} of mixmode / no-op by CPU, the ratios the targets judge."""
    return {c: median_ci(throughput_ratio(by, "mixmode", "noop", c)) for c, _ in CASES}


def resolved(by):
    """Whether every target ratio, and mixmode / floor, is known within ±RESOLUTION."""
    for c, _ in CASES:
        for setup, base in (("mixmode", "noop"), ("mixmode", "floor")):
            if half_width(*median_ci(throughput_ratio(by, setup, base, c))) > RESOLUTION:
                return False
    return True


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        by = load(sys.argv[2])
        for c, name in CASES:
            med, lo, hi = median_ci(throughput_ratio(by, "mixmode", "noop", c))
            fm, flo, fhi = median_ci(throughput_ratio(by, "mixmode", "floor", c))
            print("  %-11s mixmode/no-op %.3f [%.3f, %.3f] ±%.1f%%   mixmode/floor %.3f [%.3f, %.3f] ±%.1f%%"
                  % (name, med, lo, hi, 100 * half_width(med, lo, hi),
                     fm, flo, fhi, 100 * half_width(fm, flo, fhi)), file=sys.stderr)
        for c, name in CASES + [("cookie", "cookie")]:
            am, alo, ahi = median_ci(throughput_ratio(by, "affinity", "mixmode", c))
            if am == am:
                print("  %-11s affinity/mixmode %.3f [%.3f, %.3f]" % (name, am, alo, ahi),
                      file=sys.stderr)
        sys.exit(0 if resolved(by) else 1)
    print(__doc__, file=sys.stderr)
    sys.exit(2)
