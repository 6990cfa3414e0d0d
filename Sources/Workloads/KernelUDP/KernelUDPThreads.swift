// kernel-udp's two threads: the sender (sendmmsg, round-robin over the
// sockets) and the receiver (level-triggered epoll + recvmmsg), which checks
// every payload.
import CPacketIO
import Glibc
import SMPPrimitives
import Synchronization

/// What the sender hands back when it is joined.
struct KernelUDPSenderResult: Sendable {
    var sent = 0
    var sendErrors = 0
    var sendCalls = 0
    var seconds = 0.0
    var fatalError: String?
}

/// What the receiver hands back when it is joined.
struct KernelUDPReceiverResult: Sendable {
    var received = 0
    var bad = 0
    var orderErrors = 0
    var overrun = 0
    var epollWaits = 0
    var recvCalls = 0
    var start = 0.0
    var lastReceive = 0.0
    var fatalError: String?
}

/// What the two threads share while running.
final class KernelUDPShared: Sendable {
    /// Datagrams the sender is done with (sent or failed), published with
    /// `senderDone`.
    let sentTotal = Atomic<Int>(0)
    /// Set by the sender when it stops. Released after `sentTotal` so the
    /// receiver, acquiring it, sees the final count.
    let senderDone = Atomic<Bool>(false)
    /// Per-socket counts of datagrams sent, published before `senderDone`
    /// (same release) so the receiver's end-of-run check can read them.
    let sentPerSocket: Mutex<[UInt32]> = Mutex([])
}

func kernelUDPSend(_ s: KernelUDPSockets, _ c: KernelUDPBenchmark.Configuration,
                           _ shared: KernelUDPShared, _ barrier: SpinBarrier) -> KernelUDPSenderResult {
    let batch = c.batch
    let size = c.payloadBytes
    let nsocks = s.fds.count
    guard let msgs = smp_mmsg_batch_create(UInt32(batch), UInt32(size)) else {
        // Still meet the receiver at the barrier, and let it finish.
        barrier.wait()
        shared.senderDone.store(true, ordering: .releasing)
        return KernelUDPSenderResult(fatalError: "out of memory")
    }
    defer { smp_mmsg_batch_destroy(msgs) }
    var pseq = [UInt32](repeating: 0, count: nsocks)
    for i in 0..<batch {
        smp_mmsg_batch_buffer(msgs, UInt32(i)).initializeMemory(as: UInt8.self, repeating: 0xA5, count: size)
    }
    let addrs = UnsafeMutableRawPointer(s.addresses.baseAddress!)
    var result = KernelUDPSenderResult()
    var g = 0
    var rr = 0
    barrier.wait()
    let t0 = monotonicSeconds()
    sending: while g < c.datagrams {
        let n = min(batch, c.datagrams - g)
        for i in 0..<n {
            let d = rr
            rr = rr + 1 == nsocks ? 0 : rr + 1
            pseq[d] &+= 1
            let p = smp_mmsg_batch_buffer(msgs, UInt32(i))!
            p.storeBytes(of: UInt64(g + 1 + i), toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: UInt32(d), toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: pseq[d], toByteOffset: 12, as: UInt32.self)
            p.storeBytes(of: KernelUDPPayload.fill, toByteOffset: 16, as: UInt64.self)
            smp_mmsg_batch_set_message(msgs, UInt32(i), UInt32(size), addrs + d * MemoryLayout<sockaddr_in>.stride,
                                       UInt32(MemoryLayout<sockaddr_in>.size))
        }
        var off = 0
        while off < n {
            let r = smp_mmsg_send(s.senderFD, msgs, UInt32(off), UInt32(n - off))
            result.sendCalls += 1
            if r < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == ENOBUFS || e == EAGAIN {
                    // Not sent: count it as sent-and-dropped and move on.
                    result.sendErrors += 1
                    off += 1
                    continue
                }
                result.fatalError = "sendmmsg: " + String(cString: strerror(e))
                g += off
                break sending
            }
            off += Int(r)
        }
        g += n
        if result.sendCalls & 63 == 0 && monotonicSeconds() - t0 > c.capSeconds { break }
    }
    result.seconds = monotonicSeconds() - t0
    result.sent = g
    shared.sentPerSocket.withLock { $0 = pseq }
    shared.sentTotal.store(g, ordering: .relaxed)
    // Releasing: the receiver acquires senderDone and must then see sentTotal.
    shared.senderDone.store(true, ordering: .releasing)
    return result
}

func kernelUDPReceive(_ s: KernelUDPSockets, _ c: KernelUDPBenchmark.Configuration,
                              _ shared: KernelUDPShared, _ barrier: SpinBarrier) -> KernelUDPReceiverResult {
    let batch = c.batch
    // One byte more than the payload so an over-long datagram is detected.
    let slot = c.payloadBytes + 1
    let nsocks = s.fds.count
    guard let msgs = smp_mmsg_batch_create(UInt32(batch), UInt32(slot)) else {
        barrier.wait()   // the sender then runs into full receive buffers: drops
        return KernelUDPReceiverResult(fatalError: "out of memory")
    }
    let tokens = UnsafeMutablePointer<UInt32>.allocate(capacity: 256)
    let last = UnsafeMutablePointer<UInt32>.allocate(capacity: nsocks)
    last.initialize(repeating: 0, count: nsocks)
    defer {
        smp_mmsg_batch_destroy(msgs)
        tokens.deallocate()
        last.deallocate()
    }
    var r = KernelUDPReceiverResult()
    var quiet = 0
    barrier.wait()
    r.start = monotonicSeconds()
    r.lastReceive = r.start
    // A bound even if the sender hangs: its cap plus a generous grace.
    let deadline = r.start + c.capSeconds + 30
    receiving: while true {
        // Acquiring: pairs with the sender's releasing store, so sentTotal is final.
        let done = shared.senderDone.load(ordering: .acquiring)
        if done && r.received >= shared.sentTotal.load(ordering: .relaxed) { break }
        let ne = smp_epoll_wait_tokens(s.epollFD, tokens, 256, done ? 20 : 200)
        r.epollWaits += 1
        if ne < 0 {
            if errno == EINTR { continue }
            r.fatalError = "epoll_wait: " + String(cString: strerror(errno))
            break
        }
        if ne == 0 {
            // Drained: whatever is still missing was dropped by the kernel.
            if done { quiet += 1; if quiet >= 5 { break } }
            if monotonicSeconds() > deadline { r.fatalError = "receiver timed out"; break }
            continue
        }
        quiet = 0
        for e in 0..<Int(ne) {
            let sock = Int(tokens[e])
            let got = smp_mmsg_receive(s.fds[sock], msgs, UInt32(batch), 1)
            r.recvCalls += 1
            if got <= 0 {
                if got < 0 && errno != EAGAIN && errno != EINTR {
                    r.fatalError = "recvmmsg: " + String(cString: strerror(errno))
                    break receiving
                }
                continue
            }
            for i in 0..<Int(got) {
                let p = UnsafeRawPointer(smp_mmsg_batch_buffer(msgs, UInt32(i))!)
                let dst = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
                let seq = p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
                let fill = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
                guard Int(smp_mmsg_batch_received_length(msgs, UInt32(i))) == c.payloadBytes, Int(dst) == sock,
                      fill == KernelUDPPayload.fill else {
                    r.bad += 1
                    continue
                }
                // Strictly increasing per socket: no duplicates, no reordering.
                if seq <= last[sock] { r.orderErrors += 1 }
                last[sock] = seq
            }
            r.received += Int(got)
        }
        r.lastReceive = monotonicSeconds()
        if r.lastReceive > deadline { r.fatalError = "receiver timed out"; break }
    }
    let sentPerSocket = shared.sentPerSocket.withLock { $0 }
    if sentPerSocket.count == nsocks {
        for i in 0..<nsocks where last[i] > sentPerSocket[i] { r.overrun += 1 }
    }
    return r
}
