import PacketIO
import DemuxLab
import ArgumentParser
import FastDemux
import Glibc
import SMPPrimitives
import Synchronization

struct LiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "live",
        abstract: "Demultiplex the packets the kernel routes into a TUN device and print the same statistics as replay.",
        discussion: """
            Opens /dev/net/tun as interface NAME (IFF_TUN | IFF_NO_PI; created if it does not exist, \
            or attached to a persistent one made with 'ip tuntap add dev NAME mode tun'). Needs root or \
            CAP_NET_ADMIN. Give the interface an address and bring it up (e.g. 'ip addr add \
            198.18.0.1/24 dev NAME; ip link set NAME up'): everything the kernel routes into it (e.g. \
            traffic to 198.18.0.2) is demultiplexed. Keep it inside a network namespace of its own \
            ('ip netns exec NS fastdemux live ...') so no real traffic is involved. Stops after \
            --duration seconds, --count packets, or Ctrl-C.
            """
    )

    @Option(help: ArgumentHelp("The TUN interface name (at most 15 bytes).", valueName: "NAME"))
    var tun: String

    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds"))
    var duration: Double?

    @Option(help: ArgumentHelp("Stop after this many packets.", valueName: "n"))
    var count: Int?

    @OptionGroup var session: SessionOptions

    func validate() throws {
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        if let count, count <= 0 { throw ValidationError("--count must be positive") }
        if tun.isEmpty || tun.utf8.count > 15 { throw ValidationError("--tun: a name of 1 to 15 bytes") }
    }

    func run() throws {
        let device: TUNDevice
        do {
            device = try TUNDevice(name: tun)
        } catch {
            writeStderr("fastdemux live: error: \(error)")
            throw ExitCode.failure
        }
        defer { device.close() }
        let config = session.configuration()
        var source = TUNPacketSource(device: device, duration: duration, count: count)
        let limits = [duration.map { "\($0) s" }, count.map { "\($0) packets" }].compactMap { $0 }
        writeStderr("fastdemux live: reading \(device.name) ("
                    + (limits.isEmpty ? "until Ctrl-C" : limits.joined(separator: " or ") + " or Ctrl-C") + ")")
        let stopper = InterruptStopper(source)
        let report: DemuxSessionReport
        do {
            report = try DemuxSession(config).run(&source)
        } catch {
            stopper.finish()
            writeStderr("fastdemux live: error: \(error)")
            throw ExitCode.failure
        }
        stopper.finish()
        let ctx = ReportContext(command: "live", source: "tun \(device.name)", linkType: "RAW (IPv4/IPv6)",
                                sockets: config.sockets)
        try printReport(report, ctx, command: "live", json: session.json, conservationLine: true)
    }
}

/// Turns SIGINT/SIGTERM into ``TUNPacketSource/stop()``: the signals are
/// blocked in every thread (the mask is inherited by the session's threads,
/// which start later) and taken synchronously by one watcher thread with
/// `sigtimedwait`, so no async-signal-safety questions arise.
final class InterruptStopper: Sendable {
    private final class Flag: Sendable { let value = Atomic<Bool>(false) }
    private let done = Flag()
    private let thread: PinnedThread<Void>

    init(_ source: TUNPacketSource) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let done = self.done
        thread = PinnedThread(name: "sigwait") { [done] in
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            sigaddset(&set, SIGTERM)
            var timeout = timespec(tv_sec: 0, tv_nsec: 100_000_000)
            // Relaxed: a stop flag polled every 100 ms; nothing is published with it.
            while !done.value.load(ordering: .relaxed) {
                if sigtimedwait(&set, nil, &timeout) > 0 {
                    source.stop()
                    return
                }
            }
        }
    }

    func finish() {
        done.value.store(true, ordering: .relaxed)
        thread.join()
    }
}
