// libFuzzer target `parser` (scripts/fuzz.sh parser SECONDS): one frame
// through the packet parser and a demultiplexer with sockets. The harness
// is `ParserFuzzer` in TestSupport, which the regression test replays too.
import SMPPrimitives
import TestSupport

// libFuzzer calls the entry point from one thread only (the main thread;
// -jobs/-workers fork processes), so a plain global is enough.
nonisolated(unsafe) private var harness: ParserFuzzer?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzParser(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if harness == nil {
        Memb.registerThread()   // for the process's lifetime: every run is a read section
        harness = ParserFuzzer()
    }
    harness!.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
