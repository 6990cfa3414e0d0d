import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization
import Testing
import TestSupport
@testable import FastDemux
@testable import PacketIO

// Multi-queue TUN devices and the per-core queue reader, in a namespace of
// their own (see NetworkNamespace.swift). The kernel side sends UDP from
// 198.18.0.1:PORT to 198.18.0.2:5353, which the namespace routes into the
// device; every payload starts with the flow's port and a sequence number.

/// The destination the kernel sends to (routed into the device).
private let peer = "198.18.0.2"
private let peerPort: UInt16 = 5353

/// UDP sockets bound to 198.18.0.1:`port` for each port, made inside the
/// namespace. They stay open while the test runs, so packets written back
/// to those ports are received quietly (no ICMP port unreachable).
private func flowSockets(_ ns: TestNetworkNamespace, ports: [UInt16]) throws -> [TestSocket] {
    try ns.inside { () throws -> [TestSocket] in
        try ports.map { port in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
            let s = TestSocket(fd: fd)
            let rc = withSockaddr(ipv4Address("198.18.0.1", port: port)) { bind(fd, $0, $1) }
            guard rc == 0 else { throw TUNError(operation: "bind \(port)", code: errno) }
            return s
        }
    }
}

/// Sends `count` datagrams on each socket (payload: port, sequence) to the
/// peer, flows interleaved. Returns how many the kernel accepted.
private func sendFlows(_ sockets: [TestSocket], ports: [UInt16], count: Int, firstSequence: UInt32 = 0) -> Int {
    var sent = 0
    for i in 0..<count {
        for (s, port) in zip(sockets, ports) {
            var payload = [UInt8](repeating: 0, count: 16)
            payload[0] = UInt8(port >> 8)
            payload[1] = UInt8(port & 0xff)
            let seq = firstSequence + UInt32(i)
            for b in 0..<4 { payload[2 + b] = UInt8((seq >> (8 * UInt32(b))) & 0xff) }
            let n = payload.withUnsafeBytes { p in
                withSockaddr(ipv4Address(peer, port: peerPort)) { sendto(s.fd, p.baseAddress, p.count, 0, $0, $1) }
            }
            if n == payload.count { sent += 1 }
        }
    }
    return sent
}

/// (source port, sequence) of one of the test's datagrams, or nil.
private func flowPacket(_ bytes: [UInt8]) -> (port: UInt16, sequence: UInt32)? {
    guard let p = RawIPv4(bytes), p.proto == 17, p.destinationPort == peerPort, p.payload.count == 16 else { return nil }
    let seq = (0..<4).reduce(UInt32(0)) { $0 | UInt32(p.payload[2 + $1]) << (8 * UInt32($1)) }
    return (p.sourcePort, seq)
}

/// Reads what is queued on every queue until `enough` or `seconds` pass:
/// (queue, packet) pairs.
private func readAll(_ tun: TUNDevice, seconds: Double, until enough: ([(Int, [UInt8])]) -> Bool) throws -> [(Int, [UInt8])] {
    var got: [(Int, [UInt8])] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: TUNDevice.maximumPacketSize, alignment: 16)
    defer { buffer.deallocate() }
    let deadline = monotonicSeconds() + seconds
    while !enough(got) && monotonicSeconds() < deadline {
        var any = false
        for q in tun.queues {
            while let n = try q.read(into: buffer) {
                got.append((q.index, Array(buffer[..<n])))
                any = true
            }
        }
        if !any { _ = try tun.queues[0].wait(timeout: .milliseconds(10)) }
    }
    return got
}

/// What the executors saw, behind a pthread mutex: the thread sanitizer
/// sees its hand-offs (it does not see Synchronization.Mutex's, see
/// PthreadMutex).
private final class ArrivalLog: @unchecked Sendable {
    // @unchecked Sendable: `list` is touched only while holding `lock`.
    private let lock = PthreadMutex()
    private var list: [(Int, UInt16, UInt32)] = []
    func append(_ e: (Int, UInt16, UInt32)) { lock.withLock { list.append(e) } }
    var entries: [(Int, UInt16, UInt32)] { lock.withLock { list } }
}

/// Polls `condition` every millisecond until it holds or `seconds` pass.
private func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while !condition() {
        if monotonicSeconds() > deadline { return false }
        usleep(1_000)
    }
    return true
}

// The time limit turns a hang into a failure. It is generous because it
// is wall time from the test's start, which on a loaded machine includes
// waiting for CPU behind the other suites (two cores, sanitizer builds):
// one minute was exceeded under AddressSanitizer while the machine's load
// was about 15, by tests whose every assertion then passed.
@Suite(.enabled(if: tunTestsCanRun, "needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), /dev/net/tun and ip netns"),
       .timeLimit(.minutes(10)))
struct MultiQueueTUNTests {
    @Test func everyPacketIsReadOnceAcrossTheQueuesAndAFlowStaysOnOneQueue() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN("fdmq0", mode: .multiQueue(2))
        defer { tun.close() }
        #expect(tun.queues.count == 2 && tun.mode == .multiQueue(2))
        let ports = (0..<8).map { UInt16(40_000 + $0) }
        let sockets = try flowSockets(ns, ports: ports)
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let pool = PacketPool(bufferCount: 2_048)
        // (queue, port, sequence) of every packet of ours, in arrival order.
        let seen = ArrivalLog()
        let other = Atomic<Int>(0)
        let reader = try TUNQueueReader(device: tun, executors: group, pool: pool, batchSize: 16) { reader, queue, packets in
            for p in packets {
                if let f = flowPacket(Array(reader.pool.bytes(p))) {
                    seen.append((queue, f.port, f.sequence))
                } else {
                    other.add(1, ordering: .relaxed)
                }
            }
            reader.free(packets, queue: queue)
        }
        let perFlow = 50
        let dropped0 = try ns.interfaceCounter("fdmq0", "tx_dropped")
        let sent = try ns.inside { sendFlows(sockets, ports: ports, count: perFlow) }
        #expect(sent == ports.count * perFlow)
        _ = waitFor(seconds: 5) { seen.entries.count >= sent }
        // Late duplicates would show up here.
        usleep(50_000)
        reader.stop()
        let dropped = try ns.interfaceCounter("fdmq0", "tx_dropped") - dropped0
        let got = seen.entries
        let distinct = Set(got.map { "\($0.1)/\($0.2)" })
        #expect(distinct.count == got.count, "a packet was read twice")
        #expect(got.count + dropped == sent, "sent \(sent) = read \(got.count) + dropped by the kernel \(dropped)")
        #expect(dropped == 0)
        for port in ports {
            let queues = Set(got.filter { $0.1 == port }.map(\.0))
            #expect(queues.count == 1, "flow \(port) arrived on queues \(queues.sorted())")
        }
        let s0 = reader.statistics(queue: 0), s1 = reader.statistics(queue: 1)
        #expect(s0.packetsRead + s1.packetsRead == got.count + other.load(ordering: .relaxed))
        #expect(s0.readErrors == 0 && s1.readErrors == 0 && s0.poolExhausted == 0 && s1.poolExhausted == 0)
        #expect(s0.packetsRead > 0 || s1.packetsRead > 0)
    }

    @Test func writesOnQueueKReachAKernelSocketByteIdenticalAndInOrder() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN("fdmq1", mode: .multiQueue(2))
        defer { tun.close() }
        let receivers = try flowSockets(ns, ports: [9_998, 9_999])
        let group = CoreExecutorGroup(count: 2)
        defer { group.shutdown() }
        let pool = PacketPool(bufferCount: 512)
        let reader = try TUNQueueReader(device: tun, executors: group, pool: pool, batchSize: 64) { reader, queue, packets in
            reader.free(packets, queue: queue)
        }
        defer { reader.stop() }
        // 100 packets per queue in one call: two chunks of at most 64.
        let count = 100
        for k in 0..<2 {
            let payloads = (0..<count).map { i in Array("queue \(k) packet \(i) ".utf8) + (0..<64).map { UInt8(($0 + i) & 0xff) } }
            let packets = payloads.map {
                makeIPv4UDP(from: [198, 18, 0, 2], 7000, to: [198, 18, 0, 1], UInt16(9_998 + k), payload: $0)
            }
            let written = group.call(on: k) { () -> Int in
                let refs = packets.map { p in p.withUnsafeBytes { pool.allocate(copying: $0)! } }
                return refs.withUnsafeBufferPointer { reader.write($0, queue: k) }
            }
            #expect(written == count)
            var received: [[UInt8]] = []
            let deadline = monotonicSeconds() + 5
            while received.count < count && monotonicSeconds() < deadline {
                var p = pollfd(fd: receivers[k].fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 100) == 1 else { continue }
                var buf = [UInt8](repeating: 0, count: 512)
                var from = sockaddr_in()
                var fromLength = socklen_t(MemoryLayout<sockaddr_in>.size)
                let n = withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(receivers[k].fd, &buf, buf.count, 0, $0, &fromLength) }
                }
                if n > 0 { received.append(Array(buf.prefix(n))) }
                #expect(UInt16(bigEndian: from.sin_port) == 7000)
            }
            #expect(received == payloads, "queue \(k): the datagrams are the payloads written, in order")
            let s = reader.statistics(queue: k)
            #expect(s.packetsWritten == count && s.writeErrors == 0)
            #expect(s.writeSystemCalls == (reader.usesIOURing ? 2 : count))
        }
        #expect(reader.usesIOURing, "io_uring unavailable here: writes took one write(2) each")
    }

    /// drivers/net/tun.c: each write records the flow's symmetric hash
    /// (__skb_get_hash_symmetric) with the writing queue (tun_flow_update);
    /// tun_automq_select_queue sends a packet whose flow has an entry to
    /// that queue. Entries age out 3 s (TUN_FLOW_EXPIRE) after the last
    /// write, so the test sends right after writing.
    @Test func afterAWriteOnQueueKTheKernelSteersThatFlowToQueueK() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN("fdmq2", mode: .multiQueue(2))
        defer { tun.close() }
        let ports = (0..<8).map { UInt16(41_000 + $0) }
        let sockets = try flowSockets(ns, ports: ports)
        // Where each flow lands on its own (the hash: no entry yet).
        _ = try ns.inside { sendFlows(sockets, ports: ports, count: 1) }
        let before = try readAll(tun, seconds: 3) { $0.compactMap { flowPacket($0.1) }.count >= ports.count }
        var home: [UInt16: Int] = [:]
        for (q, bytes) in before { if let f = flowPacket(bytes) { home[f.port] = q } }
        #expect(home.count == ports.count)
        // Write one packet of each flow (the reverse direction) on the
        // other queue.
        var target: [UInt16: Int] = [:]
        for port in ports {
            let k = 1 - (home[port] ?? 0)
            target[port] = k
            let reply = makeIPv4UDP(from: [198, 18, 0, 2], peerPort, to: [198, 18, 0, 1], port, payload: [1, 2, 3, 4])
            try reply.withUnsafeBytes { try tun.queues[k].write($0) }
        }
        let perFlow = 20
        let sent = try ns.inside { sendFlows(sockets, ports: ports, count: perFlow, firstSequence: 1) }
        let after = try readAll(tun, seconds: 3) { $0.compactMap { flowPacket($0.1) }.count >= sent }
        var onTarget = 0, total = 0
        for (q, bytes) in after {
            guard let f = flowPacket(bytes) else { continue }
            total += 1
            if target[f.port] == q { onTarget += 1 }
        }
        #expect(total == sent)
        let share = Double(onTarget) / Double(max(total, 1))
        print("TUN steering: \(onTarget) of \(total) packets on the queue their flow was last written on (\(share))")
        #expect(share >= 0.9, "\(onTarget) of \(total) packets followed their flow's last write")
    }

    /// An idle queue costs its executor no system calls, so with a long
    /// poller park timeout the executor sleeps; the waker ends the park as
    /// soon as a packet arrives. Records the executors' idle CPU for both
    /// the default (1 ms) and a 1 s park timeout.
    @Test(arguments: [1, 1_000])
    func anIdleQueueLetsItsExecutorSleepAndAPacketWakesIt(parkMilliseconds: Int) throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        let tun = try ns.openTUN("fdmq\(parkMilliseconds == 1 ? 3 : 4)", mode: .multiQueue(2))
        defer { tun.close() }
        let sockets = try flowSockets(ns, ports: [42_000])
        var configuration = CoreExecutorGroup.Configuration()
        configuration.pollerParkTimeout = .milliseconds(parkMilliseconds)
        let group = CoreExecutorGroup(count: 2, configuration: configuration)
        defer { group.shutdown() }
        let pool = PacketPool(bufferCount: 256)
        let arrived = Atomic<Int>(0)
        let reader = try TUNQueueReader(device: tun, executors: group, pool: pool) { reader, queue, packets in
            arrived.store(monotonicNanoseconds(), ordering: .relaxed)
            reader.free(packets, queue: queue)
        }
        defer { reader.stop() }
        let cpu0 = (0..<2).map { k in group.call(on: k) { threadCPUSeconds() } }
        let wall0 = monotonicSeconds()
        usleep(1_000_000)
        let cpu = zip(cpu0, (0..<2).map { k in group.call(on: k) { threadCPUSeconds() } }).map { $1 - $0 }
        let wall = monotonicSeconds() - wall0
        print("TUN idle: pollerParkTimeout \(parkMilliseconds) ms: executor CPU \(cpu.map { Int($0 / wall * 1000) }) per mille")
        if parkMilliseconds >= 1_000 {
            for c in cpu { #expect(c / wall < 0.05, "an idle executor used \(c / wall) of a CPU") }
        }
        let sent = monotonicNanoseconds()
        _ = try ns.inside { sendFlows(sockets, ports: [42_000], count: 1) }
        #expect(waitFor(seconds: 5) { arrived.load(ordering: .relaxed) != 0 })
        let latency = Double(arrived.load(ordering: .relaxed) - sent) / 1e9
        print("TUN idle: pollerParkTimeout \(parkMilliseconds) ms: first packet read \(Int(latency * 1e6)) µs after send")
        // Well under the park timeout: the waker ended the park.
        if parkMilliseconds >= 1_000 { #expect(latency < 0.5) }
        #expect(reader.statistics(queue: 0).wakeups + reader.statistics(queue: 1).wakeups >= 1)
    }

    @Test func aNameTakenByAnotherKindOfDeviceOrQueueModeFailsClearly() throws {
        let ns = try TestNetworkNamespace()
        defer { ns.destroy() }
        try ns.ip("link", "add", "fdveth0", "type", "veth", "peer", "name", "fdveth1")
        try ns.ip("tuntap", "add", "dev", "fdsq0", "mode", "tun")
        try ns.ip("tuntap", "add", "dev", "fdmq9", "mode", "tun", "multi_queue")
        try ns.ip("tuntap", "add", "dev", "fdtap0", "mode", "tap")
        // A dummy too, where the kernel has the module.
        let dummy = runCommand(["ip", "netns", "exec", ns.name, "ip", "link", "add", "fddum0", "type", "dummy"],
                               quiet: true) == 0
        let errors = try ns.inside { () -> [String: TUNError] in
            var e: [String: TUNError] = [:]
            let cases: [(String, String, TUNDevice.QueueMode)] = [
                ("veth-mq", "fdveth0", .multiQueue(2)), ("veth", "fdveth0", .single),
                ("sq-as-mq", "fdsq0", .multiQueue(2)), ("mq-as-sq", "fdmq9", .single),
                ("tap", "fdtap0", .single), ("dummy", "fddum0", .multiQueue(1)), ("zero", "fdzero", .multiQueue(0)),
            ]
            for (key, name, mode) in cases where key != "dummy" || dummy {
                do throws(TUNError) {
                    _ = try TUNDevice(name: name, mode: mode)
                } catch {
                    e[key] = error
                }
            }
            return e
        }
        for key in ["veth-mq", "veth"] {
            let e = try #require(errors[key], "\(key) was opened")
            #expect(e.code == EINVAL)
            #expect(e.description.contains("'fdveth0' is taken by a veth device, not a TUN device"), "\(e)")
        }
        if dummy {
            let e = try #require(errors["dummy"])
            #expect(e.description.contains("taken by a dummy device, not a TUN device"), "\(e)")
        }
        let sq = try #require(errors["sq-as-mq"])
        #expect(sq.description.contains("single-queue TUN device"), "\(sq)")
        let mq = try #require(errors["mq-as-sq"])
        #expect(mq.description.contains("multi-queue TUN device"), "\(mq)")
        let tap = try #require(errors["tap"])
        #expect(tap.description.contains("TAP device"), "\(tap)")
        let zero = try #require(errors["zero"])
        #expect(zero.description.contains("1 to 256 queues"), "\(zero)")
        // The persistent ones still open in their own mode.
        try ns.inside { () throws -> Void in
            let s = try TUNDevice(name: "fdsq0", mode: .single)
            let m = try TUNDevice(name: "fdmq9", mode: .multiQueue(3))
            #expect(s.queues.count == 1 && m.queues.count == 3)
            s.close()
            m.close()
        }
    }
}
