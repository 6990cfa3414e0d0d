import FastDemux
import PacketIO
import SMPPrimitives

// What a DemuxSession is told (configuration) and what it reports.

/// A port to listen on: `tcp:80` (a listening TCP socket) or `udp:53` (a
/// bound UDP socket), on the wildcard address of both IPv4 and IPv6.
public struct ListenSpec: Hashable, Sendable, CustomStringConvertible {
    /// TCP (a listening socket) or UDP (a bound socket).
    public var transport: TransportProtocol
    /// The local port (1...65535).
    public var port: UInt16

    public init(_ transport: TransportProtocol, port: UInt16) {
        self.transport = transport
        self.port = port
    }

    /// Parses `tcp:80,udp:53` (comma-separated `PROTO:PORT` items).
    /// - Throws: ``ListenSpecError`` naming the bad item.
    public static func parseList(_ text: String) throws(ListenSpecError) -> [ListenSpec] {
        var out: [ListenSpec] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, let port = UInt16(parts[1]), port != 0 else {
                throw ListenSpecError(item: String(item))
            }
            switch parts[0].lowercased() {
            case "tcp": out.append(ListenSpec(.tcp, port: port))
            case "udp": out.append(ListenSpec(.udp, port: port))
            default: throw ListenSpecError(item: String(item))
            }
        }
        return out
    }

    public var description: String { "\(transport):\(port)" }
}

/// A bad `--listen` item.
public struct ListenSpecError: Error, CustomStringConvertible, Sendable {
    /// The item as written.
    public let item: String
    public var description: String { "bad listen item '\(item)': expected PROTO:PORT with PROTO tcp or udp and PORT 1...65535" }
}

/// Which sockets a ``DemuxSession`` opens.
public enum SessionSockets: Sendable, Equatable {
    /// A connected socket for each direction of every flow, opened when
    /// the direction's first packet arrives (as if both ends of every
    /// connection in the capture were local, which they are on loopback).
    case perFlow
    /// Only listening TCP / bound UDP sockets on these ports; packets that
    /// match none are dropped as `no_socket`.
    case listen([ListenSpec])
}

/// How a ``DemuxSession`` runs (a value; fixed when the session is made).
public struct DemuxSessionConfiguration: Sendable {
    /// Input (demux) threads. 1: the reader thread itself parses, looks up
    /// and enqueues. N > 1: the reader parses and steers every packet by its
    /// canonical flow (both directions together, RSS style: flow number in
    /// order of first appearance, modulo N, which spreads flows evenly) to
    /// one of N input threads over a PCQ each, so per-flow order holds.
    public var workers: Int = 1
    public var sockets: SessionSockets = .perFlow
    /// Receive-queue capacity of each socket (a full queue drops, counted as
    /// `queue_full`); 256 as in the demux benchmark workload.
    public var queueCapacity: Int = 256
    /// Packet buffers in the pool (the reader waits when all are in flight).
    public var poolBuffers: Int = 8192
    /// Bytes kept per packet buffer: a longer frame is stored truncated
    /// (the demux needs only its headers); byte counts use the wire length.
    public var bufferSize: Int = 2048
    /// Upper bound on sockets (the consumer's ready set is sized for it);
    /// in per-flow mode also the cap on flow sockets open at once
    /// (``FlowSocketLimits/maxSockets``): a direction arriving past it gets
    /// no socket, counted as "flow socket cap reached".
    public var maxSockets: Int = 65_536
    /// Per-flow mode: seconds without a packet after which a direction's
    /// socket is closed (nil: never; ``FlowSocketLimits/idleTimeout``).
    /// Wall-clock time of the run, not capture timestamps.
    public var flowIdleTimeout: Double? = 30
    /// What the parser accepts.
    public var parser = ParserOptions()
    /// Pin the reader to CPU 0, input workers round-robin from CPU 0 and the
    /// consumer to CPU 1 (modulo the CPU count).
    public var pin: Bool = true
    /// Seconds between progress callbacks (checked after every burst).
    public var progressInterval: Double = 1

    public init(workers: Int = 1, sockets: SessionSockets = .perFlow) {
        self.workers = workers
        self.sockets = sockets
    }
}

/// A progress snapshot given to the progress callback (reader thread).
public struct SessionProgress: Sendable {
    /// Frames and wire bytes read from the source so far.
    public var frames: Int
    public var bytes: Int
    /// Seconds since the reader started.
    public var seconds: Double
}

/// One row of the per-flow table: a canonical 5-tuple (both directions).
public struct FlowRecord: Sendable {
    /// The canonical key (smaller endpoint first; see ``FlowKey/canonical``).
    public var key: FlowKey
    /// Frames of this flow read from the source, and their wire bytes.
    public var packets: Int
    public var bytes: Int
    /// Frames delivered to a socket receive queue and taken by the reader.
    public var deliveredPackets: Int
    public var deliveredBytes: Int
    /// 1-based index of the flow's first frame in the source.
    public var firstFrame: Int
}

/// Everything a session measured (a value, built after every thread of the
/// run has stopped).
public struct DemuxSessionReport: Sendable {
    /// Frames read from the source (the "in" of the conservation check).
    public var framesIn = 0
    public var bytesIn = 0
    /// Packets the consumer took from socket queues.
    public var delivered = 0
    /// Per-flow table, in order of first appearance.
    public var flows: [FlowRecord] = []
    /// Parser drops by reason (zero counts omitted), in reason order.
    public var parseDrops: [(reason: DropReason, count: Int)] = []
    /// Input-path statistics of every input thread, merged; its `drops`
    /// hold the parse drops as `malformed`/`unsupported` too.
    public var input = DemuxStats()
    /// Reader-to-worker steering queues (workers > 1): one per worker.
    public var steering: [PCQStatistics] = []
    /// Consumer: socket drains that returned packets, ready-set sweeps,
    /// times it parked.
    public var consumerDrains = 0
    public var consumerSweeps = 0
    public var consumerParks = 0
    /// Packets that arrived out of frame order within their direction.
    public var orderViolations = 0
    public var socketsOpened = 0
    /// Flow directions left without a socket (``DemuxSessionConfiguration/maxSockets``
    /// reached, or the connect was refused), counted per refused open.
    public var socketLimitHits = 0
    /// Per-flow mode: sockets opened, expired and refused by the flow
    /// socket table (zero in listen mode).
    public var flowSockets = FlowSocketCounters()
    /// Packets still queued in sockets when they were closed (expired flow
    /// sockets during the run), dropped as `socket_closed` at the socket.
    public var packetsDrainedAtClose = 0
    /// Input threads used (``DemuxSessionConfiguration/workers``).
    public var workers = 1
    /// Wall-clock seconds the reader ran.
    public var seconds = 0.0
    /// The error that ended reading early (e.g. a capture broken part-way):
    /// the report covers the frames before it.
    public var sourceError: (any Error)?

    /// Frames dropped, by the parser or the demux (every reason).
    public var dropped: Int { input.drops.total }

    /// in = delivered + dropped (+ drained from sockets closed during the
    /// run), every offered frame went through the demux exactly once, and
    /// nothing was left queued or reordered.
    public var isConserved: Bool {
        framesIn == delivered + dropped + packetsDrainedAtClose && input.offered == framesIn
            && input.enqueued == delivered + packetsDrainedAtClose && orderViolations == 0
    }
}

/// The cause of a session failure.
public struct DemuxSessionError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, for a person.
    public let description: String
}
