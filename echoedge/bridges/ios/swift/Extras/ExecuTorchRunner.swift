// A .pte artefact folder on ExecuTorch's Swift API (ExecuTorch's Swift package, products
// "executorch" + "backend_xnnpack" + "kernels_optimized", branch swiftpm-<version>). Add this file
// to an app target that links ExecuTorch; it is kept out of the EchoEdgeBridge target so that the
// package builds and tests without fetching ExecuTorch. The API it uses is marked experimental by
// ExecuTorch; written against the 1.x docs and not compiled on the machine that made this bundle.
import EchoEdgeBridge
import ExecuTorch
import Foundation

public final class ExecuTorchRunner: ModelRunner {
    public let manifest: Manifest
    private let module: Module

    public init(folder: URL) throws {
        manifest = try Manifest.read(folder.appendingPathComponent("manifest.json"))
        if manifest.format != "executorch" {
            throw BridgeError("\(folder.path): artefact format is \(manifest.format), not executorch")
        }
        module = Module(filePath: folder.appendingPathComponent(manifest.modelFile).path)
        try module.load("forward")
    }

    public func run(_ clipNcthw: [Float]) throws -> [[Float]] {
        let info = manifest.input
        let x = try Preprocessor.toLayout(clipNcthw, spec: manifest.clipSpec, layout: info.layout)
        let outputs = try module.forward(Tensor<Float>(x, shape: info.shape))
        if outputs.count != manifest.outputs.count {
            throw BridgeError("program returned \(outputs.count) outputs, manifest lists \(manifest.outputs.count)")
        }
        return try outputs.map { value in
            guard let t: Tensor<Float> = value.tensor() else { throw BridgeError("output is not a float tensor") }
            return t.scalars()
        }
    }
}
