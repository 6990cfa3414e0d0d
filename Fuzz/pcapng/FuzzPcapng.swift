// libFuzzer target `pcapng` (scripts/fuzz.sh pcapng SECONDS): a pcapng capture in
// memory through PcapReader, every frame through the packet parser. The
// harness is `CaptureFuzzer` in TestSupport, which the regression test
// replays too.
import PacketIO
import TestSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPcapng(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    CaptureFuzzer.run(UnsafeRawBufferPointer(start: data, count: size), format: .pcapng)
    return 0
}
