import SMPPrimitives
import Testing
import TestSupport
@testable import FastDemux

@Suite("PCB table lookup order")
struct PCBTableTests {
    func lookupOrder(local: String, otherLocal: String, any: IPAddress, remote: String) throws {
        let demux = Demux<Memb>()
        let wild = demux.makeSocket(.udp)
        try wild.bind(InetEndpoint(any, 53))
        let specific = demux.makeSocket(.udp)
        try specific.bind(InetEndpoint(v4(local), 53))
        let connected = demux.makeSocket(.udp)
        try connected.connect(to: InetEndpoint(v4(remote), 999), from: InetEndpoint(v4(local), 53))

        let t = demux.table
        // Exact 5-tuple first.
        #expect(t.socket(for: packetKey(.udp, from: remote, 999, to: local, 53)) === connected)
        // Same local endpoint, other remote port: the specific binding.
        #expect(t.socket(for: packetKey(.udp, from: remote, 1000, to: local, 53)) === specific)
        // Other local address: the wildcard.
        #expect(t.socket(for: packetKey(.udp, from: remote, 999, to: otherLocal, 53)) === wild)
        // Other port or protocol: nothing.
        #expect(t.socket(for: packetKey(.udp, from: remote, 999, to: local, 54)) == nil)
        #expect(t.socket(for: packetKey(.tcp, from: remote, 999, to: local, 53)) == nil)

        // Closing the more specific sockets falls back, in order.
        connected.close()
        #expect(t.socket(for: packetKey(.udp, from: remote, 999, to: local, 53)) === specific)
        specific.close()
        #expect(t.socket(for: packetKey(.udp, from: remote, 999, to: local, 53)) === wild)
        wild.close()
        #expect(t.socket(for: packetKey(.udp, from: remote, 999, to: local, 53)) == nil)
        #expect(t.connectedCount == 0 && t.boundCount == 0)
    }

    @Test func ipv4ExactThenSpecificThenWildcard() throws {
        try lookupOrder(local: "10.0.0.1", otherLocal: "10.0.0.2", any: .wildcard(.ipv4), remote: "192.0.2.7")
    }

    @Test func ipv6ExactThenSpecificThenWildcard() throws {
        try lookupOrder(local: "2001:db8::1", otherLocal: "2001:db8::2", any: .wildcard(.ipv6), remote: "2001:db8:ffff::7")
    }

    @Test func familiesDoNotMix() throws {
        let demux = Demux<Memb>()
        let w6 = demux.makeSocket(.udp)
        try w6.bind(InetEndpoint(.wildcard(.ipv6), 53))
        #expect(demux.table.socket(for: packetKey(.udp, from: "192.0.2.1", 1, to: "10.0.0.1", 53)) == nil)
        #expect(demux.table.socket(for: packetKey(.udp, from: "2001:db8::9", 1, to: "2001:db8::1", 53)) === w6)
        let s = demux.makeSocket(.udp)
        #expect(throws: SocketError.familyMismatch) {
            try s.connect(to: InetEndpoint(v4("192.0.2.1"), 1), from: InetEndpoint(v4("::1"), 2))
        }
        w6.close()
    }

    @Test func tcpListenerAndEstablishedShareAPort() throws {
        let demux = Demux<Memb>()
        let listener = demux.makeSocket(.tcp)
        try listener.bind(InetEndpoint(.wildcard(.ipv4), 80))
        // Bound but not listening: receives nothing.
        #expect(demux.table.socket(for: packetKey(.tcp, from: "192.0.2.1", 5555, to: "10.0.0.1", 80)) == nil)
        try listener.listen()
        #expect(listener.state == .listening)
        let conn = demux.makeSocket(.tcp)
        try conn.connect(to: InetEndpoint(v4("192.0.2.1"), 5555), from: InetEndpoint(v4("10.0.0.1"), 80))
        #expect(conn.state == .connected)
        #expect(demux.table.socket(for: packetKey(.tcp, from: "192.0.2.1", 5555, to: "10.0.0.1", 80)) === conn)
        #expect(demux.table.socket(for: packetKey(.tcp, from: "192.0.2.1", 5556, to: "10.0.0.1", 80)) === listener)
        demux.table.close([conn, listener])
        #expect(conn.state == .closed && listener.state == .closed)
    }

    @Test func conflictsAndStates() throws {
        let demux = Demux<Memb>()
        let a = demux.makeSocket(.udp)
        try a.bind(InetEndpoint(v4("10.0.0.1"), 7))
        let b = demux.makeSocket(.udp)
        #expect(throws: SocketError.addressInUse) { try b.bind(InetEndpoint(v4("10.0.0.1"), 7)) }
        // A specific and a wildcard binding of one port coexist.
        try b.bind(InetEndpoint(.wildcard(.ipv4), 7))
        #expect(throws: SocketError.invalidState) { try a.listen() }        // UDP cannot listen
        #expect(throws: SocketError.invalidState) { try b.bind(InetEndpoint(v4("10.0.0.1"), 8)) }  // already bound
        let c = demux.makeSocket(.udp)
        #expect(throws: SocketError.invalidState) { try c.connect(to: InetEndpoint(v4("192.0.2.1"), 1)) }  // no local
        try c.connect(to: InetEndpoint(v4("192.0.2.1"), 1), from: InetEndpoint(v4("10.0.0.1"), 7))
        let d = demux.makeSocket(.udp)
        #expect(throws: SocketError.addressInUse) {
            try d.connect(to: InetEndpoint(v4("192.0.2.1"), 1), from: InetEndpoint(v4("10.0.0.1"), 7))
        }
        // Connecting a bound UDP socket moves it from the bound table to the exact one.
        try a.connect(to: InetEndpoint(v4("192.0.2.2"), 2))
        #expect(demux.table.socket(for: packetKey(.udp, from: "192.0.2.3", 3, to: "10.0.0.1", 7)) === b)
        #expect(demux.table.socket(for: packetKey(.udp, from: "192.0.2.2", 2, to: "10.0.0.1", 7)) === a)
        a.close()
        a.close()  // idempotent
        #expect(throws: SocketError.closed) { try a.bind(InetEndpoint(v4("10.0.0.1"), 9)) }
        demux.table.close([b, c])
        #expect(demux.table.connectedCount == 0 && demux.table.boundCount == 0)
    }

    /// Hash flooding the connected table: 65,536 UDP flows to one local
    /// endpoint, [2001:db8::1]:53, from sources in one /64 that an attacker
    /// can own, e703:7ed1:a0b4:28db::/64. That prefix is the second
    /// multiplier constant of `rcuHashMix`: in FlowKey's last mix
    /// (`sourceHigh` as the second word) it zeroes a factor at seed 0, so
    /// every such flow has the same unkeyed hash. Before the mix keyed that
    /// factor they collided under every seed too, and this test found one
    /// chain of 65,536.
    @Test func connectedTableResistsHashFlooding() throws {
        let n = 65_536
        let prefix: UInt64 = 0xe703_7ed1_a0b4_28db
        let local = IPAddress(ipv6High: 0x2001_0db8_0000_0000, low: 1)
        let keys = (0..<n).map { i in
            FlowKey(transport: .udp, source: IPAddress(ipv6High: prefix, low: UInt64(i) &* 0x9E37_79B9_7F4A_7C15),
                    sourcePort: UInt16(truncatingIfNeeded: 1024 + i), destination: local, destinationPort: 53)
        }
        #expect(Set(keys).count == n)
        #expect(Set(keys.map { $0.rcuHash(seed: 0) }).count == 1)

        // Unkeyed (seed 0): one chain, an O(n) lookup (4,096 keys: each
        // insert compares every earlier key).
        let unkeyed = RCUHashTable<FlowKey, UInt, Memb>(initialBucketCount: 64, seed: 0)
        Memb.withRegisteredThread { for k in keys.prefix(4096) { unkeyed.insert(k, value: 0) } }
        #expect(unkeyed.chainStatistics.longestChain == 4096)
        #expect(keys.prefix(4096).map { unkeyed.lookupProbes($0) }.max() == 4096)

        // The PCB table's own tables: each with a random seed of its own.
        let demux = Demux<Memb>()
        let t = demux.table
        #expect(t.connected.seed != 0 && t.bound.seed != 0 && t.connected.seed != t.bound.seed)
        // One real connected socket among the flood, then the flood itself,
        // inserted straight into the connected table (65,536 sockets would
        // cost a queue each). Those values are not socket references: no
        // `lookup` below reaches them, only the probe counter does.
        let real = demux.makeSocket(.udp)
        try real.connect(to: InetEndpoint(IPAddress(ipv6High: prefix, low: 0xFFFF), 9), from: InetEndpoint(local, 53))
        let spread = Memb.withRegisteredThread {
            for (i, k) in keys.enumerated() {
                #expect(t.connected.insert(k, value: 0))
                // Fail fast on a flood that works (O(n^2) otherwise).
                if i == 4096, t.connected.chainStatistics.longestChain > 16 { return false }
            }
            return true
        }
        let chains = t.connected.chainStatistics
        print("PCB connected table flood: \(chains), resizes \(t.connected.statistics.resizes)")
        try #require(spread, "the flood collides under the table's random seed: \(chains)")
        #expect(chains.keys == n + 1)
        // 4096 -> 131,072 buckets by load alone (65,537 keys); n keys in m
        // >= n buckets: P(a chain of 16 or more) <= m / 16! ~ 6e-9.
        #expect(chains.bucketCount == 131_072)
        #expect(chains.longestChain <= 16)
        #expect(keys.allSatisfy { t.connected.lookupProbes($0) <= chains.longestChain })
        let realKey = packetKey(.udp, from: "e703:7ed1:a0b4:28db::ffff", 9, to: "2001:db8::1", 53)
        #expect(t.connected.lookupProbes(realKey) <= chains.longestChain)
        #expect(t.socket(for: realKey) === real)
        real.close()
        #expect(t.socket(for: realKey) == nil)
        Memb.withRegisteredThread { t.connected.removeAll() }
        Memb.barrier()
    }

    @Test func flowKeyHashSeparatesFields() {
        let k = packetKey(.udp, from: "192.0.2.1", 1, to: "10.0.0.1", 2)
        var variants = [k]
        var x = k; x.sourcePort = 2; variants.append(x)
        x = k; x.destinationPort = 1; variants.append(x)
        x = k; x.transport = .tcp; variants.append(x)
        x = k; x.source = IPAddress("192.0.2.2")!; variants.append(x)
        x = k; x.destination = IPAddress("10.0.0.2")!; variants.append(x)
        let hashes = Set(variants.map { $0.rcuHash(seed: 1) })
        #expect(hashes.count == variants.count)
        #expect(k.boundKey.source.isWildcard && k.boundKey.sourcePort == 0)
        #expect(k.wildcardKey.destination.isWildcard && k.wildcardKey.destinationPort == 2)
    }
}
