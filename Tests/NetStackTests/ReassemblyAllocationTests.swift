import Testing
import Glibc
import FastDemux
import NetStack

/// Steady-state allocations per fragment. Counted only when the test
/// binary runs with an LD_PRELOAD shim exporting `test_malloc_count()`
/// (this thread's malloc/calloc/realloc/posix_memalign/aligned_alloc
/// calls, a __thread counter in front of __libc_malloc etc.); without it
/// the loop runs uncounted. What is counted: copying a frame into a pool
/// buffer, parseNetwork, ReassemblyTable.insert (including the completion
/// copy and the datagram buffer), freeing the datagram and expire. The
/// test's own loop is outside the windows (in debug builds iterating an
/// array of arrays captured by a nested function allocates).
@Suite struct ReassemblyAllocationTests {
    typealias Counter = @convention(c) () -> UInt64

    static var counter: Counter? {
        // RTLD_DEFAULT is a null handle on glibc.
        guard let symbol = dlsym(nil, "test_malloc_count") else { return nil }
        return unsafeBitCast(symbol, to: Counter.self)
    }

    @Test func noAllocationPerFragmentInSteadyState() throws {
        let frames = Frag.split(Frag.udpDatagram(v6: false, payload: Frag.bytes(8192)), mtu: 1500)
            + Frag.split(Frag.udpDatagram(v6: true, payload: Frag.bytes(8192)), mtu: 1500)
        let h = Harness()
        let count = Self.counter ?? { 0 }
        var allocations: UInt64 = 0, fragments = 0
        func round() -> Int {
            var done = 0
            for f in frames {
                f.withUnsafeBytes { raw in
                    let x = count()
                    let p = h.pool.allocate(copying: raw)!
                    guard case .network(let info) = h.parser.parseNetwork(h.pool.bytes(p), linkType: .ethernet) else {
                        return
                    }
                    if case .complete(let d) = h.table.insert(p, info, now: h.t0) {
                        done += 1
                        h.datagrams.free(d.packet)
                    }
                    allocations += count() - x
                    fragments += 1
                }
            }
            let x = count()
            h.table.expire(now: h.t0)
            allocations += count() - x
            return done
        }
        for _ in 0..<10 { #expect(round() == 2) }  // warm up: the cache, the index
        allocations = 0
        fragments = 0
        var completed = 0
        for _ in 0..<1000 { completed += round() }
        #expect(completed == 2000 && fragments == 12_000)
        // ICMP input: an echo request and a port unreachable, decoded.
        let echo = ICMPInputTests.frame(v6: true, ICMPInputTests.icmp(v6: true, type: 128, code: 0, rest: [0, 1, 0, 1],
                                                                        body: Frag.bytes(56)))
        let unreachable = ICMPInputTests.frame(v6: false, ICMPInputTests.icmp(
            v6: false, type: 3, code: 3, rest: [0, 0, 0, 0], body: ICMPInputTests.quotedUDP(v6: false)))
        var icmpAllocations: UInt64 = 0, decoded = 0
        for frame in [echo, unreachable] {
            frame.withUnsafeBytes { raw in
                guard case .network(let n) = h.parser.parseNetwork(raw, linkType: .ethernet) else { return }
                let x = count()
                for _ in 0..<1000 { if case .message = ICMPInput.decode(raw, n) { decoded += 1 } }
                icmpAllocations += count() - x
            }
        }
        #expect(decoded == 2000)
        if Self.counter != nil {
            print("ICMP decode allocations: \(icmpAllocations) for \(decoded) messages")
            #expect(icmpAllocations == 0)
            print("reassembly allocations: \(allocations) for \(fragments) fragments, \(completed) datagrams")
            #expect(allocations == 0)
        }
    }
}
