import Glibc
import PacketIO
import SMPPrimitives

/// One core of an ``EndpointStack``: the input path for the packets read
/// from queue k (or handed over by other cores), the output batch for
/// queue k, and this core's reassembly table, rate limiter, identification
/// generator and pool cache.
///
/// Concurrency contract: every method runs on executor k (the TUN reader's
/// input, the core's poller, mailbox handlers and jobs on it); nothing is
/// shared, so there are no locks and no atomics here. Allocation: none per
/// packet (the counters' arrays are mutated in place).
final class StackCore: @unchecked Sendable {
    // @unchecked Sendable: the mutable state below is touched on `executor`
    // only (see the contract); the object is shared only so that closures
    // running on that executor can reach it.
    let index: Int
    let executor: CoreExecutor
    let coreCount: Int
    let mtu: Int
    let seed: UInt64
    /// The stack's addresses, in memory of their own: iterating an array
    /// allocates per element in debug builds, and this runs per packet.
    let addresses: UnsafeMutableBufferPointer<IPAddress>
    let buffers: StackBuffers
    let table: PCBTable<QSBR>
    /// Verifies the UDP checksum as an endpoint must (RFC 1122 §4.1.3.4;
    /// Linux's udp_lib_checksum_complete): a corrupt datagram is dropped,
    /// never delivered, and draws no ICMP error.
    let parser = PacketParser(options: ParserOptions(verifyChecksums: true))
    let input: DemuxInput<QSBR>
    let reassembly: ReassemblyTable
    @exclusivity(unchecked) var cache: PacketPool.Cache
    /// This core's cache of the super-segment pool (nil without
    /// segmentation offload).
    @exclusivity(unchecked) var segmentCache: PacketPool.Cache?
    /// The frames of one run of super-segments in ``flush()``.
    let frames: UnsafeMutablePointer<UnsafeRawBufferPointer>
    @exclusivity(unchecked) var limiter: ICMPRateLimiter
    @exclusivity(unchecked) var ids: IPIdentificationGenerator
    @exclusivity(unchecked) var stats = StackStatistics()
    /// The output batch (written by ``flush()``).
    let out: UnsafeMutablePointer<PacketRef>
    static let outCapacity = 256
    @exclusivity(unchecked) var outCount = 0
    /// Slots for one datagram's fragments (64 KiB at MTU 1280: 52).
    let scratch: UnsafeMutableBufferPointer<PacketRef>
    /// Set once before traffic (by the stack's init or `start`, on this
    /// executor or before the executor sees the core).
    @exclusivity(unchecked) nonisolated(unsafe) var tun: TUNQueueReader?
    @exclusivity(unchecked) nonisolated(unsafe) var capture: EndpointStack.Capture?
    @exclusivity(unchecked) nonisolated(unsafe) var stackBits: UInt = 0
    @exclusivity(unchecked) nonisolated(unsafe) var peers: [CoreExecutor] = []
    /// When reassembly queues are next expired.
    @exclusivity(unchecked) var nextExpiry = ContinuousClock.now
    /// The configured input loss as a threshold on a 64-bit random draw
    /// (0: off), and the draw's xorshift state.
    let lossThreshold: UInt64
    @exclusivity(unchecked) var lossState: UInt64

    init(index: Int, executor: CoreExecutor, configuration c: EndpointStack.Configuration,
         demux: Demux<QSBR>, buffers: StackBuffers) {
        self.index = index
        self.executor = executor
        coreCount = c.cores
        mtu = c.mtu
        seed = c.hashSeed
        addresses = .allocate(capacity: c.addresses.count)
        _ = addresses.initialize(from: c.addresses)
        self.buffers = buffers
        table = demux.table
        input = demux.makeInput()
        reassembly = ReassemblyTable(configuration: c.reassembly, fragmentPool: buffers.pool,
                                     datagramPool: buffers.datagramPool)
        cache = PacketPool.Cache(pool: buffers.pool)
        segmentCache = buffers.segmentPool.map { PacketPool.Cache(pool: $0) }
        frames = .allocate(capacity: Self.outCapacity)
        limiter = ICMPRateLimiter(messagesPerSecond: c.icmpErrorsPerSecond, burst: c.icmpErrorBurst,
                                  now: monotonicNanoseconds())
        ids = IPIdentificationGenerator(seed: c.hashSeed ^ 0x5bd1_e995)
        out = .allocate(capacity: Self.outCapacity)
        scratch = .allocate(capacity: 64)
        // 0 for 0, negative or NaN; .max from where loss·2⁶⁴ no longer fits
        // (a UInt64 conversion of 2⁶⁴ would trap).
        let scaled = c.inputLoss * 0x1p64
        lossThreshold = !(scaled > 0) ? 0 : scaled >= 0x1p64 ? .max : UInt64(scaled)
        lossState = (c.hashSeed ^ (0x9E37_79B9_7F4A_7C15 &* UInt64(index + 1))) | 1
    }

    deinit {
        for i in 0..<outCount { release(out[i]) }
        out.deallocate()
        frames.deallocate()
        scratch.deallocate()
        addresses.deallocate()
    }

    // MARK: Ownership

    /// Whether `address` is one of the stack's (an IPv4-mapped form counts
    /// as its IPv4 address).
    @inline(__always)
    func isLocal(_ address: IPAddress) -> Bool {
        let a = address.unmapped
        var i = 0
        while i < addresses.count {
            if addresses[i] == a { return true }
            i &+= 1
        }
        return false
    }

    /// The owner of a flow: a keyed hash of its endpoints, oriented
    /// (local, remote), so that both directions agree. Ports 0 for
    /// fragments and ICMP.
    @inline(__always)
    func owner(local: IPAddress, localPort: UInt16, remote: IPAddress, remotePort: UInt16) -> Int {
        if coreCount == 1 { return 0 }
        let h = keyedHash(seed: seed, local.unmapped, remote.unmapped, UInt64(localPort) << 16 | UInt64(remotePort))
        return Int(h % UInt64(coreCount))
    }

    // MARK: Input

    /// Bit 0 of a demux socket's stack word set: the rest is an unretained
    /// ``TCPSocket`` (objects are at least 16-byte aligned; an SO_REUSEPORT
    /// member list, the word's other use, leaves the bit clear).
    static let tcpEngineTag: UInt = 1

    /// A batch read from queue k.
    func input(_ packets: UnsafeBufferPointer<PacketRef>, reader: TUNQueueReader) {
        if tun == nil { tun = reader }
        input(packets)
    }

    /// A batch this core now owns, in one read section; the replies are
    /// written at the end.
    func input(_ packets: UnsafeBufferPointer<PacketRef>) {
        stats.packetsIn &+= packets.count
        input.burst { _ in
            for p in packets {
                if lossThreshold != 0 && lost() { drop(p, .injectedLoss); continue }
                process(p, handedOff: false)
            }
        }
        flush()
    }

    /// One draw of the configured input loss (xorshift64).
    @inline(__always)
    private func lost() -> Bool {
        lossState ^= lossState << 13
        lossState ^= lossState >> 7
        lossState ^= lossState << 17
        return lossState < lossThreshold
    }

    /// A copy of `bytes` processed as if read here (tests, tools).
    func inject(_ bytes: [UInt8]) -> Bool {
        guard bytes.count <= buffers.pool.bufferSize, let p = cache.allocate() else { return false }
        bytes.withUnsafeBytes { buffers.pool.buffer(p).copyMemory(from: $0) }
        buffers.pool.setLength(bytes.count, of: p)
        stats.packetsIn &+= 1
        input.burst { _ in process(p, handedOff: false) }
        flush()
        return true
    }

    /// A packet another core read and handed over (a mailbox handler).
    func handIn(_ p: PacketRef) {
        stats.handedIn &+= 1
        input.burst { _ in process(p, handedOff: true) }
    }

    /// One packet this core now owns. Inside a burst.
    func process(_ p: PacketRef, handedOff: Bool) {
        let bytes = buffers.bytes(p)
        switch parser.parseNetwork(bytes, linkType: .raw) {
        case .transport(let t):
            transport(p, t, bytes, handedOff: handedOff)
        case .network(let n):
            network(p, n, bytes, handedOff: handedOff)
        case .dropped(let r):
            stats.parseDrops[Int(r.rawValue)] &+= 1
            drop(p, .parse)
        }
    }

    @inline(__always)
    func drop(_ p: PacketRef, _ reason: StackDropReason) {
        stats.drops[Int(reason.rawValue)] &+= 1
        release(p)
    }

    /// Frees a buffer: receive-pool and super-segment buffers to this
    /// core's caches (no lock).
    @inline(__always)
    func release(_ p: PacketRef) {
        if StackBuffers.isSegment(p) {
            segmentCache!.free(StackBuffers.segmentUntagged(p))
        } else if StackBuffers.isDatagram(p) {
            buffers.free(p)
        } else {
            cache.free(p)
        }
    }

    /// Hands `p` to core `owner`, which processes it as its own. Inside a
    /// burst, so it must not wait: a full ring drops the packet.
    func handOff(_ p: PacketRef, to owner: Int) {
        let m = MailboxMessage(function: handInEntry, p.word, stackBits)
        if executor.trySend(m, to: peers[owner]) {
            stats.handedOff &+= 1
            tun?.noteMisplaced(1, queue: index)
        } else {
            drop(p, .handoffFull)
        }
    }

    func transport(_ p: PacketRef, _ t: ParsedPacket, _ bytes: UnsafeRawBufferPointer, handedOff: Bool) {
        guard t.flow.transport == .udp || t.flow.transport == .tcp else { return drop(p, .unsupportedTransport) }
        guard isLocal(t.flow.destination) else { return drop(p, .notLocal) }
        if !handedOff {
            let o = owner(local: t.flow.destination, localPort: t.flow.destinationPort,
                          remote: t.flow.source, remotePort: t.flow.sourcePort)
            if o != index { return handOff(p, to: o) }
        }
        var key = t.flow
        var socket = table.lookup(key)
        if socket == nil && key.family == .ipv4 {
            // Dual stack (Linux's ipv6_only_sock test in the v6 lookup): an
            // IPv4 datagram no IPv4 socket takes reaches an IPv6 socket
            // bound to its mapped address or to ::, unless that one is
            // v6-only.
            var mapped = key
            mapped.source = key.source.mappedToIPv6
            mapped.destination = key.destination.mappedToIPv6
            if let s = table.lookup(mapped), !s.withSocket({ $0.v6Only.load(ordering: .relaxed) }) {
                key = mapped
                socket = s
            }
        }
        // The stack word: an SO_REUSEPORT group's member list (on its
        // anchor) or, tagged, a connection's TCPSocket (its engine).
        var engine: UInt = 0
        if let s = socket {
            let w = s.withSocket { $0.stackWord.load(ordering: .acquiring) }
            if w & Self.tcpEngineTag != 0 {
                engine = w & ~Self.tcpEngineTag
            } else if w != 0 {
                // An SO_REUSEPORT group's anchor: the flow's member instead.
                let h = mix64(keyedHash(seed: seed, t.flow.destination.unmapped, t.flow.source.unmapped,
                                        UInt64(t.flow.destinationPort) << 16 | UInt64(t.flow.sourcePort)))
                socket = Unmanaged<ReusePortMembers>.fromOpaque(UnsafeRawPointer(bitPattern: w)!)
                    ._withUnsafeGuaranteedRef { $0.pick(h) } ?? s
            }
        }
        switch input.deliver(p, key: key, to: socket, payloadLength: t.payloadLength) {
        case .queued:
            stats.delivered &+= 1
            // The NetBSD fast path's immediate ACK (TCPSocket+FastPath.swift).
            // The socket is alive: its word is cleared, on this core, before
            // it is released.
            if engine != 0 {
                Unmanaged<TCPSocket>.fromOpaque(UnsafeRawPointer(bitPattern: engine)!)
                    ._withUnsafeGuaranteedRef { $0.inputFastPath(core: self) }
            }
        case .dropped(.noSocket) where t.flow.transport == .tcp:
            resetUnmatched(t, bytes)
            drop(p, .noSocket)
        case .dropped(.noSocket):
            portUnreachable(UnsafeRawBufferPointer(rebasing: bytes[t.networkOffset...]), family: key.family)
            drop(p, .noSocket)
        case .dropped(.queueFull):
            drop(p, .socketQueueFull)
        case .dropped:
            drop(p, .socketClosed)
        }
    }

    func network(_ p: PacketRef, _ n: NetworkPacket, _ bytes: UnsafeRawBufferPointer, handedOff: Bool) {
        guard isLocal(n.destination) else { return drop(p, .notLocal) }
        if !handedOff {
            let o = owner(local: n.destination, localPort: 0, remote: n.source, remotePort: 0)
            if o != index { return handOff(p, to: o) }
        }
        if n.fragment != nil {
            // A reassembled datagram is never a fragment (the table rewrote
            // its header), so `p` is a receive-pool buffer here.
            stats.fragmentsToReassembly &+= 1
            if case .complete(let d) = reassembly.insert(p, n, now: .now) {
                stats.datagramsReassembled &+= 1
                process(StackBuffers.tagged(d.packet), handedOff: false)
            }
            return
        }
        guard case .message(.echoRequest) = ICMPInput.decode(bytes, n) else { return drop(p, .icmpIgnored) }
        let request = UnsafeRawBufferPointer(rebasing: bytes[n.networkOffset ..< min(n.end, bytes.count)])
        do {
            let count: Int
            if n.family == .ipv4 {
                count = try ICMPv4Output.sendEchoReply(request: request, mtu: mtu, identifications: &ids,
                                                       cache: &cache, into: scratch)
            } else {
                let label = IPv6Output.flowLabel(source: n.destination, destination: n.source, nextHeader: 58,
                                                 seed: seed)
                count = try ICMPv6Output.sendEchoReply(request: request, mtu: mtu, flowLabel: label,
                                                       identifications: &ids, cache: &cache, into: scratch)
            }
            append(UnsafeBufferPointer(rebasing: scratch[0..<count]))
            stats.echoRequestsAnswered &+= 1
            release(p)
        } catch {
            drop(p, .outputFailed)
        }
    }

    /// An ICMP port unreachable about `datagram` (from its IP header), if
    /// the no-error rules allow one and the rate limiter has a token.
    func portUnreachable(_ datagram: UnsafeRawBufferPointer, family: AddressFamily) {
        let v4 = datagram.count > 0 && datagram[0] >> 4 == 4
        let suppressed = v4 ? ICMPErrorPolicy.suppression(ofErrorAboutIPv4: datagram)
                            : ICMPErrorPolicy.suppression(ofErrorAboutIPv6: datagram, type: 1, code: 4)
        if suppressed != nil {
            stats.icmpErrorsSuppressed &+= 1
            return
        }
        guard limiter.allow(now: monotonicNanoseconds()) else {
            stats.icmpErrorsRateLimited &+= 1
            return
        }
        guard let e = cache.allocate() else {
            stats.sendFailures &+= 1
            return
        }
        let buffer = buffers.pool.buffer(e)
        do {
            let length: Int
            if v4 {
                let source = IPAddress(ipv4: datagram.loadUnaligned(fromByteOffset: 16, as: UInt32.self).bigEndian)
                let destination = IPAddress(ipv4: datagram.loadUnaligned(fromByteOffset: 12, as: UInt32.self).bigEndian)
                length = try ICMPv4Output.buildDestinationUnreachable(
                    into: buffer, offending: datagram,
                    identification: ids.nextIPv4(source: source, destination: destination, protocol: 1))
            } else {
                length = try ICMPv6Output.buildDestinationUnreachable(into: buffer, offending: datagram)
            }
            buffers.pool.setLength(length, of: e)
            stats.portUnreachableSent &+= 1
            append(e)
        } catch {
            cache.free(e)
            stats.sendFailures &+= 1
        }
    }

    // MARK: Output

    /// Queues a packet for this core's queue (flushed once per loop pass,
    /// or when the batch is full).
    @inline(__always)
    func append(_ p: PacketRef) {
        if outCount == Self.outCapacity { flush() }
        out[outCount] = p
        outCount &+= 1
    }

    func append(_ packets: UnsafeBufferPointer<PacketRef>) {
        for p in packets { append(p) }
    }

    /// Writes the output batch on queue k (or hands it to the capture), in
    /// its order: runs of plain packets through
    /// `TUNQueueReader.write(_:queue:)` (which frees them), runs of
    /// super-segments through `TUNQueueReader.writeFramed(_:queue:)`
    /// (freed here). Only a device with a virtio-net header has
    /// super-segments.
    func flush() {
        guard outCount > 0 else { return }
        let batch = UnsafeBufferPointer(start: out, count: outCount)
        stats.packetsOut &+= outCount
        if let tun {
            var start = 0, i = 0
            while i < outCount {
                guard StackBuffers.isSegment(out[i]) else {
                    i &+= 1
                    continue
                }
                if i > start { tun.write(UnsafeBufferPointer(start: out + start, count: i - start), queue: index) }
                var n = 0
                while i < outCount && StackBuffers.isSegment(out[i]) {
                    frames[n] = buffers.bytes(out[i])
                    n &+= 1
                    i &+= 1
                }
                tun.writeFramed(UnsafeBufferPointer(start: frames, count: n), queue: index)
                for k in (i - n) ..< i { release(out[k]) }
                start = i
            }
            if start < outCount { tun.write(UnsafeBufferPointer(start: out + start, count: outCount - start), queue: index) }
        } else if let capture {
            capture(index, batch, buffers)
        } else {
            for p in batch { release(p) }
        }
        outCount = 0
    }

    /// The core's poller: writes what mailbox handlers and socket workers
    /// queued during this pass, and expires reassembly queues once a second.
    func poll() -> Int {
        let n = outCount
        flush()
        if reassembly.queueCount > 0 {
            let now = ContinuousClock.now
            if now >= nextExpiry {
                reassembly.expire(now: now)
                nextExpiry = now + .seconds(1)
            }
        }
        return n
    }

    /// Sends one UDP datagram from `local` to `remote` (same family, never
    /// IPv4-mapped) built on this core; the packets go to the owner core's
    /// queue (through its mailbox if that is another core).
    func sendUDP(_ payload: UnsafeRawBufferPointer, from local: InetEndpoint, to remote: InetEndpoint)
        throws(OutputError)
    {
        let count: Int
        do throws(OutputError) {
            if local.address.family == .ipv4 {
                count = try UDPOutput.sendIPv4(source: local.address, sourcePort: local.port,
                                               destination: remote.address, destinationPort: remote.port,
                                               payload: payload, mtu: mtu, identifications: &ids, cache: &cache,
                                               into: scratch)
            } else {
                let label = IPv6Output.flowLabel(source: local.address, destination: remote.address, nextHeader: 17,
                                                 sourcePort: local.port, destinationPort: remote.port, seed: seed)
                count = try UDPOutput.sendIPv6(source: local.address, sourcePort: local.port,
                                               destination: remote.address, destinationPort: remote.port,
                                               payload: payload, mtu: mtu, flowLabel: label, identifications: &ids,
                                               cache: &cache, into: scratch)
            }
        } catch {
            stats.sendFailures &+= 1
            throw error
        }
        stats.datagramsSent &+= 1
        let o = owner(local: local.address, localPort: local.port, remote: remote.address, remotePort: remote.port)
        queue(UnsafeBufferPointer(rebasing: scratch[0..<count]), owner: o)
    }

    /// Queues built packets for core `o`'s queue: this core's batch, or
    /// `o`'s mailbox. Not inside a burst (a full ring may wait; while it
    /// waits it drains this core's own mailboxes, whose hand-ins may build
    /// echo replies into `scratch`: the words are copied out first, a
    /// stack allocation).
    func queue(_ packets: UnsafeBufferPointer<PacketRef>, owner o: Int) {
        if o == index {
            append(packets)
            return
        }
        withUnsafeTemporaryAllocation(of: PacketRef.self, capacity: packets.count) { words in
            _ = words.initialize(fromContentsOf: packets)
            for w in words {
                executor.send(MailboxMessage(function: writeEntry, w.word, stackBits), to: peers[o])
                stats.writesHandedOff &+= 1
            }
        }
    }

    /// Sends one TCP segment the engine (or the input path) decided on:
    /// an IP header, then ``TCPHeader/write(payload:into:source:destination:)``
    /// in one buffer of this core's cache (the engine's segments fit the
    /// MTU: their payload is at most the peer's MSS), to the flow owner's
    /// queue. On executor k; no allocation. A segment that cannot be built
    /// (pool exhausted) is counted and lost: TCP retransmits.
    func sendTCP(_ h: TCPHeader, payload: TCPPayload, endpoints e: TCPEndpoints) {
        guard let p = cache.allocate() else {
            stats.sendFailures &+= 1
            return
        }
        let buffer = buffers.pool.buffer(p)
        guard let length = frameTCP(h, payload: payload, endpoints: e, into: buffer, partialChecksum: false) else {
            cache.free(p)
            stats.sendFailures &+= 1
            return
        }
        buffers.pool.setLength(length, of: p)
        stats.tcpSegmentsSent &+= 1
        queueTCP(p, endpoints: e)
    }

    /// Sends a super-segment (a payload of more than `segmentSize` bytes,
    /// see `TCPSegmentSink.send(_:payload:endpoints:segmentSize:)`): with
    /// segmentation offload one buffer of the super-segment pool, its
    /// virtio-net header (GSO TCPV4/TCPV6, gso_size `segmentSize`, the
    /// checksum left partial) before the packet, which the kernel cuts
    /// into segments (tcp_gso_segment). Without offload, or with that pool
    /// exhausted, the segments are cut here, each through
    /// ``sendTCP(_:payload:endpoints:)``: sequence numbers advanced, PSH
    /// and FIN on the last only.
    func sendTCP(_ h: TCPHeader, payload: TCPPayload, endpoints e: TCPEndpoints, segmentSize: Int) {
        if let pool = buffers.segmentPool, let p = segmentCache!.allocate() {
            let buffer = pool.buffer(p)
            let header = TUNDevice.virtioHeaderLength
            let v4 = e.local.family == .ipv4
            let ip = v4 ? IPv4Output.headerLength : IPv6Output.headerLength
            if let length = frameTCP(h, payload: payload, endpoints: e,
                                     into: UnsafeMutableRawBufferPointer(rebasing: buffer[header...]),
                                     partialChecksum: true) {
                TUNDevice.writeTCPSegmentationHeader(into: buffer, ipHeaderLength: ip,
                                                     tcpHeaderLength: h.encodedLength, segmentSize: segmentSize,
                                                     ipv6: !v4)
                pool.setLength(header + length, of: p)
                stats.tcpSegmentsSent &+= 1
                stats.tcpSuperSegmentsSent &+= 1
                return queueTCP(StackBuffers.segmentTagged(p), endpoints: e)
            }
            segmentCache!.free(p)
        }
        var offset = 0
        let total = payload.count
        while offset < total {
            let n = min(segmentSize, total - offset)
            var piece = h
            piece.sequenceNumber = h.sequenceNumber &+ UInt32(offset)
            if offset + n < total { piece.flags.subtract([.fin, .psh]) }
            sendTCP(piece, payload: payload.slice(offset: offset, count: n), endpoints: e)
            offset += n
        }
    }

    /// Frames `h` and `payload` behind an IP header at the start of
    /// `buffer`: the packet's length, or nil if it does not fit.
    private func frameTCP(_ h: TCPHeader, payload: TCPPayload, endpoints e: TCPEndpoints,
                          into buffer: UnsafeMutableRawBufferPointer, partialChecksum: Bool) -> Int? {
        let v4 = e.local.family == .ipv4
        let ip = v4 ? IPv4Output.headerLength : IPv6Output.headerLength
        let length: Int
        do throws(OutputError) {
            length = try h.write(payload: payload, into: UnsafeMutableRawBufferPointer(rebasing: buffer[ip...]),
                                 source: e.local, destination: e.remote, partialChecksum: partialChecksum)
        } catch {
            return nil
        }
        if v4 {
            // DF (RFC 9293 §3.7.1: TCP sizes its segments to the path).
            IPv4Output.writeHeader(into: buffer, source: e.local, destination: e.remote, protocol: 6,
                                   totalLength: ip + length,
                                   identification: ids.nextIPv4(source: e.local, destination: e.remote, protocol: 6),
                                   dontFragment: true)
        } else {
            let label = IPv6Output.flowLabel(source: e.local, destination: e.remote, nextHeader: 6,
                                             sourcePort: e.localPort, destinationPort: e.remotePort, seed: seed)
            IPv6Output.writeHeader(into: buffer, source: e.local, destination: e.remote, nextHeader: 6,
                                   payloadLength: length, flowLabel: label)
        }
        return ip + length
    }

    /// Queues a built TCP packet for the flow owner's queue.
    @inline(__always)
    private func queueTCP(_ p: PacketRef, endpoints e: TCPEndpoints) {
        let o = owner(local: e.local, localPort: e.localPort, remote: e.remote, remotePort: e.remotePort)
        if o == index { return append(p) }
        withUnsafePointer(to: p) { queue(UnsafeBufferPointer(start: $0, count: 1), owner: o) }
    }

    /// The RST for a TCP segment that reached no connection and no
    /// listener (RFC 9293 §3.10.7.1, Linux's tcp_v4_send_reset): sent from
    /// the input path, counted. Inside a burst: the RST goes to this
    /// core's batch (this core owns the flow: the packet was handed here).
    func resetUnmatched(_ t: ParsedPacket, _ bytes: UnsafeRawBufferPointer) {
        let end = min(bytes.count, t.payloadOffset + t.capturedPayloadLength)
        guard let (h, _) = try? TCPHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[t.transportOffset..<end])),
              let r = h.resetReply(payloadLength: t.payloadLength) else { return }
        stats.tcpResetsSent &+= 1
        sendTCP(r, payload: .empty, endpoints: TCPEndpoints(replyTo: h, source: t.flow.source,
                                                             destination: t.flow.destination))
    }

    /// A packet another core built for this core's queue.
    func writeHandedIn(_ p: PacketRef) { append(p) }

    /// What this core holds now (for ``EndpointStack/gauges``).
    var gauges: CoreGauges {
        let held = reassembly.held
        return CoreGauges(cachedFree: cache.cachedCount + reassembly.cachedBufferCount
                                      + (tun?.cachedBufferCount(queue: index) ?? 0),
                          outputBatched: outCount, reassemblyQueues: reassembly.queueCount,
                          reassemblyFragments: held.fragments, reassemblyBytes: held.bytes)
    }
}

/// The stack of a mailbox message's second word (the stack outlives its
/// executors: ``EndpointStack/shutdown()`` stops them first).
private func core(_ stackBits: UInt) -> StackCore {
    let stack = Unmanaged<EndpointStack>.fromOpaque(UnsafeRawPointer(bitPattern: stackBits)!).takeUnretainedValue()
    return stack.currentCore!
}

/// Mailbox entry: process a packet handed over by another core.
private let handInEntry: MailboxMessage.Function = { word, stackBits in
    core(stackBits).handIn(PacketRef(word: word))
}

/// Mailbox entry: write a packet another core built for this queue.
private let writeEntry: MailboxMessage.Function = { word, stackBits in
    core(stackBits).writeHandedIn(PacketRef(word: word))
}

/// CLOCK_MONOTONIC in nanoseconds (the rate limiter's time base).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
