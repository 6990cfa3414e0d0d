// rcu-lookup and rcu-churn (specified in docs/BenchmarkWorkloads.md).
//
// Implementations, ours first:
// - rcu_hash:         RCUHashTable<BenchFlowKey, UInt, QSBR>, one bucket per key;
//                     readers report a quiescent state every 1024 lookups.
// - rcu_bucket:       RCUBucketTable<BenchFlowKey, UInt, QSBR>: fixed capacity,
//                     8-entry buckets with 16-bit signatures, two choices,
//                     key slots from a free list, one grace period per 1024
//                     removes (RCUBucketBench.swift).
// - urcu_lfht:        liburcu's cds_lfht with the QSBR flavour, one bucket
//                     per key, no auto-resize; call_rcu reclamation.
// - mutex_dictionary: Synchronization.Mutex around a Swift Dictionary.
//
// All four hash with the same keyed mix (rcuHashMix) so hashing costs the
// same; the writer's call_rcu worker is pinned to CPU 1 (the writer's CPU)
// for both RCU tables, as the C peer harness does.
//
// The lookup loop is generic over an adapter protocol (RCUBenchTable.swift)
// and specialized, so the hot loop calls the table directly
// (RCUHashTable.lookup is @inlinable). Files: this one (the workloads and
// their sizes), RCUBenchInputs.swift (keys and lookup sequences),
// RCUBenchTable.swift (the adapter), RCUHashBench.swift and RCUBucketBench.swift
// (the project's tables), LFHTBench.swift and MutexDictionaryBench.swift (the baselines),
// RCURunners.swift (the reader and writer loops and the checks).

let rcuWorkloads: [Workload] = [
    Workload(
        name: "rcu-lookup",
        summary: "65,536 IPv4 5-tuple keys (--keys); 2 readers (CPU 0, 1) x N lookups (default 10,000,000) of present keys",
        impls: rcuImpls(.lookup)),
    Workload(
        name: "rcu-churn",
        summary: "reader (CPU 0) looks up 1,024 stable keys N times while a writer (CPU 1) removes/re-inserts the others",
        impls: rcuImpls(.churn)),
]

/// The two RCU workloads.
enum RCUWorkloadKind: Sendable {
    case lookup, churn
}

private func rcuImpls(_ kind: RCUWorkloadKind) -> [(name: String, run: Workload.Run)] {
    [rcuImpl(RCUHashBench.self, kind), rcuImpl(RCUBucketBench.self, kind), rcuImpl(LFHTBench.self, kind), rcuImpl(MutexDictionaryBench.self, kind)]
}

/// One implementation's entry: the runner specialized for table `T`.
private func rcuImpl<T: RCUBenchTable>(_: T.Type, _ kind: RCUWorkloadKind) -> (name: String, run: Workload.Run) {
    switch kind {
    case .lookup: return (T.implName, { runRCULookup(T.self, $0) })
    case .churn: return (T.implName, { runRCUChurn(T.self, $0) })
    }
}

/// The defined key count; `--keys` (``WorkloadOptions/size``) changes it.
let rcuBenchKeyCount = 65_536
/// Keys of a run: `--keys`, or the defined 65,536.
func rcuKeyCount(_ options: WorkloadOptions) -> Int { options.size ?? rcuBenchKeyCount }
let rcuBenchStableKeys = 1_024
let rcuBenchDefaultLookups = 10_000_000
/// Quiescent state (QSBR) / batch boundary every this many lookups.
let rcuBenchBatch = 1_024
