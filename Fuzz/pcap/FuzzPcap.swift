// libFuzzer target `pcap` (scripts/fuzz.sh pcap SECONDS): a pcap capture in
// memory through PcapReader, every frame through the packet parser. The
// harness is `CaptureFuzzer` in TestSupport, which the regression test
// replays too.
import PacketIO
import TestSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPcap(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    CaptureFuzzer.run(UnsafeRawBufferPointer(start: data, count: size), format: .pcap)
    return 0
}
