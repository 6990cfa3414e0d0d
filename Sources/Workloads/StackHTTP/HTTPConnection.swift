/// The byte stream under an ``HTTPConnection``: a stack ``TCPSocket`` or a
/// non-blocking kernel socket. Neither call blocks.
package protocol HTTPConnectionIO {
    /// Reads up to `buffer.count` bytes: how many (0 when none are there
    /// now), or nil at the end of the peer's stream (or a reset).
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int?
    /// Writes what fits now of `bytes`: how many were taken (0 when the
    /// send buffer is full).
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int
}

/// One HTTP/1.1 connection of the service (``HTTPService``): requests
/// parsed from its input in order (pipelined ones too), each answered in
/// full before the next is read, so a client that stops reading stops the
/// server reading (its receive window closes: backpressure end to end). A
/// request body is read and dropped before the answer (after an interim
/// 100 Continue when the client asked for one, RFC 9110 §10.1.1).
///
/// Allocates its two buffers (8 KiB of input, a response head) when made;
/// ``run(_:)`` allocates nothing. Not thread-safe: one owner (a
/// connection's readiness handler, on its executor).
package final class HTTPConnection {
    /// What ``run(_:)`` asks of its caller.
    package enum Outcome: Equatable, Sendable {
        /// Nothing to do until more input or send room.
        case waiting
        /// Shut the write side (FIN) now: the last response is written (or
        /// the peer finished). Returned once.
        case shutdownWrite
        /// The write side is shut; input is read and dropped.
        case finished
    }

    private let input: UnsafeMutableRawBufferPointer
    private var used = 0
    private let head: UnsafeMutableRawBufferPointer
    private var headLength = 0, headSent = 0
    private var page: (offset: Int, remaining: Int) = (0, 0)
    private var pattern: (offset: Int, remaining: Int) = (0, 0)
    /// Bytes of a request body still to skip.
    private var discard = 0
    /// The request whose body is being skipped; answered after it.
    private var pending: HTTPRequestHead?
    private var closeAfterResponse = false
    private var shut = false

    /// Requests answered (refusals included).
    package private(set) var responses = 0

    package init() {
        input = .allocate(byteCount: HTTPRequestHead.maximumLength, alignment: 16)
        head = .allocate(byteCount: HTTPService.maximumHeadLength, alignment: 16)
    }

    deinit {
        input.deallocate()
        head.deallocate()
    }

    private var responding: Bool { headSent < headLength || page.remaining > 0 || pattern.remaining > 0 }

    /// Reads, parses and writes as far as `io` lets it.
    package func run<IO: HTTPConnectionIO>(_ io: inout IO) -> Outcome {
        while true {
            if responding {
                guard flush(&io) else { return .waiting }
                if closeAfterResponse { return shutdown() }
            }
            if shut {
                // Read and drop what the peer still sends (a FIN follows).
                while let n = io.read(into: input), n > 0 {}
                return .finished
            }
            if discard > 0 {
                guard let n = io.read(into: UnsafeMutableRawBufferPointer(rebasing: input[0..<min(discard, input.count)]))
                else { return shutdown() }
                if n == 0 { return .waiting }
                discard -= n
                continue
            }
            if let h = pending {
                pending = nil
                answer(h)
                continue
            }
            switch HTTPRequestHead.parse(UnsafeRawBufferPointer(rebasing: input[0..<used])) {
            case .request(let h):
                consume(h.headLength)
                // Skip the body: what is buffered now, then from the stream.
                let buffered = min(h.bodyLength, used)
                consume(buffered)
                discard = h.bodyLength - buffered
                if discard == 0 {
                    answer(h)
                } else {
                    pending = h
                    if h.expectsContinue {
                        headLength = HTTPService.writeContinue(into: head)
                        headSent = 0
                    }
                }
                continue
            case .refused(let status):
                respond(status: status, type: "text/plain", length: 0, keepAlive: false)
                continue
            case .incomplete:
                if used == input.count {
                    respond(status: 431, type: "text/plain", length: 0, keepAlive: false)
                    continue
                }
            }
            guard let n = io.read(into: UnsafeMutableRawBufferPointer(rebasing: input[used...])) else {
                // The peer finished (a half-open request is dropped).
                return shutdown()
            }
            if n == 0 { return .waiting }
            used += n
        }
    }

    private func shutdown() -> Outcome {
        if shut { return .finished }
        shut = true
        used = 0
        return .shutdownWrite
    }

    private func consume(_ n: Int) {
        guard n > 0 else { return }
        if n < used {
            (input.baseAddress!).copyMemory(from: input.baseAddress! + n, byteCount: used - n)
        }
        used -= n
    }

    private func answer(_ h: HTTPRequestHead) {
        let r = HTTPService.response(to: h.route)
        respond(status: r.status, type: r.type, length: r.length, keepAlive: h.keepAlive)
        guard !h.isHead else { return }
        if case .bytes = h.route { pattern = (0, r.length) } else if r.status == 200 { page = (0, r.length) }
    }

    private func respond(status: Int, type: StaticString, length: Int, keepAlive: Bool) {
        headLength = HTTPService.writeHead(status: status, contentLength: length, contentType: type,
                                           keepAlive: keepAlive, into: head)
        headSent = 0
        closeAfterResponse = !keepAlive
        responses += 1
    }

    /// Writes the response in progress; true when all of it is written.
    private func flush<IO: HTTPConnectionIO>(_ io: inout IO) -> Bool {
        while headSent < headLength {
            let n = io.write(UnsafeRawBufferPointer(rebasing: head[headSent..<headLength]))
            if n == 0 { return false }
            headSent += n
        }
        while page.remaining > 0 {
            let n = HTTPService.page.withUnsafeBytes { p in
                io.write(UnsafeRawBufferPointer(rebasing: p[page.offset..<(page.offset + page.remaining)]))
            }
            if n == 0 { return false }
            page.offset += n
            page.remaining -= n
        }
        while pattern.remaining > 0 {
            let n = io.write(HTTPBodyPattern.bytes(from: pattern.offset,
                                                   count: min(pattern.remaining, HTTPBodyPattern.maximumRun)))
            if n == 0 { return false }
            pattern.offset += n
            pattern.remaining -= n
        }
        return true
    }
}
