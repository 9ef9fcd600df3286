"""Turns bench/run.sh's raw measurements into bench/results/<date>.md (and prints the summary).

Input: environment variables set by run.sh; RAW is a TSV of
setup, case, round, rq/s, p50 us, p99 us, Envoy CPU us per request, requests, non-2xx.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import CASES, RESOLUTION, TARGET, half_width, load, median_ci, throughput_ratio, verdict  # noqa: E402

env = os.environ
rows = [line.rstrip("\n").split("\t") for line in open(env["RAW"]) if line.strip()]
by = load(env["RAW"])


def mean(setup, case, key):
    """The median over rounds: one round disturbed by other load on the machine does not move it."""
    vals = [r[key] for r in by.get((setup, case), {}).values()]
    return statistics.median(vals) if vals else float("nan")


def spread(setup, case, key):
    """min–max over rounds."""
    vals = [r[key] for r in by.get((setup, case), {}).values()]
    return "" if len(vals) < 2 else " (%.0f–%.0f)" % (min(vals), max(vals))


def ci(setup, base, case):
    return median_ci(throughput_ratio(by, setup, base, case))


def fmt(m, lo, hi):
    return "%.3f [%.3f, %.3f]" % (m, lo, hi)


SETUPS = [("plain", "plain Envoy"), ("noop", "Envoy + no-op wasm"),
          ("floor", "Envoy + floor wasm (replay copy only)"), ("mixmode", "Envoy + mixmode"),
          ("affinity", "Envoy + mixmode, affinity configured")]

out = []
out.append("# mixmode benchmark, %s UTC" % env["STAMP"])
out.append("")
out.append("Produced by `just bench` (bench/run.sh). Five Envoys, one per setup, each `--concurrency 1`, "
           "all pinned to core 0 with `taskset` (only the one measured gets traffic); wrk (`-t1 -c%s`, "
           "%s s per run) and the upstream (`bench-upstream`, one thread, answers `200 ok` after reading "
           "the body) share core 1. V8 runtime. **%s rounds** (at least %s, at most %s; stopped on: %s); in "
           "each round every case measures every setup once, in a shuffled order. Envoy CPU per request "
           "is the process's user+system time (/proc) over the requests wrk completed: less sensitive to "
           "other load on the machine than throughput. Ratios are taken within each round (paired) and "
           "given as the median over rounds with a 95%% bootstrap interval of that median "
           "(bench/stats.py)." % (env["CONNS"], env["DUR"], env["ROUNDS"], env["MIN_ROUNDS"],
                                  env["MAX_ROUNDS"], env["STOP_REASON"]))
out.append("")
out.append("## Machine")
out.append("```")
out.append(env.get("MACHINE", "").strip())
out.append("load average before: %s, after: %s" % (env["LOAD_BEFORE"], env["LOAD_AFTER"]))
out.append("priority of Envoy, wrk and upstream: nice %s" % (env.get("BENCH_NICE") or "0 (default)"))
out.append("```")
out.append("")
out.append("## Happy path: throughput and latency")
out.append("")
out.append("| case | setup | rq/s median (min–max over rounds) | p50 µs | p99 µs | Envoy CPU µs/rq |")
out.append("|---|---|---|---|---|---|")
for case, cname in CASES:
    for setup, sname in SETUPS:
        out.append("| %s | %s | %.0f%s | %.0f | %.0f | %.1f |" % (
            cname, sname, mean(setup, case, "rps"), spread(setup, case, "rps"),
            mean(setup, case, "p50"), mean(setup, case, "p99"), mean(setup, case, "cpu")))
out.append("")
out.append("Throughput ratios a dedicated core would show, from Envoy's CPU per request "
           "(a / b = CPU of b / CPU of a, per round): median [95%% interval]. A target is **met** when "
           "the whole interval is at or above it, **missed** when the whole interval is below it, and "
           "**not resolved** when the interval straddles it. ±: the interval's larger distance from the "
           "median (the goal is ±%.0f%%)." % (100 * RESOLUTION))
out.append("")
out.append("| case | mixmode / no-op | ± | target | verdict | mixmode / plain | no-op / plain | rq/s ratio mixmode / no-op (median of rounds) |")
out.append("|---|---|---|---|---|---|---|---|")
summary = []
for case, cname in CASES:
    m = ci("mixmode", "noop", case)
    v = verdict(TARGET[case], *m)
    rq = statistics.median(x for x in (
        by["mixmode", case][r]["rps"] / by["noop", case][r]["rps"]
        for r in set(by.get(("mixmode", case), {})) & set(by.get(("noop", case), {}))) if x == x) \
        if by.get(("mixmode", case)) else float("nan")
    out.append("| %s | %s | ±%.1f%% | ≥ %.2f | %s | %s | %s | %.3f |" % (
        cname, fmt(*m), 100 * half_width(*m), TARGET[case], "**%s**" % v if v != "met" else v,
        fmt(*ci("mixmode", "plain", case)), fmt(*ci("noop", "plain", case)), rq))
    summary.append("%s: mixmode/no-op %s ±%.1f%% (target %.2f: %s)" % (
        cname, fmt(*m), 100 * half_width(*m), TARGET[case], v.upper()))
out.append("")
out.append("The floor filter (`bench/noop-filter` with configuration `floor`) makes only the raw ABI "
           "calls a filter that can replay a request cannot avoid (docs/envoy-facts.md#request-phase): all request headers in "
           "one call, a copy of each body chunk, the response `:status`. no-op → floor is the price of "
           "being able to replay at all; floor → mixmode is what mixmode's own logic adds.")
out.append("")
out.append("| case | floor / no-op | mixmode / floor | ± (mixmode / floor) | CPU µs/rq: no-op → floor | floor → mixmode |")
out.append("|---|---|---|---|---|---|")
for case, cname in CASES:
    cm, cn, cf = (mean(s, case, "cpu") for s in ("mixmode", "noop", "floor"))
    mf = ci("mixmode", "floor", case)
    out.append("| %s | %s | %s | ±%.1f%% | %+.1f | %+.1f |" % (
        cname, fmt(*ci("floor", "noop", case)), fmt(*mf), 100 * half_width(*mf), cf - cn, cm - cf))
    summary.append("%s: floor/no-op %s, mixmode/floor %s" % (
        cname, fmt(*ci("floor", "noop", case)), fmt(*mf)))
out.append("")

out.append("## Version affinity: what it costs")
out.append("")
out.append("The *affinity* setup is the *mixmode* setup with the `affinity` block added (cookie "
           "`mixmode-version`, header `x-mixmode-host`); both have the upstream registered as "
           "version 1 (since 2026-12-03; before, only the affinity setup had the record). "
           "Neither has envoy.yaml's stateful session or header_mutation filter: with one upstream "
           "the hint cannot change the route, so what differs is the filter's own work. The "
           "*cookie* case is a GET with `cookie: session=bench; mixmode-version=1`, in each round "
           "on both setups: with affinity it is hinted (the cookie read, one registry lookup, one "
           "header added); without, mixmode passes it as any request. Same paired ratios as above "
           "(throughput a dedicated core would show, from Envoy's CPU per request).")
out.append("")
out.append("| case | affinity / mixmode | ± | CPU µs/rq: mixmode → affinity | p50 µs mixmode → affinity | rq/s ratio (median of rounds) |")
out.append("|---|---|---|---|---|---|")
for case, cname in CASES + [("cookie", "GET with the cookie: hinted vs plain")]:
    m = ci("affinity", "mixmode", case)
    rq = [by["affinity", case][r]["rps"] / by["mixmode", case][r]["rps"]
          for r in set(by.get(("affinity", case), {})) & set(by.get(("mixmode", case), {}))]
    out.append("| %s | %s | ±%.1f%% | %.1f → %.1f | %.0f → %.0f | %s |" % (
        cname, fmt(*m), 100 * half_width(*m), mean("mixmode", case, "cpu"),
        mean("affinity", case, "cpu"), mean("mixmode", case, "p50"), mean("affinity", case, "p50"),
        "%.3f" % statistics.median(rq) if rq else "n/a"))
    summary.append("%s: affinity/mixmode %s" % (cname, fmt(*m)))
out.append("")
out.append("Counters of the affinity setup after the rounds (`affinity_routed` counts the hinted "
           "requests): `%s`" % env.get("AFFINITY_METRICS", "").strip())
out.append("")

pd, md, mr = (("plain", "direct"), ("mixmode", "direct"), ("mixmode", "rescued"))
p50 = {k: mean(*k, "p50") for k in (pd, md, mr)}
p99 = {k: mean(*k, "p99") for k in (pd, md, mr)}
cpu = {k: mean(*k, "cpu") for k in (pd, md, mr)}
bad = sum(r["bad"] for r in by.get(mr, {}).values())
added = p50[mr] - p50[md]
# A rescue = the original request (as a direct one) + one more upstream request made by Envoy's
# async client (about what plain Envoy spends on a request) + the filter's own work.
filter_cpu = cpu[mr] - cpu[md] - cpu[pd]
out.append("## Recovery path: a rescued request against a direct one")
out.append("")
out.append("One connection, requests back to back (wrk `-c1`, 5 s). `/mismatch` makes the upstream answer "
           "409 with `x-session-version: 2`, `x-app-version: 1`; mixmode re-dispatches it to a registered "
           "v2 peer (a second `bench-upstream`), and the client gets the peer's 200. Check of one such "
           "request: `%s`; non-2xx answers during the rescued run: %d." % (env.get("check", "").strip(), bad))
out.append("")
out.append("| request | p50 µs | p99 µs | Envoy CPU µs/rq |")
out.append("|---|---|---|---|")
for k, name in ((pd, "direct, plain Envoy"), (md, "direct, Envoy + mixmode"), (mr, "rescued, Envoy + mixmode")):
    out.append("| %s | %.0f | %.0f | %.1f |" % (name, p50[k], p99[k], cpu[k]))
out.append("")
out.append("- Added latency of a rescue (p50 rescued − p50 direct, both through mixmode): **%.0f µs** "
           "(%.2f× the direct request)." % (added, p50[mr] / p50[md]))
out.append("- Filter time of a rescue, estimated from Envoy's CPU: rescued − direct (mixmode) − one "
           "plain proxied request (the extra upstream round trip) = **%.0f µs** (target < 100 µs: %s). "
           "This charges Envoy's async-client overhead beyond a plain proxied request to the filter, "
           "so it is an upper bound." % (filter_cpu, "met" if filter_cpu < 100 else "**missed**"))
out.append("- mixmode's counters after the rescue run: `%s`" % env.get("METRICS", "").strip())
out.append("")
summary.append("rescue: +%.0f us p50 over direct (%.2fx); filter CPU estimate %.0f us (target < 100: %s)"
               % (added, p50[mr] / p50[md], filter_cpu, "met" if filter_cpu < 100 else "MISSED"))
out.append("## Other wasm runtimes")
out.append("")
out.append(env.get("RUNTIMES", "").rstrip())
out.append("")
out.append("## Raw runs")
out.append("")
out.append("| setup | case | round | rq/s | p50 µs | p99 µs | CPU µs/rq | requests | non-2xx |")
out.append("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    out.append("| " + " | ".join(r) + " |")
out.append("")
with open(env["OUT"], "w") as f:
    f.write("\n".join(out))
print("\n".join(summary))
