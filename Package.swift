// swift-tools-version:6.1
//
// smp-networking: the kernel's SMP networking toolkit in user space.
//
// SMPPrimitives is the library product most users want: lock-free PCQs,
// RCU on liburcu, RCU hash tables, deferred workers and cross-core mailboxes.
// FastDemux builds the NetBSD fast protocol/port demultiplexer on top of it.
import PackageDescription

let package = Package(
    name: "smp-networking",
    products: [
        .library(name: "SMPPrimitives", targets: ["SMPPrimitives"]),
        .library(name: "FastDemux", targets: ["FastDemux"]),
        .executable(name: "fastdemux", targets: ["fastdemux"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        // liburcu, dynamically linked (see README "Licensing").
        .systemLibrary(
            name: "CURCU",
            pkgConfig: "liburcu-cds",
            providers: [.apt(["liburcu-dev"])]
        ),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        // CPU affinity and thread names (need _GNU_SOURCE).
        .target(name: "CSMPThreads"),
        .target(
            name: "SMPPrimitives",
            dependencies: ["CURCU", "CSMPThreads"]
        ),
        .target(
            name: "FastDemux",
            dependencies: ["SMPPrimitives", "CPcap"]
        ),
        // The BENCHMARKS.md workloads and their in-process baselines; a library
        // so that tests can run every workload at a small size.
        .target(
            name: "Workloads",
            dependencies: [
                "SMPPrimitives", "FastDemux", "CURCU",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "fastdemux",
            dependencies: [
                "FastDemux", "Workloads",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "SMPPrimitivesTests",
            dependencies: ["SMPPrimitives", "Workloads"]
        ),
        .testTarget(
            name: "FastDemuxTests",
            dependencies: ["FastDemux", "Workloads"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
