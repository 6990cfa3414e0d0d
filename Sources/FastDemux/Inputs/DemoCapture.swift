import Glibc

/// The small real capture `fastdemux demo` replays: Samples/loopback.pcap
/// (Linux TCP and UDP traffic over 127.0.0.1 and ::1, Ethernet link type,
/// 112 packets in 10 flows; see Samples/README.md), compiled into the
/// module so the demo needs no file next to the executable.
///
/// The bytes live in DemoCaptureData.swift, generated from the sample by:
///
///     python3 - Samples/loopback.pcap Sources/FastDemux/Inputs/DemoCaptureData.swift <<'PY'
///     import base64, sys
///     data = open(sys.argv[1], 'rb').read(); b = base64.b64encode(data).decode()
///     out = ['// GENERATED from Samples/loopback.pcap by the script in DemoCapture.swift; do not edit.',
///            '// DemoCaptureTests fails when this file and the sample differ.', '',
///            'extension DemoCapture {', '    /// Size of the capture in bytes.',
///            '    static let byteCount = %d' % len(data),
///            '    /// The capture, base64 (a string literal compiles fast; an array literal of this size would not).',
///            '    static let base64 = """'] + [b[i:i + 100] for i in range(0, len(b), 100)] + ['"""', '}']
///     open(sys.argv[2], 'w').write('\n'.join(out) + '\n')
///     PY
///
/// Concurrency: immutable; any thread.
public enum DemoCapture {
    /// The capture file's bytes (decoded on each call: ~140 KB, well under a millisecond).
    public static var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(byteCount)
        var acc: UInt32 = 0
        var bits = 0
        for c in base64.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            default: continue   // newlines, '=' padding
            }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        precondition(out.count == byteCount, "DemoCaptureData.swift is corrupt")
        return out
    }

    /// Writes the capture to a new file in `$TMPDIR` (or /tmp) and returns
    /// its path; the caller removes it.
    public static func writeTemporaryFile() throws(DemoCaptureError) -> String {
        let dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array((dir + "/fastdemux-demo-XXXXXX.pcap").utf8CString)
        let fd = mkstemps(&template, 5)
        guard fd >= 0 else { throw DemoCaptureError(reason: "mkstemps in \(dir): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let data = bytes
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count else {
            unlink(path)
            throw DemoCaptureError(reason: "write \(path): \(String(cString: strerror(errno)))")
        }
        return path
    }
}

/// Why the demo capture could not be written out.
public struct DemoCaptureError: Error, CustomStringConvertible, Sendable {
    public let reason: String
    public var description: String { reason }
}
