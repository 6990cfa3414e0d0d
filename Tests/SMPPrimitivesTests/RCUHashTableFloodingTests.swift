import Testing
@testable import SMPPrimitives

/// The two multiplier constants of `rcuHashMix`'s first multiply, as an
/// attacker reading the source knows them. At seed 0 the multiply is
/// `(a ^ mixA) * (b ^ mixB)`: a key word equal to a constant zeroes a
/// factor, and every such key hashes alike. (If the constants change, the
/// seed-0 checks below fail loudly rather than the test proving nothing.)
let rcuMixConstantA: UInt64 = 0xa076_1d64_78bd_642f
let rcuMixConstantB: UInt64 = 0xe703_7ed1_a0b4_28db

/// How many keys a flood inserts: the table then has 65,536 buckets too
/// (it doubles whenever keys outnumber buckets), a load factor of 1.
let floodKeyCount = 65_536

/// The longest chain a keyed table may show after `floodKeyCount` keys.
/// For n keys thrown at random into m = n buckets, P(some bucket gets k or
/// more) <= m * C(n, k) / m^k <= m / k!: for k = 16 that is
/// 65,536 / 16! ~ 3e-9 per table, so a longer chain means the keys were
/// aimed, not unlucky. (The expected maximum is ~ ln n / ln ln n ~ 5;
/// runs show 7 to 9.)
let floodChainBound = 16

/// The prefix of a flood inserted into an unkeyed (seed 0) table: every key
/// goes on one chain, so each insert compares all earlier keys, O(n^2) in
/// total; 4,096 keys (8 M compares) keep a debug run fast.
let unkeyedFloodPrefix = 4_096

/// Chain and probe counts of a table that holds `keys`.
struct FloodMeasure: CustomStringConvertible {
    var chains: RCUHashTableChainStatistics
    /// How many times the table grew.
    var resizes: Int
    /// The most nodes a lookup of an inserted key visits.
    var maxHitProbes: Int
    /// The mean of that over all inserted keys.
    var meanHitProbes: Double

    init<K: RCUHashKey, F: RCUFlavor>(_ table: RCUHashTable<K, UInt, F>, _ keys: some Collection<K>) {
        chains = table.chainStatistics
        resizes = table.statistics.resizes
        var most = 0
        var total = 0
        for k in keys {
            let p = table.lookupProbes(k)
            most = max(most, p)
            total += p
        }
        maxHitProbes = most
        meanHitProbes = Double(total) / Double(keys.count)
    }

    var description: String {
        "\(chains.keys) keys, \(chains.bucketCount) buckets, \(chains.occupiedBuckets) occupied, "
            + "\(resizes) resizes, longest chain \(chains.longestChain), lookup probes max \(maxHitProbes) mean \(meanHitProbes)"
    }
}

/// Inserts a flood of keys chosen to collide under the unkeyed hash, first
/// into a seed-0 table (all on one chain: the attack works there) and then
/// into a normally constructed, randomly keyed table (chains stay short:
/// it does not). Returns both measures. `label` names the key set.
func runFlood<K: RCUHashKey>(_ keys: [K], label: String) -> (unkeyed: FloodMeasure, keyed: FloodMeasure)? {
    precondition(keys.count == floodKeyCount)
    // The keys are distinct and all have one seed-0 hash: one bucket in an
    // unkeyed table of any size, so growth cannot split them.
    #expect(Set(keys.map { $0.rcuHash(seed: 0) }).count == 1, "\(label): not a seed-0 collision set")

    return Memb.withRegisteredThread { () -> (unkeyed: FloodMeasure, keyed: FloodMeasure)? in
        let unkeyed = RCUHashTable<K, UInt, Memb>(initialBucketCount: 1024, seed: 0)
        let prefix = keys.prefix(unkeyedFloodPrefix)
        for (i, k) in prefix.enumerated() { #expect(unkeyed.insert(k, value: UInt(i))) }
        let u = FloodMeasure(unkeyed, prefix)
        // Growth follows the load (1024 -> 2048 -> 4096 buckets) but the
        // chain does not shrink: only the seed separates these keys.
        #expect(u.resizes == 2)
        #expect(u.chains.bucketCount == unkeyedFloodPrefix)
        #expect(u.chains.longestChain == unkeyedFloodPrefix && u.chains.occupiedBuckets == 1, "\(label) unkeyed: \(u)")
        // Some lookup walks the whole chain, and on average half of it:
        // O(n) per lookup.
        #expect(u.maxHitProbes == unkeyedFloodPrefix)
        #expect(u.meanHitProbes == Double(unkeyedFloodPrefix + 1) / 2)

        let keyed = RCUHashTable<K, UInt, Memb>(initialBucketCount: 1024)
        #expect(keyed.seed != 0)
        for (i, k) in keys.enumerated() {
            #expect(keyed.insert(k, value: UInt(i)))
            // Fail fast on a flood that works: a full O(n^2) run would take
            // minutes in a debug build.
            if i == unkeyedFloodPrefix, keyed.chainStatistics.longestChain > floodChainBound {
                Issue.record("\(label) keyed: the flood collides under a random seed (\(keyed.chainStatistics))")
                return nil
            }
        }
        let k = FloodMeasure(keyed, keys)
        Memb.withReadSection {
            #expect(keys.indices.allSatisfy { keyed.lookup(keys[$0]) == UInt($0) })
        }
        Memb.barrier()
        return (u, k)
    }
}

/// Checks a keyed table's flood measure: growth by load to one bucket per
/// key, short chains, cheap lookups.
func expectFloodResisted(_ m: FloodMeasure, label: String) {
    #expect(m.chains.keys == floodKeyCount)
    #expect(m.chains.bucketCount == floodKeyCount)
    #expect(m.resizes == 6)  // 1024 -> 65,536 buckets, by load alone
    #expect(m.chains.longestChain <= floodChainBound, "\(label) keyed: \(m)")
    // Random placement leaves ~1/e of the buckets empty at load 1.
    #expect(m.chains.occupiedBuckets >= floodKeyCount / 2, "\(label) keyed: \(m)")
    #expect(m.maxHitProbes <= m.chains.longestChain)
    // A hit's expected position is 1 + (n - 1) / 2m ~ 1.5.
    #expect(m.meanHitProbes < 2, "\(label) keyed: \(m)")
}

@Suite("RCUHashTable hash flooding")
struct RCUHashTableFloodingTests {
    /// 16-byte keys with the first word fixed so that, at seed 0, the first
    /// factor is zero: `(C_A, i)` for 65,536 values of `i`.
    @Test func keysWithZeroFirstFactorSpreadInAKeyedTable() throws {
        let keys = (0..<UInt64(floodKeyCount)).map { RCUTestKey16(a: rcuMixConstantA, b: $0 &* 0x9E37_79B9_7F4A_7C15) }
        let flood = runFlood(keys, label: "(C_A, i)")
        let r = try #require(flood)
        print("flood (C_A, i) unkeyed: \(r.unkeyed)\nflood (C_A, i) keyed: \(r.keyed)")
        expectFloodResisted(r.keyed, label: "(C_A, i)")
    }

    /// 16-byte keys with the second word fixed so that, at seed 0, the
    /// second factor is zero: `(i, C_B)`. Before the mix keyed its second
    /// factor, these collided under every seed (the product was zero
    /// whatever the seed): this test failed with one 65,536-key chain.
    @Test func keysWithZeroSecondFactorSpreadInAKeyedTable() throws {
        let keys = (0..<UInt64(floodKeyCount)).map { RCUTestKey16(a: $0, b: rcuMixConstantB) }
        let flood = runFlood(keys, label: "(i, C_B)")
        let r = try #require(flood)
        print("flood (i, C_B) unkeyed: \(r.unkeyed)\nflood (i, C_B) keyed: \(r.keyed)")
        expectFloodResisted(r.keyed, label: "(i, C_B)")
    }

    /// Each table draws its own seed from the system's random source: not
    /// zero, not a counter, different across many tables.
    @Test func everyTableDrawsAFreshRandomSeed() {
        let seeds = (0..<64).map { _ in RCUHashTable<UInt64, UInt, Memb>(initialBucketCount: 64).seed }
        #expect(Set(seeds).count == seeds.count)
        #expect(!seeds.contains(0))
        // A counter or a clock would leave most high bits equal between
        // consecutive tables; random seeds differ in ~32 bits.
        let meanFlips = zip(seeds, seeds.dropFirst()).map { ($0 ^ $1).nonzeroBitCount }.reduce(0, +) / (seeds.count - 1)
        #expect((20...44).contains(meanFlips))
    }
}
