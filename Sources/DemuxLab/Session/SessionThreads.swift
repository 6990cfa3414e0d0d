import FastDemux
import PacketIO
import SMPPrimitives

// The threads of a session run: the reader (source → parser → buffers,
// delivering itself or steering to input workers), the input workers, and
// the consumer that drains every socket.
extension SessionState {
    func read<Source: PacketSource>(_ source: inout Source,
                                    progress: (@Sendable (SessionProgress) -> Void)?) {
        let direct = config.workers == 1
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let input = demux.makeInput()
        let parser = PacketParser(options: config.parser)
        var cache = PacketPool.Cache(pool: pool)
        let spare = UnsafeMutablePointer<PacketRef>.allocate(capacity: 64)
        defer { spare.deallocate() }
        var spareCount = 0
        var pending: CapturedFrame?
        var ended = false
        let t0 = monotonicSeconds()
        var nextProgress = t0 + config.progressInterval
        // The clock as of the current burst (flow socket activity stamps).
        var now = t0

        // Handles one frame; returns false if it needs a buffer and none is
        // spare (the frame then stays pending).
        func handle(_ frame: CapturedFrame, _ b: DemuxInput<QSBR>) -> Bool {
            let parsed: ParsedPacket
            switch parser.parse(frame.bytes, linkType: frame.linkType, wireLength: frame.wireLength) {
            case .dropped(let reason):
                countFrame(frame)
                b.drop(parseReason: reason)
                return true
            case .packet(let p):
                parsed = p
            }
            guard spareCount > 0 else { return false }
            countFrame(frame)
            spareCount -= 1
            let packet = spare[spareCount]
            if let flowSockets { _ = flowSockets.admit(parsed.flow, now: now) }
            let d = direction(of: parsed.flow, frameIndex: frame.index)
            let flow = flowOfDirection[Int(d)]
            flows[Int(flow)].packets += 1
            flows[Int(flow)].bytes += frame.wireLength
            let buffer = pool.buffer(packet)
            let keep = min(frame.bytes.count, buffer.count)
            if keep > 0 { buffer.baseAddress!.copyMemory(from: frame.bytes.baseAddress!, byteCount: keep) }
            pool.setLength(keep, of: packet)
            meta[pool.index(of: packet)] = PacketMeta(
                key: parsed.flow, tcp: parsed.tcp, payloadLength: parsed.payloadLength,
                frameIndex: frame.index, wireLength: frame.wireLength, flow: flow, direction: d)
            if direct {
                if case .dropped = b.deliver(packet, key: parsed.flow, tcp: parsed.tcp,
                                             payloadLength: parsed.payloadLength) {
                    spare[spareCount] = packet   // reuse the buffer at once
                    spareCount += 1
                }
            } else {
                let q = steering[Int(flow) % config.workers]
                while !q.put(packet) { backoff() }
            }
            return true
        }

        do {
            while !ended {
                if pending == nil {
                    // Wait for the first frame of the next burst outside any
                    // read section; a live source may block here.
                    let f: CapturedFrame?
                    if source.mayBlock {
                        f = try QSBR.withThreadOffline { try source.nextFrame() }
                    } else {
                        f = try source.nextFrame()
                    }
                    guard let f else { break }
                    pending = f
                }
                // Take buffers for the burst before entering it: waiting for
                // the consumer to free some must not happen inside a burst
                // (its readiness is published only at the burst's end).
                while spareCount < 32, let p = cache.allocate() {
                    spare[spareCount] = p
                    spareCount += 1
                }
                if spareCount == 0 {
                    input.quiescent()
                    backoff()
                    continue
                }
                try input.burst { b in
                    var n = 0
                    while n < 32 {
                        let frame: CapturedFrame
                        if let p = pending {
                            frame = p
                            pending = nil
                        } else if source.mayBlock && n > 0 {
                            return   // publish what we have; wait outside the burst
                        } else if let f = try source.nextFrame() {
                            frame = f
                        } else {
                            ended = true
                            return
                        }
                        if !handle(frame, b) {
                            pending = frame
                            return
                        }
                        n += 1
                    }
                }
                input.quiescent()
                // One clock read per burst (vDSO, ~20 ns): negligible.
                now = monotonicSeconds()
                // Outside the burst: closing idle sockets waits a grace period.
                flowSockets?.sweepIfDue(now: now)
                if let progress {
                    if now >= nextProgress {
                        nextProgress = now + config.progressInterval
                        progress(SessionProgress(frames: framesIn, bytes: bytesIn, seconds: now - t0))
                    }
                }
            }
        } catch {
            readerError = error
        }
        for i in 0..<spareCount { cache.free(spare[i]) }
        seconds = monotonicSeconds() - t0
        readerStats = input.stats
        // Releasing: the workers acquire it and then see every put.
        readerDoneFlag.store(true, ordering: .releasing)
    }

    @inline(__always)
    func countFrame(_ frame: CapturedFrame) {
        framesIn += 1
        bytesIn += frame.wireLength
    }

    // MARK: Input workers (workers > 1)

    func work(_ k: Int) {
        QSBR.registerThread()
        defer { QSBR.unregisterThread() }
        let input = demux.makeInput()
        let q = steering[k]
        _ = pollUntilFinished(spinning: 0, {
            // Acquire before draining: if the reader was done, everything it
            // put is visible, so an empty queue after this load is final.
            let done = readerDoneFlag.load(ordering: .acquiring)
            let n = input.burst { b in
                q.drain(max: 32) { packet in
                    let m = meta[pool.index(of: packet)]
                    if case .dropped = b.deliver(packet, key: m.key, tcp: m.tcp, payloadLength: m.payloadLength) {
                        pool.free(packet)
                    }
                }
            }
            input.quiescent()
            if n > 0 { return .progress }
            return done ? .finished : .idle
        }, park: {
            QSBR.withThreadOffline { backoff() }
        })
        workerStats[k] = input.stats
    }

    // MARK: Consumer

    func consume() {
        var cache = PacketPool.Cache(pool: pool)
        let taken = UnsafeMutablePointer<PacketRef>.allocate(capacity: 64)
        defer { taken.deallocate() }

        func drain(_ s: Socket) {
            s.drainBatches(into: taken) { batch in
                drains += 1
                for p in batch {
                    let m = meta[pool.index(of: p)]
                    account(m)
                    cache.free(p)
                }
            }
        }

        parks = pollUntilFinished(spinning: 0, {
            // Acquire: pairs with run()'s release after the inputs joined, so
            // every readiness bit they set is visible to the sweeps below.
            let done = inputsDone.load(ordering: .acquiring)
            flowSockets?.reap()
            sweeps += 1
            let ready = readySet.takeReady { slot in
                if let s = readySet.socket(at: slot) { drain(s) }
            }
            if ready > 0 { return .progress }
            return done ? .finished : .idle
        }, park: {
            readySet.parkUntilReady(extraCheck: { inputsDone.load(ordering: .acquiring) })
        })
        // Belt and braces: nothing may be left in any queue.
        for i in 0..<config.maxSockets {
            guard let s = readySet.socket(at: i) else { continue }
            drain(s)
        }
    }

    @inline(__always)
    func account(_ m: PacketMeta) {
        delivered += 1
        let f = Int(m.flow), d = Int(m.direction)
        if f >= deliveredPackets.count {
            let grow = max(f + 1 - deliveredPackets.count, deliveredPackets.count)
            deliveredPackets += repeatElement(0, count: grow)
            deliveredBytes += repeatElement(0, count: grow)
        }
        if d >= lastFrameOfDirection.count {
            lastFrameOfDirection += repeatElement(0, count: max(d + 1 - lastFrameOfDirection.count,
                                                                lastFrameOfDirection.count))
        }
        deliveredPackets[f] += 1
        deliveredBytes[f] += m.wireLength
        if m.frameIndex <= lastFrameOfDirection[d] { orderViolations += 1 }
        lastFrameOfDirection[d] = m.frameIndex
    }
}
