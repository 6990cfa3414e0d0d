#!/bin/bash
# Runs benchmark workloads (docs/BenchmarkWorkloads.md) alternately: the
# project (every in-process implementation, --impl all), then the C
# reference harness, workload by workload, in one session, with the
# cache-line round-trip calibration (c2c-latency) before and after. One JSON
# line per (workload, impl) on stdout, each tagged with "build" (which binary
# ran it: "project", "baseline" or "peer") and "round".
#
#   PEERS=/path/to/peers scripts/bench-vs-peers.sh pcq-1p1c rcu-lookup ...
#   ROUNDS=3               alternate the whole sequence 3 times (default 1)
#   BASELINE=/path/to/an/older/fastdemux   also run that build, right before
#                          this one, in every round (before/after comparisons)
#
# scripts/bench-summary.py turns the lines into medians and ratios.
# Needs a release build (swift build -c release) and the C harness's
# directory in PEERS (built here with make; its Debian packages: liburcu-dev
# libck-dev dpdk-dev libconcurrentqueue-dev).
set -u
cd "$(dirname "$0")/.."
source scripts/bench-tag.sh   # tag BUILD ROUND COMMAND...
B=$PWD/.build/release/fastdemux
P=${PEERS:?bench-vs-peers: set PEERS to the C reference harness directory}
ROUNDS=${ROUNDS:-1}
BASELINE=${BASELINE:-}
[ -x "$B" ] || { echo "bench-vs-peers: build first: swift build -c release" >&2; exit 2; }
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "bench-vs-peers: BASELINE $BASELINE is not executable" >&2; exit 2; }
make -s -C "$P" all >&2 || { echo "bench-vs-peers: cannot build the peers in $P" >&2; exit 2; }
cd "$P"

peer() {
  case $1 in
    pcq-*) ./bench_pcq "$1" --impl all --json ;;
    rcu-*) ./bench_rcu "$1" --impl all --json ;;
    mailbox-*) ./bench_mailbox "$1" --impl all --json ;;
    demux) ./bench_demux demux --impl all --json ;;
    kernel-udp) ./bench_kudp kernel-udp --impl all --json ;;
    *) echo "bench-vs-peers: no peer for $1" >&2 ;;
  esac
}

tag peer 0 ./bench_c2c c2c-latency --json
for r in $(seq 1 "$ROUNDS"); do
  for w in "$@"; do
    [ -z "$BASELINE" ] || tag baseline "$r" "$BASELINE" bench "$w" --impl all --json
    tag project "$r" "$B" bench "$w" --impl all --json
    tag peer "$r" peer "$w"
  done
  tag peer "$r" ./bench_c2c c2c-latency --json
done
