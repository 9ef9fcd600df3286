"""Turns bench/run.sh's raw measurements into bench/results/<date>.md (and prints the summary).

Input: environment variables set by run.sh; RAW is a TSV of
setup, case, round, rq/s, p50 us, p99 us, Envoy CPU us per request, requests, non-2xx.
"""

import os
import statistics
from collections import defaultdict

env = os.environ
rows = [line.rstrip("\n").split("\t") for line in open(env["RAW"]) if line.strip()]
by = defaultdict(list)
for setup, case, rnd, rps, p50, p99, cpu, n, bad in rows:
    by[(setup, case)].append(
        dict(rps=float(rps), p50=float(p50), p99=float(p99), cpu=float(cpu), n=int(n), bad=int(bad))
    )


def mean(setup, case, key):
    """The median over rounds: one round disturbed by other load on the machine does not move it."""
    vals = [r[key] for r in by.get((setup, case), [])]
    return statistics.median(vals) if vals else float("nan")


def spread(setup, case, key):
    vals = [r[key] for r in by.get((setup, case), [])]
    return "" if len(vals) < 2 else " (%s)" % ", ".join("%.0f" % v for v in vals)


CASES = [("get", "GET /"), ("post1k", "POST 1 KiB"), ("post64k", "POST 64 KiB")]
SETUPS = [("plain", "plain Envoy"), ("noop", "Envoy + no-op wasm"),
          ("floor", "Envoy + floor wasm (replay copy only)"), ("mixmode", "Envoy + mixmode")]
TARGET = {"get": 0.97, "post1k": 0.95, "post64k": 0.95}

out = []
out.append("# mixmode benchmark, %s UTC" % env["STAMP"])
out.append("")
out.append("Produced by `just bench` (bench/run.sh). Envoy `--concurrency 1` pinned to core 0 with "
           "`taskset`; wrk (`-t1 -c%s`, %s s per run, %s round(s), setups alternating within a round) "
           "and the upstream (`bench-upstream`, one thread, answers `200 ok` after reading the body) "
           "share core 1. V8 runtime. Envoy CPU per request is the process's user+system time "
           "(/proc) over the requests wrk completed: less sensitive to other load on the machine than "
           "throughput." % (env["CONNS"], env["DUR"], env["ROUNDS"]))
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
out.append("| case | setup | rq/s (per round) | p50 µs | p99 µs | Envoy CPU µs/rq |")
out.append("|---|---|---|---|---|---|")
for case, cname in CASES:
    for setup, sname in SETUPS:
        out.append("| %s | %s | %.0f%s | %.0f | %.0f | %.1f |" % (
            cname, sname, mean(setup, case, "rps"), spread(setup, case, "rps"),
            mean(setup, case, "p50"), mean(setup, case, "p99"), mean(setup, case, "cpu")))
out.append("")
out.append("Ratios two ways: from wrk's throughput (medians over rounds), and from Envoy's CPU per "
           "request (no-op CPU / mixmode CPU: the throughput ratio a dedicated core would show). On a "
           "machine where other processes compete for the cores (see the load average above) the "
           "throughput ratio is mostly noise; the CPU ratio is the one to judge the target by.")
out.append("")
out.append("| case | mixmode / no-op (rq/s) | mixmode / plain (rq/s) | no-op / plain (rq/s) | mixmode / no-op (CPU) | mixmode / plain (CPU) | target | met (CPU) | CPU µs/rq mixmode adds over no-op |")
out.append("|---|---|---|---|---|---|---|---|---|")
summary = []
for case, cname in CASES:
    m, n, p = (mean(s, case, "rps") for s in ("mixmode", "noop", "plain"))
    cm, cn, cp = (mean(s, case, "cpu") for s in ("mixmode", "noop", "plain"))
    cpu_ratio = cn / cm
    met = "yes" if cpu_ratio >= TARGET[case] else "**no**"
    out.append("| %s | %.3f | %.3f | %.3f | %.3f | %.3f | ≥ %.2f | %s | %+.1f |" % (
        cname, m / n, m / p, n / p, cpu_ratio, cp / cm, TARGET[case], met, cm - cn))
    summary.append("%s: mixmode/no-op %.3f by CPU, %.3f by rq/s (target %.2f: %s); mixmode/plain %.3f by CPU, "
                   "%.3f by rq/s; mixmode adds %+.1f us CPU/rq over no-op"
                   % (cname, cpu_ratio, m / n, TARGET[case], "met" if cpu_ratio >= TARGET[case] else "MISSED",
                      cp / cm, m / p, cm - cn))
out.append("")
out.append("The floor filter (`bench/noop-filter` with configuration `floor`) makes only the raw ABI "
           "calls a filter that can replay a request cannot avoid (design §3a): all request headers in "
           "one call, a copy of each body chunk, the response `:status`. no-op → floor is the price of "
           "being able to replay at all; floor → mixmode is what mixmode's own logic adds.")
out.append("")
out.append("| case | floor / no-op (CPU) | mixmode / floor (CPU) | CPU µs/rq: no-op → floor | floor → mixmode |")
out.append("|---|---|---|---|---|")
for case, cname in CASES:
    cm, cn, cf = (mean(s, case, "cpu") for s in ("mixmode", "noop", "floor"))
    out.append("| %s | %.3f | %.3f | %+.1f | %+.1f |" % (cname, cn / cf, cf / cm, cf - cn, cm - cf))
    summary.append("%s: floor/no-op %.3f by CPU (%+.1f us), mixmode/floor %.3f (%+.1f us)"
                   % (cname, cn / cf, cf - cn, cf / cm, cm - cf))
out.append("")

pd, md, mr = (("plain", "direct"), ("mixmode", "direct"), ("mixmode", "rescued"))
p50 = {k: mean(*k, "p50") for k in (pd, md, mr)}
p99 = {k: mean(*k, "p99") for k in (pd, md, mr)}
cpu = {k: mean(*k, "cpu") for k in (pd, md, mr)}
bad = sum(r["bad"] for r in by.get(mr, []))
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
