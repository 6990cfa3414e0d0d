import Testing
@testable import SMPPrimitives

/// What a trapped child process wrote to standard error.
private func stderrText(_ result: ExitTest.Result?) -> String {
    result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
}

/// RCU misuse traps, in every build (release included): each test runs the
/// misuse in a child process and expects it to die with the library's
/// "RCU misuse:" message, not by some other crash. (Exit-test bodies are
/// async: read locks are taken through withReadSection, whose body is
/// synchronous, or in a synchronous closure, as `noasync` requires.)
@Suite struct RCUMisuseTests {
    @Test func correctUseDoesNotTrap() async {
        // The control for the exit tests below: the same calls, well used.
        await #expect(processExitsWith: .success) {
            Memb.registerThread()
            Memb.withReadSection { Memb.withReadSection {} }
            Memb.synchronize()
            Memb.barrier()
            Memb.unregisterThread()
            QSBR.registerThread()
            QSBR.withReadSection { QSBR.withReadSection {} }
            QSBR.quiescentState()
            QSBR.synchronize()  // online, outside an explicit section
            QSBR.barrier()
            QSBR.threadOffline()
            QSBR.threadOnline()
            QSBR.unregisterThread()
            Bulletproof.withReadSection { Bulletproof.withReadSection {} }
            Bulletproof.synchronize()
            Bulletproof.barrier()
            rcuCheckMayBlock("a blocking call outside read sections")
            let parker = ThreadParker()
            parker.park()  // not armed: returns at once
            parker.prepareToPark()
            parker.park(timeout: .milliseconds(1))
        }
    }

    @Test func qsbrReadLockOnUnregisteredThreadTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.withReadSection {}
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR read section on a thread that is not registered"))
    }

    @Test func qsbrReadLockOnOfflineThreadTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.threadOffline()
            QSBR.withReadSection {}
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR read section on an offline thread"))
    }

    @Test func membReadLockOnUnregisteredThreadTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Memb.withReadSection {}
        }
        #expect(stderrText(r).contains("RCU misuse: Memb read section on a thread that is not registered"))
    }

    /// A grace period inside its own flavour's section would wait for
    /// itself (memb, bp) or silently end the section (QSBR goes offline).
    @Test func synchronizeInsideReadSectionTraps() async {
        var r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Memb.registerThread()
            Memb.withReadSection { Memb.synchronize() }
        }
        #expect(stderrText(r).contains("RCU misuse: Memb.synchronize() inside an RCU read section (memb) would block"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.withReadSection { QSBR.synchronize() }
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR.synchronize() inside an RCU read section (qsbr) would block"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Bulletproof.withReadSection { Bulletproof.synchronize() }
        }
        #expect(stderrText(r).contains("RCU misuse: Bulletproof.synchronize() inside an RCU read section (bp) would block"))
    }

    /// Waiting for one flavour's grace period (or barrier) inside another
    /// flavour's section holds up that flavour's grace periods for the
    /// whole wait: also a trap.
    @Test func gracePeriodWaitsInsideAnotherFlavoursSectionTrap() async {
        var r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Bulletproof.withReadSection { Memb.synchronize() }
        }
        #expect(stderrText(r).contains("RCU misuse: Memb.synchronize() inside an RCU read section (bp)"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Memb.registerThread()
            Memb.withReadSection { Bulletproof.barrier() }
        }
        #expect(stderrText(r).contains("RCU misuse: Bulletproof.barrier() inside an RCU read section (memb)"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.withReadSection { Bulletproof.withReadSection { QSBR.barrier() } }
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR.barrier() inside an RCU read section (qsbr, bp)"))
    }

    @Test func barrierInsideReadSectionTraps() async {
        var r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Memb.registerThread()
            Memb.withReadSection { Memb.barrier() }
        }
        #expect(stderrText(r).contains("RCU misuse: Memb.barrier() inside an RCU read section (memb)"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.withReadSection { QSBR.barrier() }
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR.barrier() inside an RCU read section (qsbr)"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Bulletproof.withReadSection { Bulletproof.barrier() }
        }
        #expect(stderrText(r).contains("RCU misuse: Bulletproof.barrier() inside an RCU read section (bp)"))
    }

    /// The check the library's blocking calls make (cross-core calls,
    /// full-ring waits, blocking receives), inside each flavour's section.
    @Test func checkMayBlockInsideReadSectionTraps() async {
        var r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.withReadSection { rcuCheckMayBlock("Test.blockingCall()") }
        }
        #expect(stderrText(r).contains("RCU misuse: Test.blockingCall() inside an RCU read section (qsbr) would block"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Memb.registerThread()
            Memb.withReadSection { rcuCheckMayBlock("Test.blockingCall()") }
        }
        #expect(stderrText(r).contains("RCU misuse: Test.blockingCall() inside an RCU read section (memb) would block"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Bulletproof.withReadSection { rcuCheckMayBlock("Test.blockingCall()") }
        }
        #expect(stderrText(r).contains("RCU misuse: Test.blockingCall() inside an RCU read section (bp) would block"))
    }

    /// park() inside a section traps before blocking. The parker is not
    /// armed, so without the check park() would return at once and the
    /// child would exit successfully (never hang).
    @Test func threadParkerParkInsideReadSectionTraps() async {
        var r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let parker = ThreadParker()
            Bulletproof.withReadSection { parker.park() }
        }
        #expect(stderrText(r).contains("RCU misuse: ThreadParker.park() inside an RCU read section (bp) would block"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let parker = ThreadParker()
            Memb.registerThread()
            Memb.withReadSection { parker.park(timeout: .milliseconds(1)) }
        }
        #expect(stderrText(r).contains("RCU misuse: ThreadParker.park(timeout:) inside an RCU read section (memb)"))
    }

    @Test func unbalancedUnlockTraps() async {
        var r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Memb.registerThread()
            let unlock = { Memb.readUnlock() }
            unlock()
        }
        #expect(stderrText(r).contains("RCU misuse: Memb.readUnlock() without a matching readLock()"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            let unbalanced = {
                QSBR.readLock()
                QSBR.readUnlock()
                QSBR.readUnlock()
            }
            unbalanced()
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR.readUnlock() without a matching readLock()"))
        r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let unlock = { Bulletproof.readUnlock() }
            unlock()
        }
        #expect(stderrText(r).contains("RCU misuse: Bulletproof.readUnlock() without a matching readLock()"))
    }

    @Test func quiescentStateInsideReadSectionTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.withReadSection { QSBR.quiescentState() }
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR.quiescentState() inside a read section"))
    }

    @Test func doubleRegistrationTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            QSBR.registerThread()
            QSBR.registerThread()
        }
        #expect(stderrText(r).contains("RCU misuse: QSBR.registerThread() on a thread already registered"))
    }
}
