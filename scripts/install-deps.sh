#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those that are missing.
#   liburcu-dev   RCU (SMPPrimitives)          libpcap-dev  capture replay (FastDemux)
#   tshark        the independent oracle        iproute2     network namespaces (TUN test)
#   python3       oracle scripts                liburing-dev batched TUN writes (PacketIO)
#   iputils-ping  scripts/serve-demo.sh          curl, nftables  HTTP tests (a real client; loss)
set -euo pipefail
want=(liburcu-dev libpcap-dev liburing-dev tshark iproute2 iputils-ping python3 pkg-config curl nftables)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # tshark asks whether non-root users may capture: answer no, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi
