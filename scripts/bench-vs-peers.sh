#!/bin/bash
# Runs benchmark workloads (docs/BenchmarkWorkloads.md) alternately: the
# project (every in-process implementation, --impl all), then the C
# reference harness, workload by workload, in one session, with the
# cache-line round-trip calibration (c2c-latency) before and after. One JSON
# line per (workload, impl) on stdout.
#   PEERS=/path/to/peers scripts/bench-vs-peers.sh pcq-1p1c rcu-lookup ...
# Needs a release build (swift build -c release) and the C harness's
# directory in PEERS (built here with make; its Debian packages: liburcu-dev
# libck-dev dpdk-dev libconcurrentqueue-dev).
set -u
cd "$(dirname "$0")/.."
B=$PWD/.build/release/fastdemux
P=${PEERS:?bench-vs-peers: set PEERS to the C reference harness directory}
[ -x "$B" ] || { echo "bench-vs-peers: build first: swift build -c release" >&2; exit 2; }
make -s -C "$P" all >&2 || { echo "bench-vs-peers: cannot build the peers in $P" >&2; exit 2; }
cd "$P"
./bench_c2c c2c-latency --json
for w in "$@"; do
  "$B" bench "$w" --impl all --json
  case $w in
    pcq-*) ./bench_pcq "$w" --impl all --json ;;
    rcu-*) ./bench_rcu "$w" --impl all --json ;;
    mailbox-*) ./bench_mailbox "$w" --impl all --json ;;
    demux) ./bench_demux demux --impl all --json ;;
    kernel-udp) ./bench_kudp kernel-udp --impl all --json ;;
    *) echo "bench-vs-peers: no peer for $w" >&2 ;;
  esac
done
./bench_c2c c2c-latency --json
