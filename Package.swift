// swift-tools-version:6.1
//
// smp-networking: the BSD kernels' SMP networking toolkit in user space.
//
// Modules follow the data path, bottom to top:
//
//   SMPPrimitives  lock-free PCQs, RCU on liburcu, RCU hash tables, kernel
//                  continuations, cross-core mailboxes, per-core executors.
//                  Depends on liburcu and a small Linux shim only.
//   FastDemux      parsing, flow keys, PCB tables, sockets, the fast path,
//                  the packet pool, hand-off statistics. No packet I/O.
//   PacketIO       where packets come from: pcap (libpcap), pcapng, TUN.
//   NetStack       the endpoint stack: output path, UDP/ICMP endpoints,
//                  reassembly, the socket API. No packet I/O.
//   DemuxLab       internal: the stack organizations compared (MsgP,
//                  ConnP-T, ConnP-L, fast path), replay/live sessions,
//                  synthetic traffic.
//   Workloads      internal: the benchmark workloads and their baselines.
//   fastdemux      the command-line tool.
import PackageDescription

let package = Package(
    name: "smp-networking",
    products: [
        .library(name: "SMPPrimitives", targets: ["SMPPrimitives"]),
        .library(name: "FastDemux", targets: ["FastDemux"]),
        .library(name: "PacketIO", targets: ["PacketIO"]),
        .library(name: "NetStack", targets: ["NetStack"]),
        .executable(name: "fastdemux", targets: ["fastdemux"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // MARK: C shims (one per module that needs one)

        // liburcu, dynamically linked (see README "Licensing").
        .systemLibrary(
            name: "CURCU",
            pkgConfig: "liburcu-cds",
            providers: [.apt(["liburcu-dev"])]
        ),
        // Affinity, thread names, futex, membarrier, a C thread-local.
        .target(name: "CSMPLinux"),
        // liburing, dynamically linked: batched TUN writes (docs/TUN.md has
        // the measurement that chose it for writes and not for reads).
        .systemLibrary(
            name: "CURing",
            pkgConfig: "liburing",
            providers: [.apt(["liburing-dev"])]
        ),
        // TUN ioctls, epoll, sendmmsg/recvmmsg, setns, io_uring writes.
        .target(name: "CPacketIO", dependencies: ["CURing"]),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),

        // MARK: Libraries

        .target(
            name: "SMPPrimitives",
            dependencies: ["CURCU", "CSMPLinux"]
        ),
        .target(
            name: "FastDemux",
            dependencies: ["SMPPrimitives", "CURCU"]
        ),
        .target(
            name: "NetStack",
            dependencies: ["SMPPrimitives", "FastDemux", "PacketIO"]
        ),
        .target(
            name: "PacketIO",
            dependencies: ["SMPPrimitives", "FastDemux", "CPcap", "CPacketIO"]
        ),

        // MARK: Internal (package access; no products)

        .target(
            name: "DemuxLab",
            dependencies: ["SMPPrimitives", "FastDemux", "PacketIO", "CSMPLinux"]
        ),
        .target(
            name: "Workloads",
            dependencies: [
                "SMPPrimitives", "FastDemux", "DemuxLab", "CURCU", "CPacketIO", "PacketIO", "NetStack",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "fastdemux",
            dependencies: [
                "FastDemux", "PacketIO", "NetStack", "DemuxLab", "Workloads",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            exclude: ["Resources/README.md"],
            resources: [.embedInCode("Resources/loopback.pcap")]
        ),

        // MARK: Tests (one target per module)

        // Hand-built packets, files and network namespaces shared by the
        // tests above SMPPrimitives (package access; never a product).
        .target(
            name: "TestSupport",
            dependencies: ["SMPPrimitives", "FastDemux", "PacketIO", "CPacketIO"],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "SMPPrimitivesTests", dependencies: ["SMPPrimitives"]),
        .testTarget(name: "FastDemuxTests", dependencies: ["FastDemux", "SMPPrimitives", "TestSupport"]),
        .testTarget(name: "NetStackTests", dependencies: ["NetStack", "FastDemux", "PacketIO", "SMPPrimitives", "TestSupport"]),
        .testTarget(name: "PacketIOTests", dependencies: ["PacketIO", "FastDemux", "SMPPrimitives", "CPacketIO", "TestSupport"]),
        .testTarget(
            name: "DemuxLabTests",
            dependencies: ["DemuxLab", "PacketIO", "FastDemux", "SMPPrimitives", "TestSupport"]
        ),
        .testTarget(name: "WorkloadsTests", dependencies: ["Workloads", "SMPPrimitives", "TestSupport"]),
        // The command-line tool's options, help and JSON, without running it.
        .testTarget(name: "CLITests", dependencies: ["fastdemux", "Workloads", "DemuxLab", "FastDemux"]),
    ],
    swiftLanguageModes: [.v6]
)

// MARK: Fuzz targets (scripts/fuzz.sh; docs/Fuzzing.md)
//
// libFuzzer executables, declared only when SMP_FUZZ=1: they have no main
// of their own (libFuzzer's, linked by -sanitize=fuzzer, calls their
// LLVMFuzzerTestOneInput), so an ordinary `swift build` could not link
// them. They live in this package, not beside it like Benchmarks/, because
// their harnesses are TestSupport's package-access code, which the
// regression tests replay too.
if Context.environment["SMP_FUZZ"] == "1" {
    for (name, folder) in [("FuzzParser", "parser"), ("FuzzPcap", "pcap"), ("FuzzPcapng", "pcapng")] {
        package.targets.append(.executableTarget(
            name: name, dependencies: ["TestSupport", "SMPPrimitives", "FastDemux", "PacketIO"],
            path: "Fuzz/\(folder)"))
    }
}
