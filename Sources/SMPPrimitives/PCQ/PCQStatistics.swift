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

/// The atomic read-modify-writes of one producer's puts, counted by
/// ``PCQ/put(_:counting:)`` at the instruction that issues each one (not
/// derived from a documented cost per put).
///
/// A plain value owned by one producer thread (no atomics): merge the
/// copies of several producers after they stopped. Summed over every
/// producer of a queue, `puts` equals the queue's ``PCQStatistics/puts``
/// and `failedPuts` its ``PCQStatistics/failedPuts`` (for puts made with
/// this method only).
public struct PCQPutCounts: Sendable, Hashable {
    /// Ticket CASes that succeeded: one per item accepted.
    public var puts = 0
    /// Puts that returned false (each is one fetch-add on the queue's
    /// failed-put counter).
    public var failedPuts = 0
    /// Ticket CASes that failed because another producer took the ticket
    /// first; each is followed by another attempt.
    public var casRetries = 0
    /// CASes on the producers' high-water mark, issued on the slow path
    /// (the queue looked full from the cached consumer position).
    public var highWaterCASes = 0

    /// Nothing counted.
    public init() {}

    /// Every atomic RMW the puts issued.
    public var atomicRMWs: Int { puts &+ failedPuts &+ casRetries &+ highWaterCASes }

    /// Adds another producer's counts.
    public mutating func merge(_ o: PCQPutCounts) {
        puts &+= o.puts
        failedPuts &+= o.failedPuts
        casRetries &+= o.casRetries
        highWaterCASes &+= o.highWaterCASes
    }
}
