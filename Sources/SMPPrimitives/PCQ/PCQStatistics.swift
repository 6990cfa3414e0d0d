/// A snapshot of a ``PCQ``'s counters (see ``PCQ/statistics``).
///
/// The counters are kept without any read-modify-write on the fast paths,
/// so they are cheap enough to leave on in production:
/// - `puts` is the producers' ticket counter itself (every successful put
///   takes exactly one ticket);
/// - `gets` is the consumer's published position (a plain store by the one
///   consumer);
/// - `failedPuts` is the only counter with an atomic increment, and only on
///   the failure path;
/// - `highWater` is sampled where the information is free (see
///   ``PCQ/statistics`` for the exact guarantee).
///
/// The fields are read one by one without a common instant, so under
/// concurrent use they are individually accurate but need not be mutually
/// consistent (e.g. `puts - gets` may momentarily exceed the capacity).
public struct PCQStatistics: Sendable, Hashable, CustomStringConvertible {
    /// Successful puts (items accepted, including any whose producer is
    /// still writing them).
    public var puts: Int
    /// Puts that returned false because the queue was full.
    public var failedPuts: Int
    /// Items taken by the consumer (`get` and `drain`; a drain in progress
    /// is counted when it returns).
    public var gets: Int
    /// The largest queue depth observed (a lower bound on the true maximum;
    /// equal to the capacity once any put has failed).
    public var highWater: Int

    /// A snapshot with the given counts (all zero by default);
    /// ``PCQ/statistics`` is the usual source.
    public init(puts: Int = 0, failedPuts: Int = 0, gets: Int = 0, highWater: Int = 0) {
        self.puts = puts
        self.failedPuts = failedPuts
        self.gets = gets
        self.highWater = highWater
    }

    /// `puts=… failedPuts=… gets=… highWater=…`, for logs.
    public var description: String {
        "puts=\(puts) failedPuts=\(failedPuts) gets=\(gets) highWater=\(highWater)"
    }
}
