// The parts of an artefact's manifest.json an app needs: mirror of Manifest.java.
import Foundation

public struct BridgeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

func number(_ v: Any?, _ what: String) throws -> Double {
    guard let n = v as? NSNumber else { throw BridgeError("\(what): expected a number") }
    return n.doubleValue
}

/// nil for a missing key or JSON null, else the number.
func optionalNumber(_ v: Any?, _ what: String) throws -> Double? {
    if v == nil || v is NSNull { return nil }
    return try number(v, what)
}

func string(_ v: Any?, _ what: String) throws -> String {
    guard let s = v as? String else { throw BridgeError("\(what): expected a string") }
    return s
}

func object(_ v: Any?, _ what: String) throws -> [String: Any] {
    guard let o = v as? [String: Any] else { throw BridgeError("\(what): expected a JSON object") }
    return o
}

func array(_ v: Any?, _ what: String) throws -> [Any] {
    guard let a = v as? [Any] else { throw BridgeError("\(what): expected a JSON array") }
    return a
}

/// frames, period, height, width, channels, mean, std (0-255 grey scale).
public struct ClipSpec: Equatable {
    public let frames: Int, period: Int, height: Int, width: Int, channels: Int
    public let mean: Double, std: Double

    public init(frames: Int, period: Int, height: Int, width: Int, channels: Int, mean: Double, std: Double) throws {
        if frames < 1 || period < 1 || height < 1 || width < 1 { throw BridgeError("ClipSpec sizes must be >= 1") }
        if channels != 1 && channels != 3 { throw BridgeError("ClipSpec.channels must be 1 or 3") }
        if !(std > 0) { throw BridgeError("ClipSpec.std must be > 0") }
        self.frames = frames; self.period = period; self.height = height; self.width = width
        self.channels = channels; self.mean = mean; self.std = std
    }

    /// Source frames one clip covers, first to last inclusive.
    public var span: Int { (frames - 1) * period + 1 }

    /// Number of floats in one (1, C, T, H, W) input.
    public var inputSize: Int { channels * frames * height * width }

    public init(json d: [String: Any]) throws {
        try self.init(
            frames: Int(try number(d["frames"], "clip_spec.frames")),
            period: Int(try number(d["period"], "clip_spec.period")),
            height: Int(try number(d["height"], "clip_spec.height")),
            width: Int(try number(d["width"], "clip_spec.width")),
            channels: Int(try number(d["channels"], "clip_spec.channels")),
            mean: try number(d["mean"], "clip_spec.mean"),
            std: try number(d["std"], "clip_spec.std"))
    }
}

/// One input or output tensor; scale/zeroPoint only for quantized I/O (real = scale * (q - zp)).
public struct TensorInfo {
    public let name: String, dtype: String, layout: String
    public let shape: [Int]
    public let scale: Double?
    public let zeroPoint: Int?

    init(json d: [String: Any]) throws {
        name = try string(d["name"], "tensor.name")
        dtype = try string(d["dtype"], "tensor.dtype")
        layout = (d["layout"] as? String) ?? ""
        shape = try array(d["shape"], "tensor.shape").map { Int(try number($0, "tensor.shape")) }
        scale = try optionalNumber(d["scale"], "tensor.scale")
        zeroPoint = try optionalNumber(d["zero_point"], "tensor.zero_point").map { Int($0) }
    }

    public var quantized: Bool { scale != nil && zeroPoint != nil && (dtype == "int8" || dtype == "uint8") }

    public var elementCount: Int { shape.reduce(1, *) }
}

public struct Manifest {
    public let format: String, precision: String, runtime: String, modelFile: String, modelSha256: String
    public let clipSpec: ClipSpec
    public let inputs: [TensorInfo]
    public let outputs: [TensorInfo]

    public init(json d: [String: Any]) throws {
        format = try string(d["format"], "format")
        precision = try string(d["precision"], "precision")
        runtime = try string(d["runtime"], "runtime")
        modelFile = try string(d["model_file"], "model_file")
        modelSha256 = (d["model_sha256"] as? String) ?? ""
        clipSpec = try ClipSpec(json: try object(d["clip_spec"], "clip_spec"))
        inputs = try array(d["inputs"], "inputs").map { try TensorInfo(json: try object($0, "inputs[]")) }
        outputs = try array(d["outputs"], "outputs").map { try TensorInfo(json: try object($0, "outputs[]")) }
        if inputs.isEmpty || outputs.count != 5 {
            throw BridgeError("manifest: an Echo-E3Net artefact has 1 input and 5 outputs")
        }
    }

    public static func read(_ url: URL) throws -> Manifest {
        do {
            let data = try Data(contentsOf: url)
            return try Manifest(json: try object(try JSONSerialization.jsonObject(with: data), "manifest"))
        } catch let e as BridgeError {
            throw BridgeError("\(url.path): \(e.description)")
        }
    }

    public var input: TensorInfo { inputs[0] }
}
