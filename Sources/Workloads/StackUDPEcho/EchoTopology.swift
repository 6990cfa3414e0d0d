// stack-udp-echo's network: two namespaces made for the run, a TUN device
// for the stack and a veth pair for the kernel server, deleted on every
// exit path (and, if a run crashed, by the next run).
//
//   namespace <prefix>-c (the client's)         namespace <prefix>-s
//   ┌──────────────────────────────────────┐     ┌────────────────────┐
//   │ client sockets                       │     │                    │
//   │   → 198.18.0.2  fdbtun 198.18.0.1/24 ─┼─ fd ─→ EndpointStack    │ (user space)
//   │   → 198.18.1.2  fdbva  198.18.1.1/24 ─┼─veth─┼→ fdbvb 198.18.1.2 │
//   │                                      │     │  kernel UDP server │
//   └──────────────────────────────────────┘     └────────────────────┘
//
// Both servers sit one virtual link away from the client: every request
// leaves the client's namespace through a device transmit (tun_net_xmit,
// veth_xmit) and every reply enters it through a device receive (the TUN
// write's tun_get_user, the veth peer's netif_rx), so the client's kernel
// work per request is the same kind for both. Neither is reached over
// loopback, which would skip the device hop for the kernel server only.
import CPacketIO
import Glibc
import PacketIO
import SMPPrimitives
import Synchronization

/// A stack-udp-echo setup step that failed: what was done and why.
/// Concurrency: a value; any thread.
public struct EchoSetupError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// Runs `argv` (PATH lookup) with standard output discarded (or, with
/// `captureOutput`, returned) and an empty signal mask (the bench blocks
/// SIGINT in its own threads; a child must not inherit that). Returns the
/// exit status (-1 if it could not be started or was killed), what it
/// wrote to standard error (newlines removed) and its standard output
/// (empty unless captured).
func spawnCommand(_ argv: [String], captureOutput: Bool = false) -> (status: Int32, stderr: String, stdout: String) {
    let base = "/tmp/fdbench-\(getpid())-\(commandCounter.add(1, ordering: .relaxed).newValue)"
    let errFile = base + ".err", outFile = base + ".out"
    defer {
        unlink(errFile)
        if captureOutput { unlink(outFile) }
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, captureOutput ? outFile : "/dev/null",
                                     O_WRONLY | (captureOutput ? O_CREAT | O_TRUNC : 0), 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    var cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    var pid = pid_t()
    guard posix_spawnp(&pid, argv[0], &actions, &attributes, &cargs, environ) == 0 else {
        return (-1, "cannot run \(argv[0])", "")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno != EINTR { return (-1, "waitpid failed", "") }
    }
    let text = readTextLines(errFile)?.joined() ?? ""
    let output = captureOutput ? (readTextLines(outFile)?.joined() ?? "") : ""
    // WIFEXITED / WEXITSTATUS
    return ((status & 0x7f) == 0 ? (status >> 8) & 0xff : -1, text.filter { $0 != "\n" }, output)
}

private let commandCounter = Atomic<Int>(0)
private let topologyCounter = Atomic<Int>(0)

/// Runs `argv` and throws its standard error if it fails.
func runChecked(_ argv: [String]) throws(EchoSetupError) {
    let r = spawnCommand(argv)
    guard r.status == 0 else {
        throw EchoSetupError(description: argv.joined(separator: " ") + ": " + (r.stderr.isEmpty ? "exit \(r.status)" : r.stderr))
    }
}

/// A network namespace of the run (`ip netns add`), deleted by ``delete()``.
final class BenchNamespace: Sendable {
    let name: String
    var path: String { "/run/netns/" + name }

    init(_ name: String) throws(EchoSetupError) {
        self.name = name
        try runChecked(["ip", "netns", "add", name])
    }

    /// `ip ARGS` inside the namespace.
    func ip(_ args: String...) throws(EchoSetupError) {
        try runChecked(["ip", "-n", name] + args)
    }

    /// `sysctl -qw SETTING` inside the namespace.
    func sysctl(_ setting: String) throws(EchoSetupError) {
        try runChecked(["ip", "netns", "exec", name, "sysctl", "-qw", setting])
    }

    /// Runs `body` on a fresh thread that entered the namespace (a network
    /// namespace is per thread): sockets and devices it makes live there,
    /// and /proc/thread-self/net shows the namespace's counters.
    func inside<T: Sendable>(thread name: String = "netns", cpu: Int? = nil,
                             _ body: @escaping @Sendable () throws -> T) throws -> T {
        let path = self.path
        let thread = PinnedThread(cpu: cpu, name: name) { () -> Result<T, any Error> in
            let rc = smp_enter_netns(path)
            if rc != 0 { return .failure(EchoSetupError(description: "setns \(path): \(String(cString: strerror(-rc)))")) }
            return Result { try body() }
        }
        return try thread.join().get()
    }

    /// Deletes the namespace (and the devices in it). Idempotent.
    func delete() {
        _ = spawnCommand(["ip", "netns", "del", name])
    }
}

/// The two namespaces, the TUN device and the veth pair of one run.
///
/// Concurrency: made and torn down by the thread that runs the bench; the
/// names and the device are immutable, read by any thread.
final class EchoTopology: Sendable {
    static let tunName = "fdbtun"
    static let clientVeth = "fdbva"
    static let serverVeth = "fdbvb"
    /// The kernel's side of the TUN device (the client's source address
    /// towards the stack) and the stack's own address.
    static let tunKernelAddress = "198.18.0.1"
    static let stackAddress = "198.18.0.2"
    /// The client's side of the veth pair and the kernel server's address.
    static let clientVethAddress = "198.18.1.1"
    static let serverAddress = "198.18.1.2"
    /// The veth ends' link-layer addresses (locally administered).
    static let clientMAC = "02:fd:b0:00:00:01"
    static let serverMAC = "02:fd:b0:00:00:02"
    /// Prefix of every namespace this workload makes (followed by the pid, a count and -c or -s).
    static let prefix = "fdbench-"

    let client: BenchNamespace
    let server: BenchNamespace
    let tun: TUNDevice

    /// Makes the namespaces, the veth pair and a TUN device of `queues`
    /// queues in the client's namespace. On failure everything made so far
    /// is deleted again.
    /// `virtioHeader`: open the TUN device with the virtio-net header (the
    /// stack's TCP segmentation offload).
    init(queues: Int, virtioHeader: Bool = false) throws {
        EchoTopology.deleteStale()
        // The pid and a count of this process's topologies: runs of one
        // process at the same time (test suites in parallel) do not collide.
        let base = EchoTopology.prefix + "\(getpid())-\(topologyCounter.add(1, ordering: .relaxed).newValue)"
        var made: [BenchNamespace] = []
        do {
            let client = try BenchNamespace(base + "-c")
            made.append(client)
            let server = try BenchNamespace(base + "-s")
            made.append(server)
            for ns in [client, server] {
                try ns.ip("link", "set", "lo", "up")
                // IPv4 only: no router solicitations or DAD on the links.
                try ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")
                try ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")
            }
            // Fixed link-layer addresses and permanent neighbour entries:
            // no ARP resolution at the start of a round (it queues, and
            // may drop, the first requests of a burst).
            try client.ip("link", "add", EchoTopology.clientVeth, "address", EchoTopology.clientMAC, "type", "veth",
                          "peer", "name", EchoTopology.serverVeth, "address", EchoTopology.serverMAC,
                          "netns", server.name)
            try client.ip("addr", "add", EchoTopology.clientVethAddress + "/24", "dev", EchoTopology.clientVeth)
            try server.ip("addr", "add", EchoTopology.serverAddress + "/24", "dev", EchoTopology.serverVeth)
            try client.ip("link", "set", EchoTopology.clientVeth, "up")
            try server.ip("link", "set", EchoTopology.serverVeth, "up")
            try client.ip("neigh", "replace", EchoTopology.serverAddress, "lladdr", EchoTopology.serverMAC,
                          "dev", EchoTopology.clientVeth, "nud", "permanent")
            try server.ip("neigh", "replace", EchoTopology.clientVethAddress, "lladdr", EchoTopology.clientMAC,
                          "dev", EchoTopology.serverVeth, "nud", "permanent")
            let tun = try client.inside { () throws -> TUNDevice in
                try TUNDevice(name: EchoTopology.tunName, mode: .multiQueue(queues), virtioHeader: virtioHeader)
            }
            do {
                try client.ip("addr", "add", EchoTopology.tunKernelAddress + "/24", "dev", EchoTopology.tunName)
                try client.ip("link", "set", EchoTopology.tunName, "up")
            } catch {
                tun.close()
                throw error
            }
            self.client = client
            self.server = server
            self.tun = tun
        } catch {
            for ns in made { ns.delete() }
            throw error
        }
    }

    /// Closes the TUN device and deletes both namespaces (with the veth
    /// pair). Idempotent.
    func destroy() {
        tun.close()
        client.delete()
        server.delete()
    }

    /// Deletes namespaces a crashed earlier run left behind: those named
    /// with this workload's prefix and the pid of a process that no longer
    /// exists.
    static func deleteStale() {
        for name in directoryEntries("/run/netns") {
            // fdbench-PID-N-c / -s
            let rest = name.dropFirst(prefix.count)
            guard name.hasPrefix(prefix), let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]),
                  pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            _ = spawnCommand(["ip", "netns", "del", name])
        }
    }

    /// Why the workload cannot run here, or nil if it can.
    static var unavailableReason: String? {
        if geteuid() != 0 { return "needs root (network namespaces, a TUN device and a veth pair)" }
        if access("/dev/net/tun", R_OK | W_OK) != 0 { return "no usable /dev/net/tun" }
        if spawnCommand(["ip", "-V"]).status != 0 { return "needs the 'ip' command (iproute2)" }
        return nil
    }
}

/// Counters of one namespace, read from /proc/thread-self/net by a thread
/// inside it (deltas over a round; the namespaces are the run's own, so
/// nothing else counts there).
struct NamespaceCounters: Sendable {
    var udp = UDPSNMPCounters()
    /// Per interface: receive and transmit drops (/proc/net/dev).
    var rxDrops: [String: Int] = [:]
    var txDrops: [String: Int] = [:]

    static func read(in ns: BenchNamespace) -> NamespaceCounters {
        (try? ns.inside { () -> NamespaceCounters in
            var c = NamespaceCounters()
            c.udp = UDPSNMPCounters.read(path: "/proc/thread-self/net/snmp") ?? UDPSNMPCounters()
            for line in readTextLines("/proc/thread-self/net/dev") ?? [] {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].filter { $0 != " " }
                let f = line[line.index(after: colon)...].split(separator: " ").compactMap { Int($0.filter { $0 != "\n" }) }
                // rx: bytes packets errs drop ...(8 fields), tx: bytes packets errs drop ...
                guard f.count >= 12 else { continue }
                c.rxDrops[name] = f[3]
                c.txDrops[name] = f[11]
            }
            return c
        }) ?? NamespaceCounters()
    }

    /// What the kernel of this namespace dropped since `before`: UDP
    /// receive-buffer overflows and other UDP input errors, and device
    /// drops.
    func dropsSince(_ before: NamespaceCounters) -> (udpReceive: Int, device: Int) {
        let udp = (udp.inErrors - before.udp.inErrors)
        var device = 0
        for (k, v) in rxDrops { device += v - (before.rxDrops[k] ?? 0) }
        for (k, v) in txDrops { device += v - (before.txDrops[k] ?? 0) }
        return (udp, device)
    }
}

/// The names in directory `path` (none if it cannot be opened).
func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        names.append(withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
    }
    return names
}
