import PacketIO
import ArgumentParser
import FastDemux
import Glibc

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Replay the built-in real loopback capture and check conservation.",
        discussion: """
            The capture (real Linux TCP and UDP traffic over 127.0.0.1 and ::1, 112 packets in 10 \
            flows) is embedded in the executable as a resource \
            (Sources/fastdemux/Resources/loopback.pcap) and read from memory, so the demo works \
            from any directory and from an installed binary. Prints the same tables as 'fastdemux replay' plus the line \
            'in = delivered + dropped: ... OK'; exits 1 if that check fails.
            """
    )

    @OptionGroup var session: SessionOptions

    func run() throws {
        let source: CaptureFileSource
        do {
            source = try DemoCapture.makeSource()
        } catch {
            writeStderr("fastdemux demo: error: \(error)")
            throw ExitCode.failure
        }
        try replayAndPrint(source, command: "demo", label: DemoCapture.name,
                           linkType: linkTypeText(source.reader.linkType), session: session,
                           showProgress: false, conservationLine: true)
    }
}
