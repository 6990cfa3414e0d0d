// The rcu workloads' fixed inputs: the keys (IPv4 5-tuples) and the
// pre-generated lookup sequences, the same for every implementation.
import DemuxLab
import SMPPrimitives

/// An IPv4 5-tuple, local to the benchmark (FastDemux has its own flow key).
/// Addresses and ports in network byte order, as on the wire.
struct BenchFlowKey: RCUHashKey, Hashable {
    var srcAddr: UInt32
    var dstAddr: UInt32
    var srcPort: UInt16
    var dstPort: UInt16
    var proto: UInt8

    /// The two words the key is hashed and compared as.
    @inline(__always) var words: (UInt64, UInt64) {
        (UInt64(srcAddr) << 32 | UInt64(dstAddr),
         UInt64(srcPort) << 24 | UInt64(dstPort) << 8 | UInt64(proto))
    }

    @inline(__always) func rcuHash(seed: UInt64) -> UInt64 {
        let w = words
        return rcuHashMix(w.0, w.1, seed: seed)
    }

    @inline(__always) static func == (a: BenchFlowKey, b: BenchFlowKey) -> Bool {
        let x = a.words, y = b.words
        return (x.0 ^ y.0) | (x.1 ^ y.1) == 0
    }

    func hash(into h: inout Hasher) {
        let w = words
        h.combine(w.0)
        h.combine(w.1)
    }
}


/// Read-only benchmark inputs in manually allocated memory, so that the hot
/// loops index without bounds checks or ARC.
struct RCUBenchInputs: @unchecked Sendable {
    // @unchecked Sendable: written once before the threads start, read-only
    // while they run, freed by `free()` after they are joined.
    let keys: UnsafeMutableBufferPointer<BenchFlowKey>
    let sequences: [UnsafeMutableBufferPointer<UInt32>]

    /// `keyCount` distinct keys from a fixed seed (the first 65,536 the
    /// same for every count); `sequenceCount` index sequences of `n`
    /// indices below `indexLimit`.
    init(n: Int, sequenceCount: Int, indexLimit: Int, keyCount: Int = rcuBenchKeyCount) {
        keys = .allocate(capacity: keyCount)
        var rng = Xoshiro256StarStar(seed: 0x5eed_0001)
        var seen = Set<BenchFlowKey>(minimumCapacity: keyCount)
        var i = 0
        while i < keyCount {
            let x = rng.next(), y = rng.next()
            let k = BenchFlowKey(
                srcAddr: UInt32(truncatingIfNeeded: x >> 32),
                dstAddr: (0x0a00_0000 | UInt32(truncatingIfNeeded: y & 0xff_ffff)).bigEndian,  // 10.x.y.z
                srcPort: UInt16(truncatingIfNeeded: y >> 24),
                dstPort: UInt16(truncatingIfNeeded: y >> 40),
                proto: x & 1 == 1 ? 6 : 17)
            if seen.insert(k).inserted {
                keys[i] = k
                i += 1
            }
        }
        var seqs: [UnsafeMutableBufferPointer<UInt32>] = []
        for s in 0..<sequenceCount {
            let seq = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: n)
            var r = Xoshiro256StarStar(seed: 0x5eed_0100 &+ UInt64(s))
            for j in 0..<n { seq[j] = r.below(UInt32(indexLimit)) }
            seqs.append(seq)
        }
        sequences = seqs
    }

    func free() {
        keys.deallocate()
        for s in sequences { s.deallocate() }
    }
}

/// The value every table stores for key index `i`: identifies the key.
@inline(__always) func rcuBenchValue(_ i: Int) -> UInt { UInt(i) &+ 1 }
