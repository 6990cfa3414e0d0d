import FastDemux
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// An error from a TUN device call: the operation and its `errno`.
public struct TUNError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was being done ("open /dev/net/tun", "read", ...).
    public let operation: String
    /// The `errno` value.
    public let code: Int32

    /// An error for `operation` with `errno` value `code`.
    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    /// The operation, `strerror(code)` and, for the usual set-up mistakes
    /// (missing privileges, no tun module, a busy or differently configured
    /// device), a hint. Allocates: for error messages.
    public var description: String {
        var text = "\(operation): \(String(cString: strerror(code)))"
        switch code {
        case EPERM, EACCES: text += " (needs root or CAP_NET_ADMIN)"
        case ENOENT, ENODEV: text += " (is the tun module loaded? /dev/net/tun must exist)"
        case EBUSY: text += " (another process is attached to this TUN device)"
        case EINVAL: text += " (does an existing device of that name have other flags, e.g. 'pi on' or tap?)"
        default: break
        }
        return text
    }
}

/// A Linux TUN device: the kernel hands the process every IP packet it
/// routes into the interface, and injects every packet the process writes.
///
/// Opened with `IFF_TUN | IFF_NO_PI`, so each read returns exactly one raw
/// IPv4 or IPv6 packet (no link-layer header, no packet-information
/// prefix): the link type is `LINKTYPE_RAW`. Opening creates the interface
/// if it does not exist (it then disappears on ``close()``) or attaches to a
/// persistent one (`ip tuntap add dev NAME mode tun`). Addresses and the
/// link state are configured outside, e.g. with `ip addr` / `ip link set up`.
/// The device lives in the network namespace of the *thread* that opens it.
///
/// Concurrency contract: one reader thread at a time (reads of a single
/// queue are not meant to be split between threads); writes may come from
/// any thread (each `write` is one atomic packet injection). ``close()`` must
/// only be called once no thread is inside ``read(into:)`` or
/// ``wait(timeout:)`` — the descriptor number could otherwise be
/// reused under them. Each read or write is one system call.
public final class TUNDevice: Sendable {
    /// The interface name the kernel gave the device (as asked, or tunN).
    public let name: String
    /// The open descriptor on /dev/net/tun (non-blocking).
    public let fileDescriptor: Int32
    private let closed = Atomic<Bool>(false)

    /// The largest packet a read can return with the default MTU headroom.
    public static let maximumPacketSize = 65_535

    /// Opens (creating if needed) the TUN interface `name`.
    ///
    /// - Parameter name: the interface name (at most 15 bytes); empty lets
    ///   the kernel choose `tunN`.
    /// - Throws: ``TUNError`` with the `errno` of the failing call and a
    ///   hint (permission, missing /dev/net/tun, busy, flag mismatch).
    public init(name: String) throws(TUNError) {
        guard name.utf8.count < 16 else { throw TUNError(operation: "TUN name '\(name)' longer than 15 bytes", code: EINVAL) }
        var actual = [CChar](repeating: 0, count: 16)
        let fd = smp_tun_open(name.isEmpty ? nil : name, &actual, 1)
        if fd < 0 { throw TUNError(operation: "open /dev/net/tun as '\(name)'", code: -fd) }
        self.fileDescriptor = fd
        self.name = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Reads one packet into `buffer`. The reader thread; one non-blocking
    /// `read` system call (retried on `EINTR`), no allocation.
    ///
    /// - Returns: the packet's length, or nil if no packet is queued now.
    ///   A packet longer than the buffer is truncated by the kernel and its
    ///   full length is not known; pass a buffer of ``maximumPacketSize`` or
    ///   the interface MTU.
    @inlinable
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TUNError) -> Int? {
        while true {
            let n = Glibc.read(fileDescriptor, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw TUNError(operation: "read \(name)", code: e)
        }
    }

    /// Waits until a packet can be read or `timeout` passes (rounded up to
    /// whole milliseconds, `poll`'s unit; nil: forever; zero: just looks).
    /// The reader thread; one `poll` system call.
    /// - Returns: true if a packet is ready.
    public func wait(timeout: Duration?) throws(TUNError) -> Bool {
        var p = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        let milliseconds = timeout.map { Int32(clamping: $0.millisecondsRoundedUp) } ?? -1
        while true {
            let r = poll(&p, 1, milliseconds)
            if r >= 0 { return r > 0 }
            if errno == EINTR { continue }
            throw TUNError(operation: "poll \(name)", code: errno)
        }
    }

    /// Injects one IP packet into the kernel as if it had arrived on the
    /// interface. The kernel validates it like any received packet.
    public func write(_ packet: UnsafeRawBufferPointer) throws(TUNError) {
        while true {
            let n = Glibc.write(fileDescriptor, packet.baseAddress, packet.count)
            if n == packet.count { return }
            if n >= 0 { throw TUNError(operation: "write \(name) (short write \(n) of \(packet.count))", code: EIO) }
            if errno == EINTR { continue }
            throw TUNError(operation: "write \(name)", code: errno)
        }
    }

    /// Closes the descriptor (a non-persistent interface then disappears).
    /// Idempotent; see the type's concurrency contract.
    public func close() {
        if !closed.exchange(true, ordering: .relaxed) {
            _ = Glibc.close(fileDescriptor)
        }
    }

    deinit { close() }
}
