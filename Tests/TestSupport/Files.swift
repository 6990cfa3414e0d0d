import Glibc

/// The package root, from this file's path (Tests/TestSupport/Files.swift).
package let packageRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

package let loopbackSamplePath = packageRoot + "/Sources/fastdemux/Resources/loopback.pcap"

package func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}

/// Writes `bytes` to `path` (created or truncated); false on failure.
package func writeFile(_ path: String, _ bytes: [UInt8]) -> Bool {
    guard let f = fopen(path, "wb") else { return false }
    defer { fclose(f) }
    return bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) } == bytes.count
}

/// A temporary file removed on deinit.
package final class ScratchFile {
    package let path: String
    package init(_ bytes: [UInt8], suffix: String = ".pcap") {
        var template = Array("/tmp/fastdemux-test-XXXXXX\(suffix)".utf8CString)
        let fd = mkstemps(&template, Int32(suffix.utf8.count))
        precondition(fd >= 0)
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
    deinit { unlink(path) }
}

/// Writes a classic little-endian pcap (microsecond timestamps).
package struct PcapWriter {
    package var bytes: [UInt8] = []

    package init(linkType: UInt32, snaplen: UInt32 = 65_535) {
        append32(0xa1b2_c3d4)
        append16(2); append16(4)
        append32(0); append32(0)
        append32(snaplen); append32(linkType)
    }

    package mutating func append16(_ v: UInt16) { bytes += [UInt8(v & 0xff), UInt8(v >> 8)] }
    package mutating func append32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }

    package mutating func add(_ frame: [UInt8], second: UInt32 = 1) {
        append32(second); append32(0)
        append32(UInt32(frame.count)); append32(UInt32(frame.count))
        bytes += frame
    }
}

/// An Ethernet + IPv4 + UDP or TCP frame as Linux's loopback device
/// captures it: both MAC addresses zero (so 127.0.0.0/8 addresses are not
/// martian), IPv4 header checksum filled in, TCP/UDP checksums left 0 (not
/// verified by default).
package func makeEthernetFrame(tcp: Bool, src: UInt32, sport: UInt16, dst: UInt32, dport: UInt16,
                       seq: UInt32 = 1, payload: Int) -> [UInt8] {
    var f: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00]
    let l4 = tcp ? 20 : 8
    let total = 20 + l4 + payload
    var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 0, 0x40, 0, 64, tcp ? 6 : 17, 0, 0]
    for a in [src, dst] { ip += [UInt8(a >> 24), UInt8(a >> 16 & 0xff), UInt8(a >> 8 & 0xff), UInt8(a & 0xff)] }
    let c = TestPacket.checksum(ip)
    ip[10] = UInt8(c >> 8)
    ip[11] = UInt8(c & 0xff)
    f += ip
    f += [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff)]
    if tcp {
        f += [UInt8(seq >> 24), UInt8(seq >> 16 & 0xff), UInt8(seq >> 8 & 0xff), UInt8(seq & 0xff)]
        f += [0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]
    } else {
        let ulen = 8 + payload
        f += [UInt8(ulen >> 8), UInt8(ulen & 0xff), 0, 0]
    }
    return f + [UInt8](repeating: 0x5a, count: payload)
}
