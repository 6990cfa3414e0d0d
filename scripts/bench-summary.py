#!/usr/bin/env python3
"""Summarizes scripts/bench-vs-peers.sh output: per workload, the median of
each (build, impl) over the rounds, its spread (min..max), and the ratio of
the project's own implementation to the best bounded C peer measured in the
same session.

    scripts/bench-summary.py results.jsonl            a Markdown table
    scripts/bench-summary.py --check results.jsonl    also fail (exit 1) if any
                                                      line has "checked": false

The metric is throughput (Mops, higher is better) where the workload reports
it, otherwise ns_per_op (lower is better; the ratio is then peer/ours, so
above 1.0 always means ahead).
"""
import json
import statistics
import sys
from collections import defaultdict

# The project's own implementation per workload (the others are baselines).
OWN = {"pcq-1p1c": "pcq", "pcq-2p1c": "pcq", "rcu-lookup": "rcu_hash", "rcu-churn": "rcu_hash",
       "mailbox-pingpong": "mailbox", "mailbox-stream": "mailbox", "defer-coalesce": "kcont",
       "demux": "fastpath", "kernel-udp": "linux_udp"}
# Peers that break the workload's bounds (unbounded queues): shown, not compared.
UNBOUNDED = {"moodycamel_unbounded"}


def main(argv):
    check = "--check" in argv
    paths = [a for a in argv if not a.startswith("--")]
    rows = [json.loads(l) for p in paths for l in open(p) if l.strip().startswith("{")]
    unchecked = [r for r in rows if r.get("checked") is False]
    runs = defaultdict(list)
    for r in rows:
        if r.get("workload") == "c2c-latency":
            runs[("c2c-latency", "peer", r["impl"])].append(r.get("ns_per_op"))
            continue
        metric = "mops" if r.get("mops") is not None else "ns_per_op"
        runs[(r["workload"], r.get("build", "project"), r["impl"])].append((metric, r.get(metric)))
    print("| workload | build | impl | metric | median | min..max | n |")
    print("|---|---|---|---|---|---|---|")
    medians = {}
    for (w, b, impl), vals in sorted(runs.items()):
        if w == "c2c-latency":
            xs = [v for v in vals if v is not None]
            metric = "ns_per_op"
        else:
            metric = vals[0][0]
            xs = [v for _, v in vals if v is not None]
        if not xs:
            continue
        m = statistics.median(xs)
        medians[(w, b, impl)] = (metric, m)
        print(f"| {w} | {b} | {impl} | {metric} | {m:.3f} | {min(xs):.3f}..{max(xs):.3f} | {len(xs)} |")
    print()
    print("| workload | build | own impl | best bounded peer | ratio (>1 = ahead) |")
    print("|---|---|---|---|---|")
    for w in sorted({k[0] for k in medians if k[0] != "c2c-latency"}):
        own = OWN.get(w)
        peers = [(impl, mv) for (ww, b, impl), mv in medians.items()
                 if ww == w and b == "peer" and impl not in UNBOUNDED]
        if not own or not peers:
            continue
        metric = peers[0][1][0]
        best = max(peers, key=lambda p: p[1][1]) if metric == "mops" else min(peers, key=lambda p: p[1][1])
        for b in ("baseline", "project"):
            if (w, b, own) not in medians:
                continue
            mine = medians[(w, b, own)][1]
            ratio = mine / best[1][1] if metric == "mops" else best[1][1] / mine
            print(f"| {w} | {b} | {own} {mine:.3f} | {best[0]} {best[1][1]:.3f} | {ratio:.2f}x |")
    if unchecked:
        print(f"\n{len(unchecked)} line(s) with checked=false:", file=sys.stderr)
        for r in unchecked:
            print(f"  {r.get('workload')} {r.get('impl')} ({r.get('build')})", file=sys.stderr)
        if check:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
