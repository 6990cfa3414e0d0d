import Glibc
import NetStack
import PacketIO
import Testing
import TestSupport
@testable import Workloads

// The stack's HTTP/1.1 service (StackHTTPServer, what `fastdemux serve
// --http` runs) against real clients: curl and kernel TCP sockets in a
// network namespace of their own, the stack on a multi-queue TUN device
// there (the kernel side 198.18.0.1/24 and fd00:18::1/64, the stack
// 198.18.0.2 and fd00:18::2). Packet loss is injected on the kernel side
// with nftables (numgen random) and, separately, in the stack's own input
// (EndpointStack.Configuration.inputLoss). Every wait has a deadline:
// curl's --max-time, SO_RCVTIMEO on the kernel sockets, `within`.

private let stackV4 = "198.18.0.2", stackV6 = "fd00:18::2"
private let device = "fdhttp0"

private let curlAvailable = runCommand(["curl", "--version"], quiet: true) == 0
private let nftAvailable = runCommand(["nft", "--version"], quiet: true) == 0

/// A namespace, a 2-queue TUN device and a stack serving HTTP on port 80
/// and TCP echo on port 7 (TIME-WAIT 1 s, so the connection gauges settle
/// within the tests).
private final class HTTPFixture: Sendable {
    let ns: TestNetworkNamespace
    let tun: TUNDevice
    let stack: EndpointStack
    let listeners: [TCPListenerSocket]

    init(inputLoss: Double = 0, virtioHeader: Bool = false) throws {
        ns = try TestNetworkNamespace()
        tun = try ns.inside { () throws -> TUNDevice in
            try TUNDevice(name: device, mode: .multiQueue(2), virtioHeader: virtioHeader)
        }
        try ns.ip("addr", "add", "198.18.0.1/24", "dev", device)
        try ns.ip("-6", "addr", "add", "fd00:18::1/64", "dev", device, "nodad")
        try ns.ip("link", "set", device, "up")
        var c = EndpointStack.Configuration(addresses: [IPAddress(stackV4)!, IPAddress(stackV6)!], cores: 2,
                                            spinPasses: 50)   // a shared machine: park soon when idle
        c.inputLoss = inputLoss
        stack = try EndpointStack.start(on: tun, configuration: c)
        var tcp = TCPConfiguration()
        tcp.maximumSegmentLifetime = 500_000   // TIME-WAIT 1 s
        listeners = [try StackHTTPServer.start(on: stack, port: 80, configuration: tcp),
                     try StackTCPEcho.start(on: stack, port: 7, configuration: tcp)]
    }

    /// Runs `sh -c SCRIPT` inside the namespace; its standard output, or
    /// nil if it failed.
    func shell(_ script: String) -> String? {
        let file = "/tmp/\(ns.name)-\(UInt32.random(in: 0 ... .max)).out"
        defer { unlink(file) }
        guard runCommand(["ip", "netns", "exec", ns.name, "sh", "-c", "\(script) > \(file)"]) == 0,
              let bytes = readFile(file) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The URL of `path` on the stack's `server` address.
    func url(_ server: String, _ path: String) -> String {
        server.contains(":") ? "http://[\(server)]:80\(path)" : "http://\(server):80\(path)"
    }

    /// Drops `percent` % of the packets the kernel sends to the stack and
    /// of those it receives from it, each direction counted.
    func addKernelSideLoss(percent: Int) throws {
        let rules = """
            table inet loss {
              chain out { type filter hook output priority 0; oifname "\(device)" numgen random mod 100 < \(percent) counter drop; }
              chain in { type filter hook input priority 0; iifname "\(device)" numgen random mod 100 < \(percent) counter drop; }
            }
            """
        let file = "/tmp/\(ns.name).nft"
        defer { unlink(file) }
        guard writeFile(file, Array(rules.utf8)), runCommand(["ip", "netns", "exec", ns.name, "nft", "-f", file]) == 0
        else { throw TUNError(operation: "nft -f (loss rules)", code: EIO) }
    }

    /// Packets the loss rules dropped so far (both directions).
    func kernelSideDrops() -> Int {
        guard let text = shell("nft list table inet loss") else { return -1 }
        // "... counter packets N bytes M drop"
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        return zip(words, words.dropFirst()).filter { $0.0 == "packets" }.compactMap { Int($0.1) }.reduce(0, +)
    }

    func tearDown() {
        for l in listeners { l.close() }
        stack.shutdown()
        tun.close()
        ns.destroy()
    }
}

/// Polls `condition` every 20 ms for up to `seconds`; its last value.
private func within(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Expects every connection gone within 10 s of TIME-WAIT's end: no
/// connection, socket object, PCB entry or closing socket left; the two
/// listeners are the live demux sockets.
private func expectConnectionsGone(_ stack: EndpointStack, sourceLocation: SourceLocation = #_sourceLocation) {
    var last = StackGauges()
    let gone = within(seconds: 10) {
        last = stack.gauges
        return last.tcpConnections == 0 && last.tcpSocketObjects == 0 && last.connectedEntries == 0
            && last.closingSockets == 0 && last.liveSockets == 2
    }
    #expect(gone, "\(last.nonZero)", sourceLocation: sourceLocation)
}

/// Whether `body` is bytes 0..<count of the /bytes pattern; else where it
/// differs.
private func patternMismatch(_ body: [UInt8], count: Int) -> String? {
    guard body.count == count else { return "\(body.count) bytes for \(count)" }
    for (i, b) in body.enumerated() where b != HTTPBodyPattern.byte(at: i) { return "byte \(i) differs" }
    return nil
}

/// curl's per-transfer report: "status size connects" lines.
private let report = "-w '%{http_code} %{size_download} %{num_connects}\\n'"

/// Parses the report lines: (status, size, connects).
private func transfers(_ text: String?) -> [(Int, Int, Int)] {
    (text ?? "").split(separator: "\n").compactMap { line in
        let f = line.split(separator: " ").compactMap { Int($0) }
        return f.count == 3 ? (f[0], f[1], f[2]) : nil
    }
}

/// A kernel TCP socket inside the namespace connected to the stack's
/// port 80, receive timeout `timeout` s, optionally a small receive buffer
/// (set before the connect, so the window it advertises is small).
private func kernelHTTPSocket(to server: String, receiveBuffer: Int32? = nil, timeout: Int = 5) throws -> TestSocket {
    let family = server.contains(":") ? AF_INET6 : AF_INET
    let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
    let s = TestSocket(fd: fd)
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
    let rc: Int32
    if family == AF_INET6 {
        var sa = sockaddr_in6()
        sa.sin6_family = sa_family_t(AF_INET6)
        sa.sin6_port = UInt16(80).bigEndian
        _ = inet_pton(AF_INET6, server, &sa.sin6_addr)
        rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    } else {
        rc = withSockaddr(ipv4Address(server, port: 80)) { connect(fd, $0, $1) }
    }
    guard rc == 0 else { throw TUNError(operation: "connect", code: errno) }
    return s
}

/// Sends `text` on `s`.
private func send(_ s: TestSocket, _ text: String) -> Bool {
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { Glibc.send(s.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
}

/// Reads a response head from `s` (up to its CRLF CRLF) and returns the
/// bytes of the body read with it.
private func readHead(_ s: TestSocket) -> (head: String, rest: [UInt8])? {
    var got: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        got += buffer[0..<n]
        if let i = (0..<max(0, got.count - 3)).first(where: { got[$0] == 13 && got[$0 + 1] == 10 && got[$0 + 2] == 13 && got[$0 + 3] == 10 }) {
            return (String(decoding: got[0..<i], as: UTF8.self), Array(got[(i + 4)...]))
        }
    }
}

@Suite(.enabled(if: tunTestsCanRun && curlAvailable, "needs root, /dev/net/tun, ip netns and curl"), .serialized)
struct StackHTTPNamespaceTests {
    @Test(arguments: [stackV4, stackV6])
    func curlGetsThePageAndOneMebibyteIntact(server: String) throws {
        let f = try HTTPFixture()
        defer { f.tearDown() }
        let page = f.shell("curl -sS --max-time 20 \(f.url(server, "/"))")
        #expect(page.map { Array($0.utf8) } == HTTPService.page)
        let file = "/tmp/\(f.ns.name).body"
        defer { unlink(file) }
        let r = transfers(f.shell("curl -sS --max-time 30 -o \(file) \(report) \(f.url(server, "/bytes/1048576"))"))
        #expect(r.count == 1 && r.first?.0 == 200, "\(r)")
        #expect(patternMismatch(readFile(file) ?? [], count: 1_048_576) == nil)
        expectConnectionsGone(f.stack)
    }

    @Test func aHundredConcurrentConnectionsEachGetTheirBody() throws {
        let f = try HTTPFixture()
        defer { f.tearDown() }
        // 100 transfers at once, each on a connection of its own
        // (--parallel-immediate: no waiting to reuse one).
        let dir = "/tmp/\(f.ns.name).d"
        _ = runCommand(["mkdir", "-p", dir])
        defer { _ = runCommand(["rm", "-rf", dir]) }
        let r = transfers(f.shell("curl -sS --max-time 60 --parallel --parallel-immediate --parallel-max 100 "
                                  + "-o '\(dir)/#1' \(report) '\(f.url(stackV4, "/bytes/[200000-200099]"))'"))
        #expect(r.count == 100)
        #expect(r.allSatisfy { $0.0 == 200 && (200_000..<200_100).contains($0.1) }, "\(r.filter { $0.0 != 200 })")
        #expect(r.map(\.2).reduce(0, +) == 100, "each transfer made one connection")
        var bad: [String] = []
        for n in 200_000..<200_100 where bad.count < 3 {
            if let m = patternMismatch(readFile("\(dir)/\(n)") ?? [], count: n) { bad.append("\(n): \(m)") }
        }
        #expect(bad.isEmpty, "\(bad)")
        #expect(f.stack.totalStatistics.tcpConnectionsAccepted == 100)
        expectConnectionsGone(f.stack)
    }

    @Test func twoThousandShortConnectionsOneAfterAnother() throws {
        let f = try HTTPFixture()
        defer { f.tearDown() }
        // Connection: close: the server answers and closes first, so each
        // transfer is a new connection and each server side goes through
        // TIME-WAIT (1 s here).
        let r = transfers(f.shell("curl -sS --max-time 240 -H 'Connection: close' -o /dev/null "
                                  + "\(report) '\(f.url(stackV4, "/bytes/[1-2000]"))'"))
        #expect(r.count == 2000)
        #expect(r.enumerated().allSatisfy { $0.element.0 == 200 && $0.element.1 == $0.offset + 1 },
                "\(r.enumerated().first { $0.element.0 != 200 || $0.element.1 != $0.offset + 1 }.map { "\($0)" } ?? "")")
        #expect(r.map(\.2).reduce(0, +) == 2000)
        let s = f.stack.totalStatistics
        #expect(s.tcpConnectionsAccepted == 2000)
        #expect(s.isConserved, "\(s)")
        expectConnectionsGone(f.stack)
    }

    @Test func clientsThatResetMidStreamAreFreedAndTheServerGoesOn() throws {
        let f = try HTTPFixture()
        defer { f.tearDown() }
        let failures = try f.ns.inside { () throws -> [String] in
            var failures: [String] = []
            for i in 0..<20 {
                let s = try kernelHTTPSocket(to: i % 2 == 0 ? stackV4 : stackV6)
                guard send(s, "GET /bytes/100000000 HTTP/1.1\r\nHost: t\r\n\r\n"), let head = readHead(s),
                      head.head.hasPrefix("HTTP/1.1 200") else { failures.append("\(i): no response"); continue }
                var got = head.rest.count
                var buffer = [UInt8](repeating: 0, count: 16384)
                while got < 200_000 {
                    let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { failures.append("\(i): recv \(n) after \(got)"); break }
                    got += n
                }
                // SO_LINGER 0: close sends a RST (RFC 9293 §3.10.7.x abort).
                var l = linger(l_onoff: 1, l_linger: 0)
                setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
            }   // each socket closes (with its RST) as it goes out of scope
            return failures
        }
        #expect(failures.isEmpty, "\(failures)")
        // The reset connections are gone without TIME-WAIT ...
        #expect(within(seconds: 10) { f.stack.gauges.tcpConnections == 0 }, "\(f.stack.gauges.nonZero)")
        // ... and the server still serves.
        let page = f.shell("curl -sS --max-time 20 \(f.url(stackV4, "/"))")
        #expect(page.map { Array($0.utf8) } == HTTPService.page)
        expectConnectionsGone(f.stack)
    }

    @Test func aClientThatStopsReadingStallsTheServerWhichResumesIntact() throws {
        let f = try HTTPFixture()
        defer { f.tearDown() }
        let total = 4 << 20
        let failure = try f.ns.inside { () throws -> String? in
            let s = try kernelHTTPSocket(to: stackV4, receiveBuffer: 8192)
            guard send(s, "GET /bytes/\(total) HTTP/1.1\r\nHost: t\r\n\r\n"), let head = readHead(s) else {
                return "no response"
            }
            var body = head.rest
            var buffer = [UInt8](repeating: 0, count: 4096)
            func read(upTo limit: Int) -> String? {
                while body.count < limit {
                    let n = buffer.withUnsafeMutableBytes { recv(s.fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { return "recv \(n) (errno \(errno)) after \(body.count)" }
                    body += buffer[0..<n]
                }
                return nil
            }
            if let e = read(upTo: 100_000) { return e }
            // Stop reading: the kernel's receive buffer fills, its window
            // goes to zero, the stack probes (RFC 9293 §3.8.6.1).
            sleep(3)
            if let e = read(upTo: total) { return e }
            return patternMismatch(Array(body[0..<total]), count: total)
        }
        #expect(failure == nil, "\(failure ?? "")")
        expectConnectionsGone(f.stack)
    }

    @Test(.enabled(if: nftAvailable, "needs nft (Debian: nftables)"), arguments: [stackV4, stackV6])
    func transfersCompleteIntactWithLossOnTheKernelSide(server: String) throws {
        let f = try HTTPFixture()
        defer { f.tearDown() }
        try f.addKernelSideLoss(percent: 3)
        try checkTransfersUnderLoss(f, server: server)
        #expect(f.kernelSideDrops() > 20, "the rules dropped packets")
    }

    @Test(arguments: [stackV4, stackV6])
    func transfersCompleteIntactWithLossInTheStacksInput(server: String) throws {
        let f = try HTTPFixture(inputLoss: 0.03)
        defer { f.tearDown() }
        try checkTransfersUnderLoss(f, server: server)
        let s = f.stack.totalStatistics
        #expect(s.dropped(.injectedLoss) > 20, "\(s)")
        #expect(s.isConserved, "\(s)")
    }

    /// TCP segmentation offload (a virtio-net header on the device): a
    /// 16 MiB download arrives intact in super-segments the kernel accepted
    /// (its TCP took them whole: local delivery of a GSO packet).
    @Test(arguments: [stackV4, stackV6])
    func downloadsIntactInSuperSegments(server: String) throws {
        let f = try HTTPFixture(virtioHeader: true)
        defer { f.tearDown() }
        #expect(f.stack.segmentationOffload)
        try checkSuperSegmentDownload(f, server: server)
        let s = f.stack.totalStatistics
        #expect(s.isConserved, "\(s)")
        // Every write the kernel took: none refused (a bad virtio header
        // is EINVAL).
        for q in 0..<2 { #expect(f.stack.queueStatistics(queue: q)?.writeErrors == 0) }
        expectConnectionsGone(f.stack)
    }

    /// The same under 3 % loss on the kernel side: a super-segment dropped
    /// on arrival loses all its segments at once, and the stack resends
    /// them one MSS at a time (fast retransmit and partial ACKs, RTO).
    @Test(.enabled(if: nftAvailable, "needs nft (Debian: nftables)"), arguments: [stackV4, stackV6])
    func superSegmentsRecoverFromLossOnTheKernelSide(server: String) throws {
        let f = try HTTPFixture(virtioHeader: true)
        defer { f.tearDown() }
        try f.addKernelSideLoss(percent: 3)
        // 8 MiB, not 16: the rule drops a whole super-segment (44 MSS) at
        // once, which a wire never does (GSO packets are cut before one),
        // so recovery costs many round trips and an RTO per loss now and
        // then; 16 MiB took a minute per address on a loaded machine.
        try checkSuperSegmentDownload(f, server: server, bytes: 8 << 20)
        #expect(f.kernelSideDrops() > 5, "the rules dropped packets")
    }

    /// curl downloads `bytes` (16 MiB unless told); the body is the pattern and the stack sent
    /// super-segments.
    private func checkSuperSegmentDownload(_ f: HTTPFixture, server: String, bytes: Int = 16 << 20,
                                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = "/tmp/\(f.ns.name).body"
        defer { unlink(file) }
        let r = transfers(f.shell("curl -sS --max-time 240 -o \(file) \(report) \(f.url(server, "/bytes/\(bytes)"))"))
        #expect(r.count == 1 && r.first?.0 == 200, "\(r)", sourceLocation: sourceLocation)
        #expect(patternMismatch(readFile(file) ?? [], count: bytes) == nil, sourceLocation: sourceLocation)
        let s = f.stack.totalStatistics
        #expect(s.tcpSuperSegmentsSent > 0, "\(s.tcpSuperSegmentsSent) super-segments", sourceLocation: sourceLocation)
    }

    /// Under loss: a 4 MiB download (the stack's data lost or its ACKs),
    /// a 4 MiB upload skipped by the server (the kernel's data lost), and
    /// 25 short connections (SYNs, SYN-ACKs and FINs lost), all intact.
    private func checkTransfersUnderLoss(_ f: HTTPFixture, server: String,
                                         sourceLocation: SourceLocation = #_sourceLocation) throws {
        let file = "/tmp/\(f.ns.name).body", upload = "/tmp/\(f.ns.name).up"
        defer { unlink(file); unlink(upload) }
        let down = transfers(f.shell("curl -sS --max-time 120 -o \(file) \(report) \(f.url(server, "/bytes/4194304"))"))
        #expect(down.count == 1 && down.first?.0 == 200, "\(down)", sourceLocation: sourceLocation)
        #expect(patternMismatch(readFile(file) ?? [], count: 4 << 20) == nil, sourceLocation: sourceLocation)
        #expect(writeFile(upload, [UInt8](repeating: 0x61, count: 4 << 20)), sourceLocation: sourceLocation)
        // GET with a body (curl asks for 100 Continue first): the server
        // reads and skips all 4 MiB, then answers.
        let up = f.shell("curl -sS --max-time 120 -X GET --data-binary @\(upload) \(f.url(server, "/"))")
        #expect(up.map { Array($0.utf8) } == HTTPService.page, sourceLocation: sourceLocation)
        let short = transfers(f.shell("curl -sS --max-time 120 -H 'Connection: close' -o /dev/null \(report) "
                                      + "'\(f.url(server, "/bytes/[1000-1024]"))'"))
        #expect(short.count == 25 && short.allSatisfy { $0.0 == 200 }, "\(short)", sourceLocation: sourceLocation)
        expectConnectionsGone(f.stack, sourceLocation: sourceLocation)
    }
}
