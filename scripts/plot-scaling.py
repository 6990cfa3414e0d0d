#!/usr/bin/env python3
"""Turns scripts/bench-scaling.sh output into docs/scaling.png and Markdown
tables (on stdout): per demux flow count, Mpps of the project's fast path and
of each C peer (median and min..max over the rounds), their ratio, resident
memory and the fast path's table probes; per rcu-churn key count, reader
Mops, writer updates/s and the reclamation backlog.

    scripts/plot-scaling.py docs/results/2026-12-01-scaling.jsonl [--out docs/scaling.png]

Ratios are ours / best peer: the median of our runs over the median of the
best peer's, and in brackets the range of the per-round ratios (each round's
own runs, measured minutes apart). Needs matplotlib (pip install
matplotlib) for the PNG; the tables are printed without it (--no-plot).
"""
import json
import statistics
import sys
from collections import defaultdict

OWN = {"demux": "fastpath", "rcu-churn": "rcu_hash"}
SIZE = {"demux": "flows", "rcu-churn": "keys"}


def load(paths):
    lines = []
    for p in paths:
        with open(p) as f:
            lines += [json.loads(l) for l in f if l.strip()]
    return lines


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt):
    return f"{fmt(med(xs))} ({fmt(min(xs))}–{fmt(max(xs))})" if xs else "—"


def collect(lines, workload, field):
    """{size: {impl: {round: value}}} for lines of `workload` with `field`."""
    out = defaultdict(lambda: defaultdict(dict))
    for d in lines:
        if d.get("workload") != workload or SIZE[workload] not in d or field not in d:
            continue
        out[d[SIZE[workload]]][d["impl"]][d.get("round", 0)] = d[field]
    return out


def ratio_cells(by_impl, own):
    """Median ratio own/best peer and the per-round ratio range."""
    peers = [i for i in by_impl if i != own]
    if own not in by_impl or not peers:
        return "—", None
    best = max(peers, key=lambda i: med(list(by_impl[i].values())))
    mine = med(list(by_impl[own].values()))
    r = mine / med(list(by_impl[best].values()))
    per_round = [by_impl[own][k] / by_impl[best][k] for k in by_impl[own] if k in by_impl[best]]
    rng = f" ({min(per_round):.2f}–{max(per_round):.2f})" if per_round else ""
    return f"{r:.2f}x{rng} vs {best}", best


def f2(v):
    return f"{v:.2f}"


def mib(v):
    return f"{v / 1024:,.0f}"


def demux_table(lines):
    mpps = collect(lines, "demux", "mops")
    setup = collect(lines, "demux", "rss_setup_kb")
    peak = collect(lines, "demux", "rss_peak_kb")
    own = OWN["demux"]
    impls = sorted({i for s in mpps.values() for i in s}, key=lambda i: (i != own, i))
    print("| flows | " + " | ".join(f"{i} Mpps" for i in impls) + " | ratio ours/best peer (per-round range) | "
          + " | ".join(f"{i} RSS setup / peak MiB" for i in impls) + " |")
    print("|---" * (2 + 2 * len(impls)) + "|")
    for n in sorted(mpps):
        cells = [spread(list(mpps[n][i].values()), f2) if i in mpps[n] else "—" for i in impls]
        ratio, _ = ratio_cells(mpps[n], own)
        mem = [f"{mib(med(list(setup[n][i].values())))} / {mib(med(list(peak[n][i].values())))}"
               if i in setup[n] else "—" for i in impls]
        print(f"| {n:,} | " + " | ".join(cells) + f" | {ratio} | " + " | ".join(mem) + " |")
    print()
    # The fast path's table and the frame set, per size (the same every round).
    print("| flows | flows seen in the frames | exact-lookup misses per pass | buckets | longest chain "
          "| probes per hit | probes per miss | input CPU ns/packet (ours, median) | consumer CPU ns/delivered (ours) "
          "| wake-ups per delivered (ours / c_lfht_ring) | queue_full drops (ours / c_lfht_ring) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in sorted((d for d in lines if d.get("workload") == "demux" and d.get("impl") == own and "table" in d),
                    key=lambda d: d["flows"]):
        if d.get("round") != min(x.get("round", 0) for x in lines
                                 if x.get("workload") == "demux" and x.get("impl") == own and x.get("flows") == d["flows"]):
            continue
        n = d["flows"]
        inp = [x["input_cpu_ns_per_packet"] for x in lines if x.get("impl") == own and x.get("flows") == n]
        con = [x["consumer_cpu_ns_per_delivered"] for x in lines if x.get("impl") == own and x.get("flows") == n]
        def of(impl, field):
            return med([x[field] for x in lines if x.get("workload") == "demux" and x.get("impl") == impl
                        and x.get("flows") == n and field in x])
        t = d["table"]
        print(f"| {n:,} | {d['flows_seen']:,} | {d['exact_lookup_misses_per_pass']:,} | {t['buckets']:,} "
              f"| {t['longest_chain']} | {t['probes_per_hit']:.3f} | {t['probes_per_miss']:.3f} "
              f"| {med(inp):.1f} | {med(con):.1f} "
              f"| {of(own, 'wakeups_per_delivered'):.3f} / {of('c_lfht_ring', 'wakeups_per_delivered'):.3f} "
              f"| {of(own, 'dropped'):,.0f} / {of('c_lfht_ring', 'dropped'):,.0f} |")
    print()


def churn_table(lines):
    mops = collect(lines, "rcu-churn", "mops")
    wr = collect(lines, "rcu-churn", "writer_ops_per_s")
    pend = collect(lines, "rcu-churn", "pending_reclaim_peak")
    own = OWN["rcu-churn"]
    impls = sorted({i for s in mops.values() for i in s}, key=lambda i: (i != own, i))
    print("| keys | impl | reader Mops | writer M updates/s | pending reclaim peak |")
    print("|---|---|---|---|---|")
    for n in sorted(mops):
        for i in impls:
            if i not in mops[n]:
                continue
            print(f"| {n:,} | {i} | {spread(list(mops[n][i].values()), f2)} "
                  f"| {spread([v / 1e6 for v in wr[n][i].values()], f2)} "
                  f"| {spread(list(pend[n][i].values()), lambda v: f'{v:,.0f}')} |")
    print()
    print("| keys | reader ratio ours/best peer | writer ratio ours/best peer |")
    print("|---|---|---|")
    for n in sorted(mops):
        print(f"| {n:,} | {ratio_cells(mops[n], own)[0]} | {ratio_cells(wr[n], own)[0]} |")
    print()


def throughput_panel(ax, lines, workload, xlabel, ylabel, title):
    """Median and min..max of `mops` per size, one line per impl (ours first)."""
    mops = collect(lines, workload, "mops")
    for impl in sorted({i for s in mops.values() for i in s}, key=lambda i: (i != OWN[workload], i)):
        xs = [n for n in sorted(mops) if impl in mops[n]]
        vals = [list(mops[n][impl].values()) for n in xs]
        m = [med(v) for v in vals]
        ax.errorbar(xs, m, yerr=[[a - min(v) for a, v in zip(m, vals)], [max(v) - a for a, v in zip(m, vals)]],
                    marker="o", capsize=4, label=impl + (" (ours)" if impl == OWN[workload] else " (C peer)"))
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(True, alpha=0.3)


def plot(lines, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    throughput_panel(ax1, lines, "demux", "flows (sockets)", "Mpps offered (median, min–max)", "demux: throughput")
    for field, style in (("rss_setup_kb", "-"), ("rss_peak_kb", "--")):
        rss = collect(lines, "demux", field)
        for impl in sorted({i for s in rss.values() for i in s}, key=lambda i: (i != OWN["demux"], i)):
            xs = [n for n in sorted(rss) if impl in rss[n]]
            color = {"fastpath": "C0", "c_lfht_ring": "C1", "c_rtehash_ring": "C2"}.get(impl)
            ax2.plot(xs, [med(list(rss[n][impl].values())) / 1024 for n in xs], style, marker="o", color=color,
                     label=f"{impl} {'after set-up' if field == 'rss_setup_kb' else 'peak'}")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("flows (sockets)")
    ax2.set_ylabel("resident memory, MiB (median)")
    ax2.set_title("demux: resident memory")
    ax2.legend(fontsize=7)
    ax2.grid(True, alpha=0.3)
    throughput_panel(ax3, lines, "rcu-churn", "keys", "reader Mops (median, min–max)", "rcu-churn: reader under a writer")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}", file=sys.stderr)


def main(argv):
    out = "docs/scaling.png"
    if "--out" in argv:
        i = argv.index("--out")
        out = argv[i + 1]
        del argv[i:i + 2]
    no_plot = "--no-plot" in argv
    paths = [a for a in argv if not a.startswith("--")]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    lines = load(paths)
    bad = [d for d in lines if d.get("checked") is False]
    demux_table(lines)
    churn_table(lines)
    if not no_plot:
        plot(lines, out)
    if bad:
        print(f"{len(bad)} line(s) with \"checked\": false", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
