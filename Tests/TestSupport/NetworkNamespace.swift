import CPacketIO
import Glibc
import PacketIO
import SMPPrimitives
import Synchronization

// The TUN tests run in a network namespace of their own (`ip netns add`):
// the TUN interface, its 198.18.0.0/24 address (the benchmarking range,
// RFC 2544) and every packet exist only inside it, and the namespace is
// deleted afterwards. Nothing reaches the host's own network.

/// Why the TUN tests cannot run here, or nil if they can. Evaluated once.
package let tunTestUnavailableReason: String? = {
    if geteuid() != 0 { return "not root" }
    if access("/dev/net/tun", R_OK | W_OK) != 0 { return "no usable /dev/net/tun" }
    if runCommand(["ip", "-V"], quiet: true) != 0 { return "no 'ip' command (iproute2)" }
    let probe = "fdprobe-\(getpid())"
    if runCommand(["ip", "netns", "add", probe], quiet: true) != 0 {
        return "cannot create network namespaces (needs CAP_SYS_ADMIN/CAP_NET_ADMIN)"
    }
    _ = runCommand(["ip", "netns", "del", probe], quiet: true)
    return nil
}()

/// Condition for `.enabled(if:)`; prints the reason once when the TUN
/// suites are skipped.
/// With `SMP_REQUIRE_TUN_TESTS=1` (CI sets it: it runs as root with TUN and
/// namespaces) an unavailable environment is a failure, not a skip, so a
/// broken CI machine cannot pass by skipping every test against the kernel.
package let tunTestsCanRun: Bool = {
    if let reason = tunTestUnavailableReason {
        if let v = getenv("SMP_REQUIRE_TUN_TESTS"), String(cString: v) == "1" {
            fatalError("SMP_REQUIRE_TUN_TESTS=1 but the TUN tests cannot run: \(reason)")
        }
        let line = "TUN tests skipped: \(reason)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return false
    }
    return true
}()

/// Runs `argv` (PATH lookup) and returns its exit status, or -1 if it could
/// not be started.
@discardableResult
package func runCommand(_ argv: [String], quiet: Bool = false) -> Int32 {
    var pid = pid_t()
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if quiet {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    }
    var cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    guard posix_spawnp(&pid, argv[0], &actions, nil, &cargs, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno != EINTR { return -1 }
    }
    // WIFEXITED / WEXITSTATUS
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
}

private let namespaceCounter = Atomic<Int>(0)

/// A network namespace made for one test and deleted by ``destroy()``.
package final class TestNetworkNamespace: Sendable {
    package let name: String

    package init() throws {
        name = "fdtest-\(getpid())-\(namespaceCounter.add(1, ordering: .relaxed).newValue)"
        guard runCommand(["ip", "netns", "add", name]) == 0 else {
            throw TUNError(operation: "ip netns add \(name)", code: EPERM)
        }
        try ip("link", "set", "lo", "up")
    }

    /// Runs `ip ARGS` inside the namespace.
    package func ip(_ args: String...) throws {
        let argv = ["ip", "netns", "exec", name, "ip"] + args
        guard runCommand(argv) == 0 else {
            throw TUNError(operation: argv.joined(separator: " "), code: EIO)
        }
    }

    /// Runs `sysctl -qw SETTING` inside the namespace.
    package func sysctl(_ setting: String) throws {
        guard runCommand(["ip", "netns", "exec", name, "sysctl", "-qw", setting]) == 0 else {
            throw TUNError(operation: "sysctl \(setting)", code: EIO)
        }
    }

    /// Runs `body` on a fresh thread that has entered the namespace (a
    /// network namespace is per thread on Linux): TUN devices and sockets it
    /// creates belong to the namespace for their whole life.
    package func inside<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let path = "/run/netns/" + name
        let thread = PinnedThread(name: "netns") {
            let rc = smp_enter_netns(path)
            if rc != 0 {
                result.withLock { $0 = .failure(TUNError(operation: "setns \(path)", code: -rc)) }
                return
            }
            let r = Result { try body() }
            result.withLock { $0 = r }
        }
        thread.join()
        return try result.withLock { $0! }.get()
    }

    /// Opens TUN `device` (in `mode`) inside the namespace, gives it
    /// 198.18.0.1/24 and brings it up with IPv6 off (no router
    /// solicitations in the capture).
    package func openTUN(_ device: String = "fdtun0", address: String = "198.18.0.1/24",
                         mode: TUNDevice.QueueMode = .single) throws -> TUNDevice {
        let tun = try inside { () throws -> TUNDevice in try TUNDevice(name: device, mode: mode) }
        try sysctl("net.ipv6.conf.\(tun.name).disable_ipv6=1")
        try ip("addr", "add", address, "dev", tun.name)
        try ip("link", "set", tun.name, "up")
        return tun
    }

    /// Counter `counter` of interface `device` in the namespace
    /// (/sys/class/net/DEVICE/statistics/COUNTER, read through `ip netns
    /// exec`, which mounts the namespace's own sysfs).
    package func interfaceCounter(_ device: String, _ counter: String) throws -> Int {
        let file = "/tmp/\(name)-\(device)-\(counter)"
        defer { unlink(file) }
        let status = runCommand(["ip", "netns", "exec", name, "sh", "-c",
                                 "cat /sys/class/net/\(device)/statistics/\(counter) > \(file)"])
        guard status == 0, let bytes = readFile(file),
              case let text = String(decoding: bytes, as: UTF8.self),
              let value = Int(text.filter { !$0.isWhitespace }) else {
            throw TUNError(operation: "read \(counter) of \(device)", code: EIO)
        }
        return value
    }

    package func destroy() {
        runCommand(["ip", "netns", "del", name])
    }
}

/// A UDP or TCP socket made inside a namespace; closed on deinit.
package final class TestSocket: Sendable {
    package let fd: Int32
    package init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

package func ipv4Address(_ dotted: String, port: UInt16) -> sockaddr_in {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    _ = inet_pton(AF_INET, dotted, &sa.sin_addr)
    return sa
}

package func withSockaddr<R>(_ sa: sockaddr_in, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    var sa = sa
    return withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// Sends `payload` from 198.18.0.1:`sourcePort` to `destination`:`port`.
/// Call inside the namespace.
package func sendUDP(from sourcePort: UInt16, to destination: String, port: UInt16, payload: [UInt8]) throws {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
    defer { close(fd) }
    let bound = withSockaddr(ipv4Address("198.18.0.1", port: sourcePort)) { bind(fd, $0, $1) }
    guard bound == 0 else { throw TUNError(operation: "bind", code: errno) }
    let sent = payload.withUnsafeBytes { p in
        withSockaddr(ipv4Address(destination, port: port)) { sendto(fd, p.baseAddress, p.count, 0, $0, $1) }
    }
    guard sent == payload.count else { throw TUNError(operation: "sendto", code: errno) }
}

/// Starts a non-blocking TCP connect (the kernel sends a SYN) and returns
/// the socket; keep it alive until the SYN was read. Call inside the namespace.
package func startTCPConnect(from sourcePort: UInt16, to destination: String, port: UInt16) throws -> TestSocket {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard fd >= 0 else { throw TUNError(operation: "socket", code: errno) }
    let s = TestSocket(fd: fd)
    let bound = withSockaddr(ipv4Address("198.18.0.1", port: sourcePort)) { bind(fd, $0, $1) }
    guard bound == 0 else { throw TUNError(operation: "bind", code: errno) }
    let rc = withSockaddr(ipv4Address(destination, port: port)) { connect(fd, $0, $1) }
    guard rc == 0 || errno == EINPROGRESS else { throw TUNError(operation: "connect", code: errno) }
    return s
}


/// The fields of a raw IPv4 UDP/TCP packet the tests look at (parsed by
/// hand, independent of the parser under test).
package struct RawIPv4 {
    package var proto: UInt8
    package var source: [UInt8]
    package var destination: [UInt8]
    package var sourcePort: UInt16
    package var destinationPort: UInt16
    package var tcpFlags: UInt8
    package var payload: [UInt8]

    package init?(_ p: [UInt8]) {
        guard p.count >= 20, p[0] >> 4 == 4 else { return nil }
        let ihl = Int(p[0] & 0x0f) * 4
        let total = Int(p[2]) << 8 | Int(p[3])
        guard total <= p.count, ihl + 8 <= total else { return nil }
        proto = p[9]
        source = Array(p[12..<16])
        destination = Array(p[16..<20])
        sourcePort = UInt16(p[ihl]) << 8 | UInt16(p[ihl + 1])
        destinationPort = UInt16(p[ihl + 2]) << 8 | UInt16(p[ihl + 3])
        switch proto {
        case 17:
            tcpFlags = 0
            payload = Array(p[(ihl + 8)..<total])
        case 6:
            guard ihl + 20 <= total else { return nil }
            tcpFlags = p[ihl + 13]
            let dataOffset = Int(p[ihl + 12] >> 4) * 4
            payload = Array(p[min(ihl + dataOffset, total)..<total])
        default:
            return nil
        }
    }
}

/// Builds an IPv4/UDP packet (UDP checksum 0 = none, valid for IPv4).
package func makeIPv4UDP(from src: [UInt8], _ sport: UInt16, to dst: [UInt8], _ dport: UInt16, payload: [UInt8]) -> [UInt8] {
    let total = 20 + 8 + payload.count
    var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0x12, 0x34, 0x40, 0, 64, 17, 0, 0]
    p += src + dst
    var sum: UInt32 = 0
    for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(p[i]) << 8 | UInt32(p[i + 1]) }
    while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
    let checksum = ~UInt16(sum)
    p[10] = UInt8(checksum >> 8)
    p[11] = UInt8(checksum & 0xff)
    let ulen = 8 + payload.count
    p += [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff),
          UInt8(ulen >> 8), UInt8(ulen & 0xff), 0, 0]
    return p + payload
}
