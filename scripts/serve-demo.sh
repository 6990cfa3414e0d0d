#!/usr/bin/env bash
# `fastdemux serve` against the real kernel, end to end, in a network
# namespace of its own (nothing reaches the host's network): a two-queue TUN
# device with the kernel side 198.18.0.1/24 and fd00:18::1/64, the stack
# answering as 198.18.0.2 and fd00:18::2 with a UDP echo on port 7, a TCP
# echo on port 7 and HTTP/1.1 on port 80; then ping, ping -6, a kernel UDP
# client (IPv4 and IPv6, one datagram of 8 KiB that the kernel fragments),
# curl getting the page and 1 MiB over IPv4 and IPv6, a kernel TCP echo
# client, the stack's summary, and clean-up.
# Needs root (ip netns, /dev/net/tun). Usage: scripts/serve-demo.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-6}
ns=fdserve-$$
dev=fdserve0
bin=.build/release/fastdemux
[ -x "$bin" ] || swift build -c release --product fastdemux
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up
in_ns ip tuntap add dev "$dev" mode tun multi_queue
in_ns ip addr add 198.18.0.1/24 dev "$dev"
in_ns ip -6 addr add fd00:18::1/64 dev "$dev" nodad
in_ns ip link set "$dev" up
in_ns "$bin" serve --tun "$dev" --address 198.18.0.2 --address fd00:18::2 --queues 2 \
    --udp-echo 7 --tcp-echo 7 --http 80 --duration "$seconds" &
serve=$!
sleep 1
if command -v ping >/dev/null; then
    in_ns ping -c 3 -i 0.2 198.18.0.2
    in_ns ping -6 -c 3 -i 0.2 fd00:18::2
else
    echo "(no ping binary: skipping ping; apt-get install iputils-ping)"
fi
in_ns python3 - <<'PY'
import socket
for family, address in ((socket.AF_INET, "198.18.0.2"), (socket.AF_INET6, "fd00:18::2")):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect((address, 7))
    ok = 0
    for n in list(range(1, 1401, 7)) + [8192]:
        data = bytes((i * 31 + n) & 0xff for i in range(n))
        s.send(data)
        ok += s.recv(65536) == data
    print(f"UDP echo {address}: {ok}/{len(range(1, 1401, 7)) + 1} datagrams back byte-identical (incl. 8 KiB)")
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.connect((address, 9))
    c.send(b"closed port?")
    try:
        c.recv(100)
    except ConnectionRefusedError:
        print(f"UDP to {address}:9 (no socket): connection refused, as it should be")
PY
if command -v curl >/dev/null; then
    echo "curl http://198.18.0.2/ :"
    in_ns curl -sS --max-time 10 http://198.18.0.2/
    for url in http://198.18.0.2/bytes/1048576 'http://[fd00:18::2]/bytes/1048576'; do
        in_ns curl -sS --max-time 20 -o /dev/null \
            -w "curl $url: HTTP %{http_code}, %{size_download} bytes in %{time_total} s\n" "$url"
    done
else
    echo "(no curl binary: skipping HTTP; apt-get install curl)"
fi
in_ns python3 - <<'PY'
import socket
for address in ("198.18.0.2", "fd00:18::2"):
    s = socket.create_connection((address, 7), timeout=5)
    data = bytes((i * 7) & 0xff for i in range(1 << 20))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    back = bytearray()
    while chunk := s.recv(65536):
        back += chunk
    print(f"TCP echo {address}: {len(back)} of {len(data)} bytes back, identical: {bytes(back) == data}")
PY
wait "$serve"
