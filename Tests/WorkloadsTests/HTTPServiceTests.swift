import Testing
@testable import Workloads

/// A byte stream for an ``HTTPConnection`` in memory: the client's bytes
/// handed out at most `readChunk` at a time, the server's output taken
/// at most `writeBudget` bytes per run (the send buffer's room).
private struct MemoryIO: HTTPConnectionIO {
    var incoming: [UInt8] = []
    var readPosition = 0
    var peerFinished = false
    var readChunk = Int.max
    var writeBudget = Int.max
    var output: [UInt8] = []

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let n = min(buffer.count, incoming.count - readPosition, readChunk)
        if n == 0 { return peerFinished ? nil : 0 }
        buffer.copyBytes(from: incoming[readPosition..<(readPosition + n)])
        readPosition += n
        return n
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, writeBudget)
        output += bytes[0..<n]
        writeBudget -= n
        return n
    }
}

/// One response split off the front of `bytes`: status, header fields
/// (lowercased names), body; nil if incomplete.
private func takeResponse(_ bytes: inout [UInt8]) -> (status: Int, fields: [String: String], body: [UInt8])? {
    let crlf2: [UInt8] = [13, 10, 13, 10]
    guard let end = (0...(max(0, bytes.count - 4))).first(where: { bytes.count >= 4 && Array(bytes[$0..<($0 + 4)]) == crlf2 })
    else { return nil }
    let head = String(decoding: bytes[0..<end], as: UTF8.self).split(separator: "\r\n").map(String.init)
    let status = Int(head[0].split(separator: " ")[1])!
    var fields: [String: String] = [:]
    for line in head.dropFirst() {
        let parts = line.split(separator: ":", maxSplits: 1)
        fields[parts[0].lowercased()] = String(parts[1].drop(while: { $0 == " " }))
    }
    let length = Int(fields["content-length"] ?? "0")!
    let bodyStart = end + 4
    guard bytes.count >= bodyStart + length else { return nil }
    let body = Array(bytes[bodyStart..<(bodyStart + length)])
    bytes.removeFirst(bodyStart + length)
    return (status, fields, body)
}

private func request(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct HTTPServiceTests {
    @Test func getPageAndBytesOnOneKeepAliveConnection() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/100000 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.run(&io) == .waiting)
        let page = takeResponse(&io.output)
        #expect(page?.status == 200)
        #expect(page?.body == HTTPService.page)
        #expect(page?.fields["connection"] == "keep-alive")
        let bytes = takeResponse(&io.output)
        #expect(bytes?.status == 200)
        #expect(bytes?.body.count == 100_000)
        #expect(bytes?.body.enumerated().allSatisfy { $0.element == HTTPBodyPattern.byte(at: $0.offset) } == true)
        #expect(io.output.isEmpty)
        #expect(c.responses == 2)
    }

    @Test func aResponseLargerThanTheSendRoomResumesWhereItStopped() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET /bytes/1048576 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        io.readChunk = 7   // the head arrives in pieces
        var runs = 0
        repeat {
            io.writeBudget = 1000 + runs % 3000
            _ = c.run(&io)
            runs += 1
        } while io.output.count < 1_048_576 + 400 && runs < 10_000
        let bytes = takeResponse(&io.output)
        #expect(bytes?.body.count == 1_048_576)
        #expect(bytes?.body.enumerated().allSatisfy { $0.element == HTTPBodyPattern.byte(at: $0.offset) } == true)
        // The pipelined second request waited for the first response.
        #expect(takeResponse(&io.output)?.body == HTTPService.page)
        #expect(runs > 100)
    }

    @Test func connectionCloseAndHTTP10EndWithAShutdown() {
        for (text, keep) in [("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false),
                             ("GET / HTTP/1.0\r\n\r\n", false),
                             ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
                             ("GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, TE\r\n\r\n", true)] {
            let c = HTTPConnection()
            var io = MemoryIO()
            io.incoming = request(text)
            let outcome = c.run(&io)
            #expect(outcome == (keep ? .waiting : .shutdownWrite), "\(text)")
            #expect(takeResponse(&io.output)?.fields["connection"] == (keep ? "keep-alive" : "close"), "\(text)")
            if !keep { #expect(c.run(&io) == .finished) }
        }
    }

    @Test func thePeersEndOfStreamShutsTheWriteSide() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT")
        io.peerFinished = true
        #expect(c.run(&io) == .shutdownWrite)
        #expect(takeResponse(&io.output)?.status == 200)
        #expect(io.output.isEmpty, "no answer to the truncated request")
    }

    @Test func refusalsCarryTheirStatusAndClose() {
        let cases: [(String, Int)] = [
            ("POST / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            ("GET / HTTP/1.1\r\n\r\n", 400),                                   // no Host
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            ("GET /\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),                         // space before the colon
            ("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
            ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            ("GET /bytes/-1 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            ("GET /bytes/99999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        ]
        for (text, status) in cases {
            let c = HTTPConnection()
            var io = MemoryIO()
            io.incoming = request(text)
            let outcome = c.run(&io)
            let r = takeResponse(&io.output)
            #expect(r?.status == status, "\(text)")
            #expect(outcome == (status == 404 ? .waiting : .shutdownWrite), "\(text)")
        }
    }

    @Test func anOversizedHeadDraws431() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET / HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n")
        #expect(c.run(&io) == .shutdownWrite)
        #expect(takeResponse(&io.output)?.status == 431)
    }

    @Test func aRequestBodyIsSkippedAndHeadHasNoBody() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n")
            + [UInt8](repeating: 0x41, count: 10_000)
            + request("HEAD /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n")
        io.readChunk = 3000
        #expect(c.run(&io) == .waiting)
        #expect(takeResponse(&io.output)?.body == HTTPService.page)
        // HEAD: Content-Length 5 and no body (RFC 9110 §9.3.2).
        let text = String(decoding: io.output, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.contains("Content-Length: 5\r\n") && text.hasSuffix("\r\n\r\n"))
    }

    @Test func expectContinueDrawsAnInterimResponseAndTheAnswerFollowsTheBody() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        #expect(c.run(&io) == .waiting)
        #expect(String(decoding: io.output, as: UTF8.self) == "HTTP/1.1 100 Continue\r\n\r\n")
        io.output = []
        io.incoming += [UInt8](repeating: 0x62, count: 4999)
        #expect(c.run(&io) == .waiting)
        #expect(io.output.isEmpty, "no answer before the whole body")
        io.incoming += [0x62]
        #expect(c.run(&io) == .waiting)
        #expect(takeResponse(&io.output)?.body == HTTPService.page)
        #expect(c.responses == 1)
    }

    @Test func bareLineFeedsAreAccepted() {
        let c = HTTPConnection()
        var io = MemoryIO()
        io.incoming = request("GET /bytes/3 HTTP/1.1\nHost: x\n\n")
        #expect(c.run(&io) == .waiting)
        #expect(takeResponse(&io.output)?.body == [0, 1, 2])
    }
}
