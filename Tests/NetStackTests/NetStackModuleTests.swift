import Testing
@testable import NetStack

/// The module links and re-exports FastDemux (its users need PacketPool).
@Suite struct NetStackModuleTests {
    @Test func reexportsFastDemux() {
        let pool = PacketPool(bufferCount: 4)
        #expect(pool.bufferCount == 4)
    }
}
