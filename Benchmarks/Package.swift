// swift-tools-version:6.1
//
// Microbenchmarks for smp-networking, in their own package (as swift-nio
// does) so the main package and CI do not build the benchmark dependency.
//
//   cd Benchmarks && swift package benchmark                 # run
//   swift package benchmark thresholds check                 # CI-style gate on mallocCountTotal
//
import PackageDescription
import struct Foundation.URL

// A path dependency's identity is its folder's name, which is whatever the
// repository was cloned as: derive it instead of hard-coding it.
let mainPackage = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent.lowercased()

let package = Package(
    name: "smp-networking-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "PrimitivesBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SMPPrimitives", package: mainPackage),
                .product(name: "FastDemux", package: mainPackage),
                .product(name: "NetStack", package: mainPackage),
            ],
            path: "Benchmarks/PrimitivesBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
