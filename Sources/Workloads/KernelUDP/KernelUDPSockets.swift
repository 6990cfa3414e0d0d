// kernel-udp's sockets: 127.0.0.1 receivers on ephemeral ports under one
// epoll set, the sender socket, and the payload every datagram carries.
import CPacketIO
import Glibc

/// The payload header every datagram carries (little-endian, host order):
/// global sequence (8 bytes), destination socket index (4), per-socket
/// sequence starting at 1 (4), and a fill word (8) the receiver verifies.
enum KernelUDPPayload {
    static let headerBytes = 24
    static let fill: UInt64 = 0xA5A5_A5A5_A5A5_A5A5
}

/// The receiving sockets, their addresses and the sender socket. Owned by
/// ``KernelUDPBenchmark/run()``; the two threads only read it.
final class KernelUDPSockets: @unchecked Sendable {
    // @unchecked Sendable: the descriptors and the address array are written
    // only in init (before the threads start, which orders the writes before
    // every read) and freed in close() after both threads were joined.
    let fds: UnsafeMutableBufferPointer<Int32>
    let addresses: UnsafeMutableBufferPointer<sockaddr_in>
    let senderFD: Int32
    let epollFD: Int32
    let receiveBufferBytes: Int

    struct SetupError: Error, CustomStringConvertible {
        let description: String
    }

    init(count: Int) throws {
        raiseDescriptorLimit(to: count + 64)
        fds = .allocate(capacity: count)
        fds.initialize(repeating: -1)
        addresses = .allocate(capacity: count)
        addresses.initialize(repeating: sockaddr_in())
        senderFD = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        epollFD = smp_epoll_create()
        guard senderFD >= 0, epollFD >= 0 else {
            receiveBufferBytes = 0
            close()
            throw SetupError(description: "socket/epoll_create1: \(String(cString: strerror(errno)))")
        }
        for i in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
                            | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 {
                receiveBufferBytes = 0
                close()
                throw SetupError(description: "socket #\(i): \(String(cString: strerror(errno)))")
            }
            fds[i] = fd
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian   // 127.0.0.1
            sa.sin_port = 0                                          // ephemeral
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &sa) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                    bind(fd, sp, len) == 0 && getsockname(fd, sp, &len) == 0
                }
            }
            if !ok {
                receiveBufferBytes = 0
                close()
                throw SetupError(description: "bind 127.0.0.1 #\(i): \(String(cString: strerror(errno)))")
            }
            addresses[i] = sa
            if smp_epoll_add_readable(epollFD, fd, UInt32(i)) != 0 {
                receiveBufferBytes = 0
                close()
                throw SetupError(description: "epoll_ctl: \(String(cString: strerror(errno)))")
            }
        }
        var rcvbuf: Int32 = 0
        var optlen = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &rcvbuf, &optlen)
        receiveBufferBytes = Int(rcvbuf)
    }

    /// Closes every descriptor and frees the arrays. Call once, after the
    /// threads were joined.
    func close() {
        for fd in fds where fd >= 0 { _ = Glibc.close(fd) }
        if senderFD >= 0 { _ = Glibc.close(senderFD) }
        if epollFD >= 0 { _ = Glibc.close(epollFD) }
        fds.deallocate()
        addresses.deallocate()
    }
}

/// Raises the soft RLIMIT_NOFILE to at least `n` (up to the hard limit).
private func raiseDescriptorLimit(to n: Int) {
    var rl = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rlim_t(n) else { return }
    rl.rlim_cur = min(rlim_t(n), rl.rlim_max)
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
}
