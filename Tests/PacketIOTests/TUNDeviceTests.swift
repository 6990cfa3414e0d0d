import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux
@testable import PacketIO

/// Reads packets from `tun` until `enough` says so or `seconds` pass (the
/// watchdog), returning them.
func readPackets(from tun: TUNQueue, seconds: Double, until enough: ([[UInt8]]) -> Bool) throws -> [[UInt8]] {
    var packets: [[UInt8]] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: TUNDevice.maximumPacketSize, alignment: 16)
    defer { buffer.deallocate() }
    let deadline = monotonicSeconds() + seconds
    while !enough(packets) && monotonicSeconds() < deadline {
        guard try tun.wait(timeout: .milliseconds(50)) else { continue }
        while let n = try tun.read(into: buffer) {
            packets.append(Array(buffer[..<n]))
        }
    }
    return packets
}

// The time limit turns a hang into a failure. It is generous because it
// is wall time from the test's start, which on a loaded machine includes
// waiting for CPU behind the other suites (two cores, sanitizer builds):
// one minute was exceeded under AddressSanitizer while the machine's load
// was about 15, by tests whose every assertion then passed.
@Suite(.enabled(if: tunTestsCanRun, "needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), /dev/net/tun and ip netns"),
       .timeLimit(.minutes(10)))
struct TUNDeviceTests {
    @Test func readsUDPDatagramsAndTCPSynRoutedIntoTheDevice() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN()
        defer { tun.close() }
        #expect(tun.name == "fdtun0")
        let syn = try ns.inside { () throws -> TestSocket in
            for i in 0..<5 {
                try sendUDP(from: UInt16(40_000 + i), to: "198.18.0.2", port: 5353,
                            payload: Array("fastdemux-\(i)".utf8))
            }
            return try startTCPConnect(from: 41_000, to: "198.18.0.2", port: 8080)
        }
        let packets = try readPackets(from: tun.queues[0], seconds: 5) { got in
            got.compactMap(RawIPv4.init).filter { $0.proto == 17 }.count >= 5
                && got.compactMap(RawIPv4.init).contains { $0.proto == 6 }
        }
        _ = syn
        let parsed = packets.compactMap(RawIPv4.init)
        let udp = parsed.filter { $0.proto == 17 }
        #expect(udp.count == 5)
        for (i, d) in udp.enumerated() {
            #expect(d.source == [198, 18, 0, 1] && d.destination == [198, 18, 0, 2])
            #expect(d.sourcePort == UInt16(40_000 + i) && d.destinationPort == 5353)
            #expect(d.payload == Array("fastdemux-\(i)".utf8))
        }
        let tcp = try #require(parsed.first { $0.proto == 6 })
        #expect(tcp.sourcePort == 41_000 && tcp.destinationPort == 8080)
        #expect(tcp.tcpFlags & 0x12 == 0x02, "a bare SYN")
    }

    @Test func writtenPacketsReachASocketInTheNamespace() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN()
        defer { tun.close() }
        let receiver = try ns.inside { () throws -> TestSocket in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
            let s = TestSocket(fd: fd)
            let rc = withSockaddr(ipv4Address("198.18.0.1", port: 9999)) { bind(fd, $0, $1) }
            guard rc == 0 else { throw TUNError(operation: "bind", code: errno) }
            return s
        }
        let payload = Array("injected".utf8)
        let packet = makeIPv4UDP(from: [198, 18, 0, 2], 7000, to: [198, 18, 0, 1], 9999, payload: payload)
        try packet.withUnsafeBytes { try tun.queues[0].write($0) }
        var p = pollfd(fd: receiver.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 3_000) == 1)
        var buf = [UInt8](repeating: 0, count: 64)
        let n = recv(receiver.fd, &buf, buf.count, 0)
        #expect(n == payload.count)
        #expect(Array(buf.prefix(max(n, 0))) == payload)
    }

    @Test func openingWithABadNameFailsClearly() throws {
        #expect(throws: TUNError.self) { try TUNDevice(name: "this-name-is-far-too-long") }
        // Inside a namespace of its own, so even a wrongly accepted name
        // would create nothing on the host.
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let error = try ns.inside { () -> TUNError? in
            do throws(TUNError) {
                _ = try TUNDevice(name: "bad/name")
                return nil
            } catch {
                return error
            }
        }
        let e = try #require(error, "a name with '/' was accepted")
        #expect(e.code == EINVAL)
        #expect(e.description.contains("bad/name"))
    }
}
