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
