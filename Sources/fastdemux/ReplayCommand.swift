import PacketIO
import DemuxLab
import ArgumentParser
import FastDemux
import Glibc

/// Options shared by `replay`, `live` and `demo`.
struct SessionOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Input (demux) threads. 1: the reader thread parses, looks up and enqueues. N > 1: the reader parses and steers each packet by its canonical flow (both directions together; flows numbered by first appearance, modulo N) to one of N input threads over a queue each, so per-flow order holds.",
        valueName: "N"))
    var workers: Int = 1

    @Option(help: ArgumentHelp(
        "Open only these sockets: listening TCP / bound UDP on the wildcard address (IPv4 and IPv6); PROTO is tcp or udp, PORT 1...65535, comma-separated or repeated, e.g. tcp:80,udp:53. Default: a connected socket for every flow direction seen.",
        valueName: "PROTO:PORT,..."))
    var listen: [CommaList<ListenSpec>] = []

    @Option(help: ArgumentHelp("Receive-queue capacity of each socket (a full queue drops, counted as queue_full).", valueName: "n"))
    var queue: Int = 256

    @Option(help: ArgumentHelp("Per-flow mode: flow sockets open at once at most; a flow direction arriving past it gets no socket (its packets drop as no_socket, the refusal is counted as 'flow socket cap reached').", valueName: "n"))
    var maxFlowSockets: Int = 65_536

    @Option(help: ArgumentHelp("Per-flow mode: close a flow direction's socket after this many seconds without a packet (wall-clock time of the run; 0: never).", valueName: "seconds"))
    var flowIdleTimeout: Double = 30

    @Flag(help: "Verify IPv4 header and TCP/UDP checksums (failures are dropped as 'checksum').")
    var verifyChecksums = false

    @Flag(help: "Do not pin the reader, input and consumer threads to CPUs.")
    var noPin = false

    @Flag(help: "Print one JSON object (one line, with schemaVersion and version) instead of the tables.")
    var json = false

    func validate() throws {
        if workers < 1 || workers > 64 { throw ValidationError("--workers must be 1...64") }
        if queue < 1 { throw ValidationError("--queue must be positive") }
        if maxFlowSockets < 1 { throw ValidationError("--max-flow-sockets must be positive") }
        if !(flowIdleTimeout >= 0) { throw ValidationError("--flow-idle-timeout must be 0 or positive") }
    }

    func configuration() -> DemuxSessionConfiguration {
        var c = DemuxSessionConfiguration(workers: workers)
        if !listen.isEmpty { c.sockets = .listen(listen.joined()) }
        c.queueCapacity = queue
        c.maxSockets = maxFlowSockets
        c.flowIdleTimeout = flowIdleTimeout > 0 ? flowIdleTimeout : nil
        c.parser = ParserOptions(verifyChecksums: verifyChecksums)
        c.pin = !noPin
        return c
    }
}

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a pcap/pcapng capture through the demultiplexer and print the per-flow table, drops by reason and hand-off statistics.",
        discussion: """
            Frames are read with libpcap (pcap) or the built-in pcapng reader, copied into pooled \
            packet buffers, parsed, looked up in the PCB tables and put on socket receive queues; one \
            consumer thread drains every socket. Frames the parser rejects (including an unsupported \
            link type) are counted under their drop reason. Exits 1 on a missing or unreadable file, \
            a file that is not a capture, a capture broken part-way (after printing what was read), or \
            a failed conservation check.
            """
    )

    @Argument(help: "The capture file (pcap or pcapng).")
    var file: String?

    @Flag(help: "Replay the demux benchmark's synthetic traffic (4,096 flows, Zipf-distributed, as 'fastdemux bench demux') instead of a file.")
    var synthetic = false

    @Option(help: ArgumentHelp("With --synthetic: frames per pass (1...1048576).", valueName: "n"))
    var frames: Int = 1 << 20

    @Option(help: ArgumentHelp("With --synthetic: passes over the frame set.", valueName: "n"))
    var passes: Int = 1

    @OptionGroup var session: SessionOptions

    @Flag(help: "Print a progress line on standard error every second (default: only when it is a terminal).")
    var progress = false

    func validate() throws {
        if synthetic == (file != nil) { throw ValidationError("give a capture FILE or --synthetic (not both)") }
        if frames < 1 || frames > 1 << 20 { throw ValidationError("--frames must be 1...1048576") }
        if passes < 1 { throw ValidationError("--passes must be positive") }
    }

    func run() throws {
        let showProgress = progress || stderrIsTerminal
        if synthetic {
            let source = SyntheticTrafficSource(frameCount: frames, passes: passes)
            try replayAndPrint(source, command: "replay", label: "synthetic (\(frames) frames x \(passes) passes)",
                               linkType: "EN10MB", session: session, showProgress: showProgress,
                               conservationLine: false)
            return
        }
        let path = file!
        let source: CaptureFileSource
        do {
            source = try CaptureFileSource(path: path)
        } catch {
            writeStderr("fastdemux replay: error: \(error)")
            throw ExitCode.failure
        }
        try replayAndPrint(source, command: "replay", label: path, linkType: linkTypeText(source.reader.linkType),
                           session: session, showProgress: showProgress, conservationLine: false)
    }
}

/// The link type line; an unsupported one says what happens to its frames.
func linkTypeText(_ t: LinkType) -> String {
    t.isSupported ? t.description : "\(t) (not supported: its frames are dropped as unsupported_link_type)"
}

/// Runs a source through a session and prints the report (replay and demo).
func replayAndPrint<Source: PacketSource>(_ source: Source, command: String, label: String, linkType: String,
                                          session: SessionOptions, showProgress: Bool,
                                          conservationLine printConservation: Bool) throws {
    var source = source
    let config = session.configuration()
    let printer = ProgressPrinter(label: command)
    let ctx = ReportContext(command: command, source: label, linkType: linkType, sockets: config.sockets)
    var callback: (@Sendable (SessionProgress) -> Void)?
    if showProgress { callback = { p in printer.update(p) } }
    let report: DemuxSessionReport
    do {
        report = try DemuxSession(config).run(&source, progress: callback)
    } catch {
        writeStderr("fastdemux \(command): error: \(error)")
        throw ExitCode.failure
    }
    if showProgress && report.seconds >= config.progressInterval { printer.finish() }
    try printReport(report, ctx, command: command, json: session.json, conservationLine: printConservation)
}

/// Prints a report; exits 1 if reading ended early or conservation failed.
func printReport(_ report: DemuxSessionReport, _ ctx: ReportContext, command: String, json: Bool,
                 conservationLine printConservation: Bool) throws {
    if json {
        try printJSONLine(SessionReportJSON(report, ctx))
    } else {
        print(renderText(report, ctx))
        if printConservation { print(conservationLine(report)) }
    }
    fflush(nil)
    if let e = report.sourceError {
        writeStderr("fastdemux \(command): error: \(e) (the statistics above cover the frames before it)")
        throw ExitCode.failure
    }
    if !report.isConserved {
        writeStderr("fastdemux \(command): conservation check failed: \(conservationLine(report))")
        throw ExitCode.failure
    }
}
