#!/bin/bash
# How cost grows (docs/Benchmarks.md): the demux workload at several flow
# counts and rcu-churn at several key counts, the project against the C
# reference harness, alternating ours/peer size by size, ROUNDS times, in
# one session. One JSON line per run on stdout, tagged with "build"
# ("project" or "peer") and "round"; scripts/plot-scaling.py turns them
# into docs/scaling.png and a Markdown table.
#
#   PEERS=/path/to/peers scripts/bench-scaling.sh > docs/results/DATE-scaling.jsonl
#   ROUNDS=3                      alternations per size (default 3)
#   FLOWS="4096 65536 1048576"    demux --flows sizes (default)
#   KEYS="65536 1048576"          rcu-churn --keys sizes (default; powers of two)
#
# The C harness in PEERS is copied to .build/peers-scaling and patched with
# scripts/peers-scaling.patch, which adds `--flows N` to its demux and
# `--keys N` to its rcu workloads (without them it behaves, and builds its
# frames, exactly as before). Needs a release build (swift build -c
# release), the harness's Debian packages (liburcu-dev libck-dev dpdk-dev
# libconcurrentqueue-dev), and about 6 GB of free memory at 1,048,576
# flows (each process holds one socket and queue per flow: 5.2 GiB resident
# for ours, 4.5 GiB for the C pipeline).
#
# Our demux runs get --cap 600 (the default 30 s cap stopped 1,048,576-flow
# runs on a loaded machine; the C harness's demux has no cap).
set -u -o pipefail
cd "$(dirname "$0")/.."
source scripts/bench-tag.sh   # tag BUILD ROUND COMMAND...
B=$PWD/.build/release/fastdemux
P=${PEERS:?bench-scaling: set PEERS to the C reference harness directory}
ROUNDS=${ROUNDS:-3}
FLOWS=${FLOWS:-4096 65536 1048576}
KEYS=${KEYS:-65536 1048576}
[ -x "$B" ] || { echo "bench-scaling: build first: swift build -c release" >&2; exit 2; }
W=$PWD/.build/peers-scaling
rm -rf "$W" && mkdir -p "$W" && cp "$P"/*.c "$P"/*.cc "$P"/*.h "$P"/Makefile "$W"/ && chmod -R u+w "$W" \
  || { echo "bench-scaling: cannot copy the peers from $P" >&2; exit 2; }
patch -s -d "$W" -p1 < scripts/peers-scaling.patch || { echo "bench-scaling: the patch does not apply" >&2; exit 2; }
make -s -C "$W" bench_demux bench_rcu bench_c2c >&2 || { echo "bench-scaling: cannot build the peers" >&2; exit 2; }

rc=0
run() { tag "$@" || rc=1; }
run peer 0 "$W/bench_c2c" c2c-latency --json
for r in $(seq 1 "$ROUNDS"); do
  for f in $FLOWS; do
    run project "$r" "$B" bench demux --impl fastpath --flows "$f" --cap 600 --json
    for impl in c_lfht_ring c_rtehash_ring; do
      run peer "$r" "$W/bench_demux" demux --impl "$impl" --flows "$f" --json
    done
  done
  for k in $KEYS; do
    run project "$r" "$B" bench rcu-churn --impl rcu_hash --keys "$k" --json
    for impl in rte_hash_lf urcu_lfht; do
      run peer "$r" "$W/bench_rcu" rcu-churn --impl "$impl" --keys "$k" --json
    done
  done
  run peer "$r" "$W/bench_c2c" c2c-latency --json
done
exit $rc
