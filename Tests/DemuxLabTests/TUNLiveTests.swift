import Glibc
import SMPPrimitives
import Synchronization
import Testing
@testable import DemuxLab
import PacketIO
import TestSupport
@testable import FastDemux

// `fastdemux live` end to end, minus the argument parsing: traffic sent
// inside a test network namespace is routed into a TUN device there and
// demultiplexed by a DemuxSession reading it (see TUNDeviceTests.swift for
// the namespace harness and why nothing leaves the namespace).
// The time limit turns a hang into a failure. It is generous because it
// is wall time from the test's start, which on a loaded machine includes
// waiting for CPU behind the other suites (two cores, sanitizer builds):
// one minute was exceeded under AddressSanitizer while the machine's load
// was about 15, by tests whose every assertion then passed.
@Suite(.enabled(if: tunTestsCanRun, "needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), /dev/net/tun and ip netns"),
       .timeLimit(.minutes(10)))
struct TUNLiveTests {
    /// Sends 5 UDP datagrams (one flow each) and one TCP SYN into the TUN.
    func sendTraffic(_ ns: TestNetworkNamespace) throws -> TestSocket {
        try ns.inside { () throws -> TestSocket in
            for i in 0..<5 {
                try sendUDP(from: UInt16(40_000 + i), to: "198.18.0.2", port: 5353,
                            payload: Array("live-\(i)".utf8))
            }
            return try startTCPConnect(from: 41_000, to: "198.18.0.2", port: 8080)
        }
    }

    @Test func liveSessionDemultiplexesTrafficRoutedIntoTheTUN() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN()
        defer { tun.close() }
        let syn = try sendTraffic(ns)
        defer { _ = syn }
        // The packets wait in the device queue; the count stops the session,
        // the duration is the watchdog.
        var source = TUNPacketSource(device: tun, duration: 10, count: 6)
        let r = try DemuxSession(DemuxSessionConfiguration()).run(&source)
        #expect(r.sourceError == nil)
        #expect(r.framesIn == 6)
        #expect(r.isConserved)
        #expect(r.delivered == 6)
        let udp = r.flows.filter { $0.key.transport == .udp }
        let tcp = r.flows.filter { $0.key.transport == .tcp }
        #expect(udp.count == 5 && udp.allSatisfy { $0.packets == 1 && $0.deliveredPackets == 1 })
        let a = IPAddress("198.18.0.1")!, b = IPAddress("198.18.0.2")!
        for f in udp {
            #expect(Set([f.key.source, f.key.destination]) == Set([a, b]))
            #expect(Set([f.key.sourcePort, f.key.destinationPort]).contains(5353))
        }
        #expect(tcp.count == 1 && tcp.first.map { Set([$0.key.sourcePort, $0.key.destinationPort]) } == [41_000, 8080])
    }

    @Test func listeningOnlyOnUDPDropsTheSYNAsNoSocket() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN()
        defer { tun.close() }
        let syn = try sendTraffic(ns)
        defer { _ = syn }
        var source = TUNPacketSource(device: tun, duration: 10, count: 6)
        var config = DemuxSessionConfiguration(workers: 2)
        config.sockets = .listen([ListenSpec(.udp, port: 5353)])
        let r = try DemuxSession(config).run(&source)
        #expect(r.framesIn == 6)
        #expect(r.delivered == 5)
        #expect(r.input.drops[.noSocket] == 1)
        #expect(r.isConserved)
    }

    @Test func stopEndsAnIdleLiveSessionPromptly() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN()
        defer { tun.close() }
        let source = TUNPacketSource(device: tun)   // no duration, no count
        let stopper = PinnedThread(name: "stopper") {
            usleep(300_000)
            source.stop()
        }
        defer { stopper.join() }
        var s = source
        let t0 = monotonicSeconds()
        let r = try DemuxSession(DemuxSessionConfiguration()).run(&s)
        let elapsed = monotonicSeconds() - t0
        #expect(elapsed < 3, "stop() must end the session within ~100 ms")
        #expect(r.isConserved)
    }

    @Test func ipv6TrafficToAUniqueLocalAddressIsDemultiplexed() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.inside { () throws -> TUNDevice in try TUNDevice(name: "fdtun6") }
        defer { tun.close() }
        // fd00::/8 (unique local) exists only in this namespace; no link-local
        // address and no DAD keep the kernel's own IPv6 chatter down.
        try ns.ip("link", "set", "fdtun6", "addrgenmode", "none")
        try ns.ip("-6", "addr", "add", "fd00:5eed::1/64", "dev", "fdtun6", "nodad")
        try ns.ip("link", "set", "fdtun6", "up")
        try ns.inside { () throws -> Void in
            try sendUDP6(to: "fd00:5eed::2", port: 5353, payloads: (0..<3).map { Array("v6-\($0)".utf8) })
        }
        // Whatever else the kernel sends (MLD, ...) is counted too; stop on time.
        var source = TUNPacketSource(device: tun, duration: 1)
        let r = try DemuxSession(DemuxSessionConfiguration()).run(&source)
        #expect(r.isConserved)
        let server = IPAddress("fd00:5eed::2")!
        let ours = r.flows.filter { $0.key.transport == .udp && ($0.key.source == server || $0.key.destination == server) }
        #expect(ours.count == 1, "one socket pair, one flow")
        #expect(ours.first?.packets == 3 && ours.first?.deliveredPackets == 3)
    }
}

/// Sends `payloads` from one IPv6 UDP socket to `destination`:`port`. Call
/// inside the namespace.
func sendUDP6(to destination: String, port: UInt16, payloads: [[UInt8]]) throws {
    let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
    defer { close(fd) }
    var sa = sockaddr_in6()
    sa.sin6_family = sa_family_t(AF_INET6)
    sa.sin6_port = port.bigEndian
    _ = inet_pton(AF_INET6, destination, &sa.sin6_addr)
    for payload in payloads {
        let n = payload.withUnsafeBytes { p in
            withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, p.baseAddress, p.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        guard n == payload.count else { throw TUNError(operation: "sendto", code: errno) }
    }
}
