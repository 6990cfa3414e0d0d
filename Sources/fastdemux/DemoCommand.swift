import ArgumentParser
import FastDemux
import Glibc

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Replay the bundled real loopback capture (Samples/loopback.pcap) and check conservation.",
        discussion: """
            The capture (real Linux TCP and UDP traffic over 127.0.0.1 and ::1, 112 packets in 10 \
            flows) is compiled into the executable (DemoCapture.swift, generated from \
            Samples/loopback.pcap), so the demo works from any directory and from an installed \
            binary. Prints the same tables as 'fastdemux replay' plus the line \
            'in = delivered + dropped: ... OK'; exits 1 if that check fails.
            """
    )

    @OptionGroup var session: SessionOptions

    func run() throws {
        let path: String
        do {
            path = try DemoCapture.writeTemporaryFile()
        } catch {
            writeStderr("fastdemux demo: error: \(error)")
            throw ExitCode.failure
        }
        defer { unlink(path) }
        let source: CaptureFileSource
        do {
            source = try CaptureFileSource(path: path)
        } catch {
            writeStderr("fastdemux demo: error: \(error)")
            throw ExitCode.failure
        }
        try replayAndPrint(source, command: "demo", label: "Samples/loopback.pcap (built in)",
                           linkType: linkTypeText(source.reader.linkType), session: session,
                           showProgress: false, conservationLine: true)
    }
}
