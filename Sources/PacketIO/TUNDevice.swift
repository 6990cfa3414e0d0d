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
    /// What the kernel's bare `errno` meant, when the library found out
    /// (`EINVAL` from `TUNSETIFF` has several causes: the name belongs to a
    /// veth, a TAP device, or a TUN device whose queue mode differs), or nil.
    public let diagnosis: String?

    /// An error for `operation` with `errno` value `code` and, if known,
    /// what it meant.
    public init(operation: String, code: Int32, diagnosis: String? = nil) {
        self.operation = operation
        self.code = code
        self.diagnosis = diagnosis
    }

    /// The operation, `strerror(code)` and the ``diagnosis`` or, for the
    /// usual set-up mistakes (missing privileges, no tun module, a busy or
    /// differently configured device), a hint. Allocates: for error messages.
    public var description: String {
        var text = "\(operation): \(String(cString: strerror(code)))"
        if let diagnosis { return text + " (\(diagnosis))" }
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
/// persistent one (`ip tuntap add dev NAME mode tun [multi_queue]`).
/// Addresses and the link state are configured outside, e.g. with
/// `ip addr` / `ip link set up`. The device lives in the network namespace
/// of the *thread* that opens it.
///
/// A device has one or more ``queues``, each its own descriptor. A
/// ``QueueMode/single`` device is the classic TUN device; a
/// ``QueueMode/multiQueue(_:)`` device adds `IFF_MULTI_QUEUE` and attaches
/// N descriptors to the one interface: the kernel spreads the packets it
/// sends over them by flow (see <doc:TUN>). The two are different devices
/// to the kernel, not one device with a count: an interface created
/// without `IFF_MULTI_QUEUE` cannot be attached with it, nor the other way
/// round (the kernel says `EINVAL`; ``TUNError/diagnosis`` says which).
///
/// Concurrency contract: see ``TUNQueue`` for reads and writes. The
/// properties are immutable (any thread). ``close()`` closes every queue;
/// it must only be called once no thread is inside a queue's read, wait or
/// write — a descriptor number could otherwise be reused under them.
/// Without it, each queue closes when its last reference goes.
public final class TUNDevice: Sendable {
    /// How many queues a device has, and whether it is a multi-queue device.
    public enum QueueMode: Sendable, Equatable {
        /// A classic single-queue device (no `IFF_MULTI_QUEUE`).
        case single
        /// An `IFF_MULTI_QUEUE` device with this many queues (1 to
        /// ``TUNDevice/maximumQueues``).
        case multiQueue(Int)

        /// A multi-queue device with one queue per online CPU.
        public static var perCPU: QueueMode { .multiQueue(onlineCPUCount) }
    }

    /// The interface name the kernel gave the device (as asked, or tunN).
    public let name: String
    /// The queues, indexed 0..<count (their ``TUNQueue/index``).
    public let queues: [TUNQueue]
    /// The mode the device was opened in.
    public let mode: QueueMode
    /// The bytes of `struct virtio_net_hdr` before every packet on the
    /// descriptor: ``virtioHeaderLength`` with `virtioHeader` opened, else 0.
    /// The queues' reads and writes strip and add it, so callers see plain
    /// IP packets either way (see <doc:TUN>, "The virtio-net header").
    public let virtioHeaderSize: Int

    /// `sizeof(struct virtio_net_hdr)`: the header of a device opened with
    /// `IFF_VNET_HDR` (10; the 12-byte mergeable-buffer form is not used).
    public static let virtioHeaderLength = Int(smp_virtio_net_hdr_size())

    /// The largest packet a read can return with the default MTU headroom.
    public static let maximumPacketSize = 65_535
    /// The kernel's limit on queues per device (`MAX_TAP_QUEUES` in
    /// drivers/net/tun.c).
    public static let maximumQueues = 256

    /// Opens (creating if needed) the TUN interface `name` with `mode`'s
    /// queues, each non-blocking. Any thread; the device belongs to the
    /// calling thread's network namespace. One `open` and one `ioctl` per
    /// queue.
    ///
    /// - Parameters:
    ///   - name: the interface name (at most 15 bytes); empty lets the
    ///     kernel choose `tunN`.
    ///   - mode: ``QueueMode/single`` (the default) or
    ///     ``QueueMode/multiQueue(_:)``.
    ///   - virtioHeader: open with `IFF_VNET_HDR` (offloads 0, see
    ///     <doc:TUN>): the queues accept TCP super-segments
    ///     (``TUNQueueReader/writeFramed(_:queue:)``). Every queue of one
    ///     interface must agree (the kernel keeps the flag per device).
    /// - Throws: ``TUNError`` with the `errno` of the failing call and a
    ///   hint or diagnosis (permission, missing /dev/net/tun, busy, the
    ///   name taken by a device that is not TUN, a queue-mode mismatch).
    ///   Queues opened before the failure are closed again.
    public init(name: String, mode: QueueMode = .single, virtioHeader: Bool = false) throws(TUNError) {
        guard name.utf8.count < 16 else { throw TUNError(operation: "TUN name '\(name)' longer than 15 bytes", code: EINVAL) }
        let count: Int
        switch mode {
        case .single: count = 1
        case .multiQueue(let n):
            guard n >= 1 && n <= TUNDevice.maximumQueues else {
                throw TUNError(operation: "TUN '\(name)' with \(n) queues", code: EINVAL,
                               diagnosis: "a multi-queue device has 1 to \(TUNDevice.maximumQueues) queues")
            }
            count = n
        }
        var actualName = name
        var fds: [Int32] = []
        for q in 0..<count {
            var actual = [CChar](repeating: 0, count: 16)
            let fd = smp_tun_open(actualName.isEmpty ? nil : actualName, &actual, 1, mode == .single ? 0 : 1,
                                  virtioHeader ? 1 : 0)
            if fd < 0 {
                for f in fds { _ = Glibc.close(f) }
                let what = count == 1 ? "open /dev/net/tun as '\(name)'"
                    : "open /dev/net/tun as '\(actualName)' (queue \(q) of \(count))"
                throw TUNError(operation: what, code: -fd,
                               diagnosis: TUNDevice.diagnose(code: -fd, name: actualName, mode: mode))
            }
            fds.append(fd)
            actualName = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
        self.name = actualName
        self.mode = mode
        let header = virtioHeader ? TUNDevice.virtioHeaderLength : 0
        self.virtioHeaderSize = header
        self.queues = fds.enumerated().map {
            TUNQueue(index: $0.offset, fileDescriptor: $0.element, deviceName: actualName, virtioHeaderSize: header)
        }
    }

    /// Why `TUNSETIFF` failed with `code` for `name`, when the bare errno
    /// is ambiguous: drivers/net/tun.c's tun_set_iff returns `EINVAL` both
    /// for a name that belongs to another kind of device and for a TUN
    /// device whose `IFF_MULTI_QUEUE` differs from the request. Asks
    /// ethtool which driver owns the name (in the calling thread's
    /// namespace, as the open did).
    private static func diagnose(code: Int32, name: String, mode: QueueMode) -> String? {
        guard code == EINVAL, !name.isEmpty else { return nil }
        var driver = [CChar](repeating: 0, count: 32)
        var bus = [CChar](repeating: 0, count: 32)
        let rc = smp_netdev_driver(name, &driver, &bus)
        if rc == -ENODEV { return nil }   // no such device: the name itself was refused
        let driverName = driver.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let busName = bus.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        if rc != 0 || driverName != "tun" {
            let kind = rc == 0 && !driverName.isEmpty ? "a \(driverName) device" : "a device"
            return "the name '\(name)' is taken by \(kind), not a TUN device"
        }
        if busName == "tap" { return "'\(name)' is a TAP device (layer 2), not a TUN device" }
        switch mode {
        case .single:
            return "'\(name)' is a multi-queue TUN device (created with IFF_MULTI_QUEUE / 'multi_queue'): "
                + "open it with mode .multiQueue"
        case .multiQueue:
            return "'\(name)' is a single-queue TUN device (created without IFF_MULTI_QUEUE / 'multi_queue'): "
                + "open it with mode .single, or recreate it with 'ip tuntap add dev \(name) mode tun multi_queue'"
        }
    }

    /// Closes every queue (a non-persistent interface disappears with the
    /// last one). Idempotent; see the type's concurrency contract.
    public func close() {
        for q in queues { q.close() }
    }
}

/// One queue of a ``TUNDevice``: a non-blocking descriptor from which each
/// read returns one packet the kernel sent into the interface, and through
/// which each write injects one packet.
///
/// On a multi-queue device the kernel picks the queue of each packet it
/// sends by flow (drivers/net/tun.c, tun_automq_select_queue): a flow
/// recently written on queue k is sent to queue k, any other flow to a queue
/// chosen by its hash. See <doc:TUN>.
///
/// Concurrency contract: one reader thread at a time per queue (reads of a
/// queue are not meant to be split between threads); writes may come from
/// any thread (each `write` is one atomic packet injection). Each read or
/// write is one system call: a TUN descriptor returns one packet per
/// `read(2)`, and `readv(2)` only scatters that one packet (docs/TUN.md has
/// the measurement that kept plain `read`/`write` over io_uring). Closed by
/// its device (see ``TUNDevice/close()``).
public final class TUNQueue: Sendable {
    /// The queue's position in ``TUNDevice/queues``.
    public let index: Int
    /// The open descriptor on /dev/net/tun (non-blocking).
    public let fileDescriptor: Int32
    /// The device's interface name (for error messages).
    public let deviceName: String
    /// The device's ``TUNDevice/virtioHeaderSize`` (0 or 10).
    public let virtioHeaderSize: Int
    private let closed = Atomic<Bool>(false)

    init(index: Int, fileDescriptor: Int32, deviceName: String, virtioHeaderSize: Int) {
        self.index = index
        self.fileDescriptor = fileDescriptor
        self.deviceName = deviceName
        self.virtioHeaderSize = virtioHeaderSize
    }

    /// Reads one packet into `buffer`. The reader thread; one non-blocking
    /// `read` system call (retried on `EINTR`), no allocation.
    ///
    /// - Returns: the packet's length, or nil if no packet is queued now.
    ///   A packet longer than the buffer is truncated by the kernel and its
    ///   full length is not known; pass a buffer of
    ///   ``TUNDevice/maximumPacketSize`` or the interface MTU.
    /// With a virtio-net header, the header is read into a scratch word
    /// (one `readv`) and dropped: the offloads are 0, so the kernel's
    /// header carries nothing (see <doc:TUN>).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TUNError) -> Int? {
        while true {
            let n = readPacket(fileDescriptor, virtioHeaderSize, buffer)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw TUNError(operation: "read \(deviceName) queue \(index)", code: e)
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
            throw TUNError(operation: "poll \(deviceName) queue \(index)", code: errno)
        }
    }

    /// Injects one IP packet into the kernel as if it had arrived on the
    /// interface. The kernel validates it like any received packet and, on
    /// a multi-queue device, records the packet's flow as this queue's
    /// (see the type's documentation). Any thread; one `write`, no
    /// allocation unless it throws.
    /// With a virtio-net header, a zeroed one goes first (one `writev`):
    /// a plain packet with a complete checksum.
    public func write(_ packet: UnsafeRawBufferPointer) throws(TUNError) {
        while true {
            let n = writePacket(fileDescriptor, virtioHeaderSize, packet)
            if n == packet.count { return }
            if n >= 0 { throw TUNError(operation: "write \(deviceName) (short write \(n) of \(packet.count))", code: EIO) }
            if errno == EINTR { continue }
            throw TUNError(operation: "write \(deviceName) queue \(index)", code: errno)
        }
    }

    /// Closes the descriptor. Idempotent; see ``TUNDevice/close()``.
    func close() {
        if !closed.exchange(true, ordering: .relaxed) {
            _ = Glibc.close(fileDescriptor)
        }
    }

    // The last reference gone (the device's and any other holder's): nobody
    // can be inside a call.
    deinit { close() }
}

/// Sixteen zero bytes: the virtio-net header of a plain packet (flags 0,
/// GSO_NONE), shared read-only by every write.
nonisolated(unsafe) let zeroVirtioHeader: UnsafeMutableRawPointer = {
    let p = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
    p.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
    return p
}()

/// One packet read from `fd` into `buffer`, a `header`-byte virtio-net
/// header first (read into a stack scratch and dropped): the packet's
/// length, or -1 with `errno` set. A read shorter than the header (not
/// expected from the kernel) counts as an empty packet.
@inline(__always)
func readPacket(_ fd: Int32, _ header: Int, _ buffer: UnsafeMutableRawBufferPointer) -> Int {
    if header == 0 { return Glibc.read(fd, buffer.baseAddress, buffer.count) }
    return withUnsafeTemporaryAllocation(byteCount: 16, alignment: 16) { scratch in
        let n = smp_readv2(fd, scratch.baseAddress, UInt(header), buffer.baseAddress, UInt(buffer.count))
        return n < 0 ? -1 : Swift.max(n - header, 0)
    }
}

/// One plain packet written to `fd` behind a zeroed `header`-byte
/// virtio-net header: the packet bytes written, or -1 with `errno` set.
@inline(__always)
func writePacket(_ fd: Int32, _ header: Int, _ packet: UnsafeRawBufferPointer) -> Int {
    if header == 0 { return Glibc.write(fd, packet.baseAddress, packet.count) }
    let n = smp_writev2(fd, zeroVirtioHeader, UInt(header), packet.baseAddress, UInt(packet.count))
    return n < 0 ? -1 : Swift.max(n - header, 0)
}

extension TUNDevice {
    /// Writes the virtio-net header of a TCP super-segment into the first
    /// ``virtioHeaderLength`` bytes of `header`: `VIRTIO_NET_HDR_F_NEEDS_CSUM`
    /// (csum_start at the TCP header, csum_offset 16: the TCP checksum
    /// field, which must hold the pseudo-header sum as Linux's
    /// __tcp_v4_send_check leaves it), gso_type TCPV4 or TCPV6, gso_size
    /// `segmentSize` (the MSS: the kernel's tcp_gso_segment cuts the
    /// payload into pieces of that size, the last one shorter), hdr_len
    /// the IP and TCP headers. Any thread; no system call.
    public static func writeTCPSegmentationHeader(into header: UnsafeMutableRawBufferPointer, ipHeaderLength: Int,
                                                  tcpHeaderLength: Int, segmentSize: Int, ipv6: Bool) {
        precondition(header.count >= virtioHeaderLength && segmentSize > 0 && segmentSize <= 65535)
        smp_virtio_net_hdr_tcp(header.baseAddress, UInt32(ipHeaderLength), UInt32(tcpHeaderLength),
                               UInt32(segmentSize), ipv6 ? 1 : 0)
    }
}
