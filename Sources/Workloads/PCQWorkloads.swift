// pcq-1p1c and pcq-2p1c (BENCHMARKS.md). Filled in with the PCQ.
let pcqWorkloads: [Workload] = []
