import FastDemux
import PacketIO

/// The demux benchmark's synthetic traffic (``DemuxBenchmarkTraffic``:
/// 4,096 Zipf-distributed IPv4 flows plus 1% to listening/wildcard ports,
/// 64 to 128-byte Ethernet frames) as a packet source, replayed `passes`
/// times in order.
///
/// No allocation per frame: each frame points into the generator's slab.
public struct SyntheticTrafficSource: PacketSource {
    public let traffic: DemuxBenchmarkTraffic
    public let passes: Int
    private var next = 0

    /// - Parameters:
    ///   - frameCount: frames per pass (at most 2^20; the benchmark uses 2^20).
    ///   - passes: how many times to replay the frame set.
    public init(frameCount: Int = DemuxBenchmarkTraffic.defaultFrameCount, passes: Int = 1) {
        precondition(passes >= 1)
        traffic = DemuxBenchmarkTraffic(frameCount: frameCount)
        self.passes = passes
    }

    /// Total frames this source yields.
    public var totalFrames: Int { traffic.frameCount * passes }

    public mutating func nextFrame() throws -> CapturedFrame? {
        guard next < totalFrames else { return nil }
        let i = next % traffic.frameCount
        next += 1
        let length = 64 + Int(traffic.lengths[i])   // stored as length - 64
        return CapturedFrame(index: next, linkType: .ethernet, timestampNanoseconds: 0, wireLength: length,
                             bytes: UnsafeRawBufferPointer(start: traffic.frames + i * DemuxBenchmarkTraffic.stride,
                                                           count: length))
    }
}
