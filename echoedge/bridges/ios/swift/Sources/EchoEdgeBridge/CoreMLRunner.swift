// A .mlpackage artefact folder on Core ML. The package is compiled on first use
// (MLModel.compileModel) because SwiftPM copies resources as they are. Inputs and outputs are
// matched to the manifest by name; Float16/Double outputs are widened/narrowed to Float.
#if canImport(CoreML)
import CoreML
import Foundation

public final class CoreMLRunner: ModelRunner {
    public let manifest: Manifest
    private let model: MLModel

    /// computeUnits .cpuOnly gives the closest numbers to the validation run; .all lets Core ML use
    /// the GPU / Neural Engine (half precision), which the golden tolerance for Core ML allows for.
    public init(folder: URL, computeUnits: MLComputeUnits = .all) throws {
        manifest = try Manifest.read(folder.appendingPathComponent("manifest.json"))
        if manifest.format != "coreml" {
            throw BridgeError("\(folder.path): artefact format is \(manifest.format), not coreml")
        }
        let package = folder.appendingPathComponent(manifest.modelFile)
        let compiled = try MLModel.compileModel(at: package)
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits
        model = try MLModel(contentsOf: compiled, configuration: config)
    }

    public func run(_ clipNcthw: [Float]) throws -> [[Float]] {
        let info = manifest.input
        let x = try Preprocessor.toLayout(clipNcthw, spec: manifest.clipSpec, layout: info.layout)
        if x.count != info.elementCount {
            throw BridgeError("clip has \(x.count) values, the model takes \(info.elementCount)")
        }
        let array = try MLMultiArray(shape: info.shape.map { NSNumber(value: $0) }, dataType: .float32)
        let ptr = array.dataPointer.bindMemory(to: Float.self, capacity: x.count)
        for k in 0..<x.count { ptr[k] = x[k] }
        let inputs = try MLDictionaryFeatureProvider(dictionary: [info.name: MLFeatureValue(multiArray: array)])
        let out = try model.prediction(from: inputs)
        return try manifest.outputs.map { spec in
            guard let a = out.featureValue(for: spec.name)?.multiArrayValue else {
                throw BridgeError("Core ML model has no output '\(spec.name)' (outputs: \(out.featureNames.sorted()))")
            }
            // NSNumber subscripting honours strides and any storage type; the outputs are small.
            return (0..<a.count).map { Float(truncating: a[$0]) }
        }
    }
}
#endif
