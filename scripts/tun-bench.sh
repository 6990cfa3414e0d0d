#!/usr/bin/env bash
# TUN batching benchmark: read(2)/write(2) per packet versus io_uring, on
# one queue of a multi-queue TUN device, inside a network namespace of its
# own (created and deleted here; needs root). Prints one JSON line per run.
# docs/TUN.md has the figures and the choice they led to.
#
#   scripts/tun-bench.sh [SECONDS] [WRITE_COUNT]     (defaults 5, 2000000)
#
# io_uring runs only if liburing-dev is installed (the library itself does
# not use io_uring; see docs/TUN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
count=${2:-2000000}
[ "$(id -u)" -eq 0 ] || { echo "tun-bench: needs root (network namespace, TUN device)" >&2; exit 1; }
bin=$(mktemp -d)
ns="tunbench-$$"
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$bin"' EXIT
modes=(syscall)
if pkg-config --exists liburing 2>/dev/null; then
    cc -O2 -DHAVE_URING -o "$bin/tun-bench" scripts/tun-bench.c $(pkg-config --cflags --libs liburing) -lpthread
    modes+=(uring)
else
    echo "tun-bench: liburing-dev not installed, io_uring not measured" >&2
    cc -O2 -o "$bin/tun-bench" scripts/tun-bench.c -lpthread
fi
run() {   # a fresh namespace per run: no leftover device, counters from 0
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" "$bin/tun-bench" "$@"
    ip netns del "$ns"
}
run readv
for m in "${modes[@]}"; do run read "$m" "$seconds"; done
for m in "${modes[@]}"; do run write "$m" "$count"; done
