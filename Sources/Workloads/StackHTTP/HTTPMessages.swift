// The small HTTP/1.1 service of `fastdemux serve --http` and of the
// `bench stack-http` servers: the request-head parser, the response heads
// and the body pattern, one piece of code for the stack's server and the
// kernel's, so both send the same bytes.

/// What a request asked for, after ``HTTPRequestHead/parse(_:)``.
package enum HTTPRoute: Equatable, Sendable {
    /// `GET /`: the short fixed page (``HTTPService/page``).
    case page
    /// `GET /bytes/N`: N bytes of ``HTTPBodyPattern``.
    case bytes(Int)
    /// Any other target: 404.
    case notFound
}

/// The head of one HTTP/1.1 request (RFC 9112 §2–§3, §9.3): what the
/// service needs from it. Parsed in place from the connection's buffer;
/// no allocation.
package struct HTTPRequestHead: Equatable, Sendable {
    /// The request line's method was HEAD (the response has no body).
    package var isHead: Bool
    /// What the target names.
    package var route: HTTPRoute
    /// The connection persists after the response (RFC 9112 §9.3:
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    package var keepAlive: Bool
    /// Bytes of the head, the final CRLF CRLF included.
    package var headLength: Int
    /// The request body's length (Content-Length), skipped by the server.
    package var bodyLength: Int
    /// `Expect: 100-continue` (RFC 9110 §10.1.1): the client waits for an
    /// interim 100 response before it sends the body.
    package var expectsContinue: Bool = false

    /// The outcome of a parse.
    package enum Parse: Equatable, Sendable {
        /// No complete head yet (no CRLF CRLF in the bytes).
        case incomplete
        /// A request; ``HTTPRequestHead/headLength`` bytes are its head.
        case request(HTTPRequestHead)
        /// A request the service refuses with this status, then closes:
        /// 400 (malformed, RFC 9112 §3 and §3.2: no Host in HTTP/1.1),
        /// 405 (a method other than GET and HEAD), 501
        /// (Transfer-Encoding, which the service does not decode), 505
        /// (an HTTP version other than 1.0 and 1.1).
        case refused(status: Int)
    }

    /// The largest head the service reads (a longer one draws 431).
    package static let maximumLength = 8192

    /// Parses the head at the start of `bytes` (the request line, header
    /// fields, an empty line). Bare LF line ends are accepted (RFC 9112
    /// §2.2 allows a recipient to).
    package static func parse(_ bytes: UnsafeRawBufferPointer) -> Parse {
        guard let end = headEnd(bytes) else { return .incomplete }
        var lines = LineCursor(bytes: bytes, end: end.contentEnd)
        guard let requestLine = lines.next() else { return .refused(status: 400) }
        // request-line = method SP request-target SP HTTP-version (found
        // by index, not `split`, which would allocate an array per request)
        let base = requestLine.base
        guard let sp1 = requestLine.firstIndex(of: 0x20),
              let sp2 = base[(sp1 + 1)..<requestLine.endIndex].firstIndex(of: 0x20)
        else { return .refused(status: 400) }
        let method = base[requestLine.startIndex..<sp1], target = base[(sp1 + 1)..<sp2]
        let version = base[(sp2 + 1)..<requestLine.endIndex]
        guard !method.isEmpty, !target.isEmpty else { return .refused(status: 400) }
        let minor: Int
        if version.elementsEqual("HTTP/1.1".utf8) {
            minor = 1
        } else if version.elementsEqual("HTTP/1.0".utf8) {
            minor = 0
        } else if version.starts(with: "HTTP/".utf8) {
            return .refused(status: 505)
        } else {
            return .refused(status: 400)
        }
        let isHead: Bool
        if method.elementsEqual("GET".utf8) {
            isHead = false
        } else if method.elementsEqual("HEAD".utf8) {
            isHead = true
        } else {
            return .refused(status: 405)
        }
        var keepAlive = minor == 1
        var hasHost = false
        var bodyLength = 0
        var expectsContinue = false
        while let line = lines.next() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                return .refused(status: 400)
            }
            let name = line[line.startIndex..<colon]
            // RFC 9112 §5.1: no whitespace between the name and the colon.
            guard name.last != 0x20, name.last != 0x09 else { return .refused(status: 400) }
            let value = trimmed(line[(colon + 1)...])
            if equalsIgnoringCase(name, "host") {
                hasHost = true
            } else if equalsIgnoringCase(name, "connection") {
                if containsToken(value, "close") { keepAlive = false }
                if containsToken(value, "keep-alive") && minor == 0 { keepAlive = true }
            } else if equalsIgnoringCase(name, "content-length") {
                guard let n = decimal(value), n <= 1 << 40 else { return .refused(status: 400) }
                bodyLength = n
            } else if equalsIgnoringCase(name, "expect") {
                expectsContinue = containsToken(value, "100-continue")
            } else if equalsIgnoringCase(name, "transfer-encoding") {
                return .refused(status: 501)
            }
        }
        if minor == 1 && !hasHost { return .refused(status: 400) }
        let route: HTTPRoute
        if target.elementsEqual("/".utf8) {
            route = .page
        } else if target.starts(with: "/bytes/".utf8),
                  let n = decimal(target[(target.startIndex + 7)...]), n <= HTTPService.maximumBytes {
            route = .bytes(n)
        } else {
            route = .notFound
        }
        return .request(HTTPRequestHead(isHead: isHead, route: route, keepAlive: keepAlive,
                                        headLength: end.headLength, bodyLength: bodyLength,
                                        expectsContinue: expectsContinue))
    }

    /// Where the head ends: the offset of its empty line and its length
    /// with that line. Nil until one arrived.
    private static func headEnd(_ b: UnsafeRawBufferPointer) -> (contentEnd: Int, headLength: Int)? {
        var i = 0
        while i < b.count {
            guard b[i] == 0x0A else { i += 1; continue }
            // An LF: the head ends if the next line is empty (LF or CRLF).
            if i + 1 < b.count && b[i + 1] == 0x0A { return (i + 1, i + 2) }
            if i + 2 < b.count && b[i + 1] == 0x0D && b[i + 2] == 0x0A { return (i + 1, i + 3) }
            i += 1
        }
        return nil
    }

    private static func trimmed(_ s: Slice<UnsafeRawBufferPointer>) -> Slice<UnsafeRawBufferPointer> {
        var lo = s.startIndex, hi = s.endIndex
        while lo < hi && (s.base[lo] == 0x20 || s.base[lo] == 0x09) { lo += 1 }
        while hi > lo && (s.base[hi - 1] == 0x20 || s.base[hi - 1] == 0x09) { hi -= 1 }
        return s.base[lo..<hi]
    }

    private static func lower(_ c: UInt8) -> UInt8 { c >= 0x41 && c <= 0x5A ? c | 0x20 : c }

    private static func equalsIgnoringCase(_ s: Slice<UnsafeRawBufferPointer>, _ lowercase: StaticString) -> Bool {
        guard s.count == lowercase.utf8CodeUnitCount else { return false }
        let p = lowercase.utf8Start
        for (k, c) in s.enumerated() where lower(c) != p[k] { return false }
        return true
    }

    /// A comma-separated list (RFC 9110 §5.6.1) has `token` (any case).
    private static func containsToken(_ s: Slice<UnsafeRawBufferPointer>, _ token: StaticString) -> Bool {
        // Element by element, by index (no array of pieces).
        var start = s.startIndex
        while start <= s.endIndex {
            let end = s.base[start..<s.endIndex].firstIndex(of: UInt8(ascii: ",")) ?? s.endIndex
            if equalsIgnoringCase(trimmed(s.base[start..<end]), token) { return true }
            start = end + 1
        }
        return false
    }

    /// A non-empty run of decimal digits (at most 15), nil otherwise.
    private static func decimal(_ s: Slice<UnsafeRawBufferPointer>) -> Int? {
        guard !s.isEmpty, s.count <= 15 else { return nil }
        var n = 0
        for c in s {
            guard c >= 0x30 && c <= 0x39 else { return nil }
            n = n * 10 + Int(c - 0x30)
        }
        return n
    }
}

/// The lines of a head (without their CR LF or LF), up to `end`.
private struct LineCursor {
    let bytes: UnsafeRawBufferPointer
    let end: Int
    var position = 0

    mutating func next() -> Slice<UnsafeRawBufferPointer>? {
        guard position < end else { return nil }
        var i = position
        while i < end && bytes[i] != 0x0A { i += 1 }
        var lineEnd = i
        if lineEnd > position && bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
        defer { position = i + 1 }
        // The empty line ends the head (the cursor's `end` is past it).
        return lineEnd == position ? nil : bytes[position..<lineEnd]
    }
}

/// The body of `GET /bytes/N`: byte `i` is `i % 251` (a prime period, so
/// that no segment or buffer size lines up with it and a misplaced piece
/// shows). Stored as one period plus 64 KiB so that any run of up to
/// 64 KiB from any offset is contiguous.
package enum HTTPBodyPattern {
    /// The period.
    package static let period = 251
    /// The longest run ``bytes(from:count:)`` returns.
    package static let maximumRun = 64 * 1024

    // nonisolated(unsafe): written once by the lazy initializer (its
    // swift_once orders it before every read), only read afterwards.
    private nonisolated(unsafe) static let storage: UnsafeRawBufferPointer = {
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: period + maximumRun, alignment: 64)
        for i in 0..<p.count { p[i] = UInt8(i % period) }
        return UnsafeRawBufferPointer(p)
    }()

    /// `count` (at most ``maximumRun``) bytes of the body from `offset`.
    package static func bytes(from offset: Int, count: Int) -> UnsafeRawBufferPointer {
        precondition(count <= maximumRun)
        let start = offset % period
        return UnsafeRawBufferPointer(rebasing: storage[start..<(start + count)])
    }

    /// The byte at `offset` (for checking a body).
    package static func byte(at offset: Int) -> UInt8 { UInt8(offset % period) }
}

/// The service's responses: the status line and header fields of each
/// (RFC 9112 §4, §6.2: every response has a Content-Length, so the
/// connection can persist), rendered into a caller's buffer.
package enum HTTPService {
    /// The page of `GET /`.
    package static let page: [UInt8] = Array("""
        <!DOCTYPE html>
        <html><head><title>smp-networking</title></head>
        <body><p>Served by the smp-networking user-space TCP/IP stack.</p></body></html>

        """.utf8)

    /// The largest N of `/bytes/N` (16 GiB).
    package static let maximumBytes = 1 << 34

    /// The longest head ``writeHead(status:contentLength:keepAlive:into:)``
    /// renders.
    package static let maximumHeadLength = 256

    /// Renders the head of a response into `buffer` (at least
    /// ``maximumHeadLength`` bytes); returns its length. No allocation.
    package static func writeHead(status: Int, contentLength: Int, contentType: StaticString, keepAlive: Bool,
                                  into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var w = HeadWriter(buffer: buffer)
        w.append("HTTP/1.1 ")
        w.append(decimal: status)
        w.append(" ")
        w.append(reason(status))
        w.append("\r\nServer: smp-networking\r\nContent-Type: ")
        w.append(contentType)
        w.append("\r\nContent-Length: ")
        w.append(decimal: contentLength)
        w.append(keepAlive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n")
        return w.count
    }

    /// Renders the interim `100 Continue` (RFC 9110 §15.2.1) into
    /// `buffer`; returns its length.
    package static func writeContinue(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var w = HeadWriter(buffer: buffer)
        w.append("HTTP/1.1 100 Continue\r\n\r\n")
        return w.count
    }

    /// The status, content type and body length of the response to a
    /// parsed request or a refusal.
    package static func response(to route: HTTPRoute) -> (status: Int, type: StaticString, length: Int) {
        switch route {
        case .page: return (200, "text/html; charset=utf-8", page.count)
        case .bytes(let n): return (200, "application/octet-stream", n)
        case .notFound: return (404, "text/plain", 0)
        }
    }

    private static func reason(_ status: Int) -> StaticString {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 431: return "Request Header Fields Too Large"
        case 501: return "Not Implemented"
        case 505: return "HTTP Version Not Supported"
        default: return "Error"
        }
    }
}

/// Appends ASCII into a fixed buffer.
private struct HeadWriter {
    let buffer: UnsafeMutableRawBufferPointer
    var count = 0

    mutating func append(_ s: StaticString) {
        let n = s.utf8CodeUnitCount
        precondition(count + n <= buffer.count)
        (buffer.baseAddress! + count).copyMemory(from: s.utf8Start, byteCount: n)
        count += n
    }

    mutating func append(decimal value: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes: up to 20 digits
        var v = UInt64(max(0, value)), n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[23 - n] = UInt8(0x30 + v % 10)
                v /= 10
                n += 1
            } while v > 0
            precondition(count + n <= buffer.count)
            (buffer.baseAddress! + count).copyMemory(from: d.baseAddress! + 24 - n, byteCount: n)
        }
        count += n
    }
}
