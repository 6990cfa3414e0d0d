import PacketIO

/// The small real capture `fastdemux demo` replays:
/// `Sources/fastdemux/Resources/loopback.pcap` (Linux TCP and UDP traffic
/// over 127.0.0.1 and ::1, Ethernet link type, 112 packets in 10 flows; see
/// the README beside it).
///
/// The file is a SwiftPM resource embedded in the executable
/// (`.embedInCode`), so the demo needs no file next to the binary and reads
/// the capture from memory.
///
/// Concurrency: immutable; any thread.
enum DemoCapture {
    /// What error messages and reports call the capture.
    static let name = "loopback.pcap (built in)"

    /// The capture file's bytes.
    static var bytes: [UInt8] { PackageResources.loopback_pcap }

    /// A reader over the embedded capture.
    static func makeSource() throws(PcapError) -> CaptureFileSource {
        CaptureFileSource(reader: try PcapReader(bytes: bytes, name: name))
    }
}
