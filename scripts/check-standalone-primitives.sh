#!/usr/bin/env bash
# Checks that SMPPrimitives works as a library on its own: builds and runs a
# throwaway package, in a temporary directory, that depends on this
# repository by path and imports only SMPPrimitives. Its main.swift puts a
# two-word struct through a PCQ and checks what comes out.
#
# Only SMPPrimitives and what it needs (CURCU/liburcu, CSMPLinux) are built
# and linked: no libpcap. SwiftPM still resolves the repository's whole
# package graph (swift-argument-parser, swift-collections, the DocC plugin),
# so the repository's Package.resolved is copied in to pin the same versions.
#
#   scripts/check-standalone-primitives.sh        exit 0 on success
#   KEEP=1 scripts/check-standalone-primitives.sh keep the temporary package
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/smp-standalone.XXXXXX")"
if [ "${KEEP:-0}" = 1 ]; then
    echo "check-standalone-primitives: keeping $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi
fail() {
    echo "check-standalone-primitives: FAILED: $*" >&2
    exit 1
}

# A path dependency's identity is its directory name, lowercased.
identity="$(basename "$repo" | tr '[:upper:]' '[:lower:]')"
mkdir -p "$tmp/Sources/StandaloneCheck"
cat >"$tmp/Package.swift" <<EOF
// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "StandaloneCheck",
    dependencies: [.package(path: "$repo")],
    targets: [
        .executableTarget(
            name: "StandaloneCheck",
            dependencies: [.product(name: "SMPPrimitives", package: "$identity")]
        ),
    ]
)
EOF
[ -f "$repo/Package.resolved" ] && cp "$repo/Package.resolved" "$tmp/Package.resolved"

cat >"$tmp/Sources/StandaloneCheck/main.swift" <<'EOF'
import SMPPrimitives

/// Two words, both varying per item: a mixed-up value does not compare equal.
struct Pair: BitwiseCopyable, Equatable {
    var index: UInt
    var tag: UInt
    init(_ n: UInt) {
        index = n
        tag = ~n &* 0x9E37_79B9_7F4A_7C15
    }
}

func check(_ ok: Bool, _ what: String) {
    if !ok { fatalError("standalone SMPPrimitives check failed: \(what)") }
}

check(MemoryLayout<Pair>.size == 16, "Pair is two words")
let q = PCQ<Pair>(capacity: 3)
var next: UInt = 0
var expected: UInt = 0
for _ in 0..<100 {  // enough laps to reuse every slot many times
    while q.put(Pair(next)) { next += 1 }
    check(next - expected == 3, "exactly `capacity` puts fit")
    check(q.peek() == Pair(expected), "peek returns the oldest")
    check(q.get() == Pair(expected), "get returns the oldest")
    expected += 1
    q.drain(max: 8) { item in
        check(item == Pair(expected), "drain in FIFO order")
        expected += 1
    }
    check(expected == next, "drain takes the rest")
    check(q.get() == nil, "empty after the drain")
}
let s = q.statistics
check(s.puts == Int(next) && s.gets == Int(next) && s.failedPuts == 100, "statistics: \(s)")
print("standalone SMPPrimitives: PCQ<Pair> ok (\(next) items)")
EOF

echo "check-standalone-primitives: building $tmp against $repo" >&2
out="$(cd "$tmp" && swift run StandaloneCheck)" || fail "swift run exited with $?"
echo "$out"
grep -q "^standalone SMPPrimitives: PCQ<Pair> ok" <<<"$out" || fail "no success line in the output"

bin="$(cd "$tmp" && swift build --show-bin-path)/StandaloneCheck"
[ -x "$bin" ] || fail "no executable at $bin"
if ldd "$bin" | grep -q pcap; then
    fail "the SMPPrimitives-only executable links libpcap"
fi
echo "check-standalone-primitives: ok (SMPPrimitives alone, no libpcap)" >&2
