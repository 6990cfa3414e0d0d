// rcu-lookup and rcu-churn (BENCHMARKS.md). Filled in with the RCU table.
let rcuWorkloads: [Workload] = []
