// swift-tools-version:5.9
// echo-edge iOS bridge: Echo-E3Net EF model(s), the clip buffer and post-processing, a Core ML
// wrapper, and golden vectors. `swift test` (macOS, Xcode 15+) checks the golden vectors.
import PackageDescription

let package = Package(
    name: "EchoEdgeBridge",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "EchoEdgeBridge", targets: ["EchoEdgeBridge"]),
    ],
    targets: [
        .target(
            name: "EchoEdgeBridge",
            resources: [.copy("Resources/artefacts")]
        ),
        .testTarget(
            name: "EchoEdgeBridgeTests",
            dependencies: ["EchoEdgeBridge"],
            resources: [.copy("Resources/golden")]
        ),
    ]
)
