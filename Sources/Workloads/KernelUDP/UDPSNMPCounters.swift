// The kernel's own UDP counters, for kernel-udp's drop accounting.

/// The UDP counters of /proc/net/snmp (namespace-wide: other processes'
/// datagrams count too, so a delta is only ever too large).
struct UDPSNMPCounters {
    var inDatagrams = 0, noPorts = 0, inErrors = 0, outDatagrams = 0, rcvbufErrors = 0

    /// The counters of `path`: /proc/net/snmp is the process's network
    /// namespace; /proc/thread-self/net/snmp the calling thread's.
    static func read(path: String = "/proc/net/snmp") -> UDPSNMPCounters? {
        guard let lines = readTextLines(path) else { return nil }
        // Two "Udp:" lines: the field names, then the values.
        let udp = lines.filter { $0.hasPrefix("Udp:") }
        guard udp.count >= 2 else { return nil }
        let names = udp[0].split(whereSeparator: { $0 == " " || $0 == "\n" }).dropFirst()
        let values = udp[1].split(whereSeparator: { $0 == " " || $0 == "\n" }).dropFirst()
        var table: [Substring: Int] = [:]
        for (k, v) in zip(names, values) { table[k] = Int(v) }
        guard let i = table["InDatagrams"], let np = table["NoPorts"], let ie = table["InErrors"],
              let o = table["OutDatagrams"], let rb = table["RcvbufErrors"] else { return nil }
        return UDPSNMPCounters(inDatagrams: i, noPorts: np, inErrors: ie, outDatagrams: o, rcvbufErrors: rb)
    }
}
