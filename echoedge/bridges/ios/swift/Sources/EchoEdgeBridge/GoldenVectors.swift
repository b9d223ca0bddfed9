// The bundle's golden/ folder: index.json plus raw little-endian files (uint8 frames, float32
// tensors). Mirror of GoldenVectors.java; written by echoedge.bridges.golden.
import Foundation

public final class GoldenVectors {
    public struct Clip {
        public let id: String, description: String, framesFile: String, inputFile: String
        public let pixelFormat: PixelFormat
        public let frameCount: Int, frameWidth: Int, frameHeight: Int
        public let timestampsUs: [Int64]
        public let modelFps: Double  // 0 = frame mode
        public let selectedFrames: [Int]

        init(json d: [String: Any]) throws {
            id = try string(d["id"], "clip.id")
            description = (d["description"] as? String) ?? ""
            framesFile = try string(d["frames_file"], "clip.frames_file")
            inputFile = try string(d["input_file"], "clip.input_file")
            guard let pf = PixelFormat(rawValue: try string(d["pixel_format"], "clip.pixel_format")) else {
                throw BridgeError("clip.pixel_format: unknown")
            }
            pixelFormat = pf
            frameCount = Int(try number(d["frame_count"], "clip.frame_count"))
            frameWidth = Int(try number(d["frame_width"], "clip.frame_width"))
            frameHeight = Int(try number(d["frame_height"], "clip.frame_height"))
            timestampsUs = try array(d["timestamps_us"], "clip.timestamps_us").map { Int64(try number($0, "timestamp")) }
            modelFps = try optionalNumber(d["model_fps"], "clip.model_fps") ?? 0.0
            selectedFrames = try array(d["selected_frames"], "clip.selected_frames").map { Int(try number($0, "selected")) }
        }

        public var frameBytes: Int { frameWidth * frameHeight * pixelFormat.bytesPerPixel }
    }

    public struct Expected {
        public let clip: String, outputsFile: String
        public let quantizedInputFile: String?
        public let outputSizes: [Int]
        public let ef: Double, edv: Double, esv: Double
        public let band: Int
        public let edLandmarksPx: [[Double]], esLandmarksPx: [[Double]]

        init(json d: [String: Any]) throws {
            clip = try string(d["clip"], "expected.clip")
            outputsFile = try string(d["outputs_file"], "expected.outputs_file")
            quantizedInputFile = d["quantized_input_file"] as? String
            outputSizes = try array(d["output_sizes"], "expected.output_sizes").map { Int(try number($0, "size")) }
            let r = try object(d["result"], "expected.result")
            ef = try number(r["ef"], "result.ef")
            edv = try number(r["edv"], "result.edv")
            esv = try number(r["esv"], "result.esv")
            band = Int(try number(r["band"], "result.band"))
            func points(_ v: Any?) throws -> [[Double]] {
                try array(v, "landmarks").map { p in try array(p, "point").map { try number($0, "coordinate") } }
            }
            edLandmarksPx = try points(r["ed_landmarks_px"])
            esLandmarksPx = try points(r["es_landmarks_px"])
        }
    }

    public struct Artefact {
        public let name: String, format: String, precision: String, modelFile: String, status: String
        public let runtimeUsed: String
        public let rtol: Double, atol: Double
        public let expected: [Expected]

        init(json d: [String: Any]) throws {
            name = try string(d["name"], "artefact.name")
            format = try string(d["format"], "artefact.format")
            precision = try string(d["precision"], "artefact.precision")
            modelFile = try string(d["model_file"], "artefact.model_file")
            status = try string(d["status"], "artefact.status")
            runtimeUsed = (d["runtime_used"] as? String) ?? ""
            let tol = try object(d["tolerance"], "artefact.tolerance")
            rtol = try number(tol["rtol"], "tolerance.rtol")
            atol = try number(tol["atol"], "tolerance.atol")
            expected = try array(d["expected"], "artefact.expected").map { try Expected(json: try object($0, "expected[]")) }
        }
    }

    public let folder: URL
    public let spec: ClipSpec
    public let clips: [Clip]
    public let artefacts: [Artefact]

    public init(folder: URL) throws {
        self.folder = folder
        let d = try object(try JSONSerialization.jsonObject(with: try Data(contentsOf: folder.appendingPathComponent("index.json"))), "index.json")
        if (d["format"] as? String) != "echo-edge-golden" { throw BridgeError("index.json: not an echo-edge golden-vector index") }
        spec = try ClipSpec(json: try object(d["clip_spec"], "clip_spec"))
        clips = try array(d["clips"], "clips").map { try Clip(json: try object($0, "clips[]")) }
        artefacts = try array(d["artefacts"], "artefacts").map { try Artefact(json: try object($0, "artefacts[]")) }
    }

    public func readAll(_ name: String) throws -> Data {
        return try Data(contentsOf: folder.appendingPathComponent(name))
    }

    public func readFloats(_ name: String) throws -> [Float] {
        let data = try readAll(name)
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    /// Frame k of a clip's raw frames (uint8, interleaved as its pixel format says).
    public func frames(_ c: Clip) throws -> [[UInt8]] {
        let all = [UInt8](try readAll(c.framesFile))
        let n = c.frameBytes
        if all.count != n * c.frameCount { throw BridgeError("\(c.framesFile): expected \(n * c.frameCount) bytes, got \(all.count)") }
        return (0..<c.frameCount).map { Array(all[($0 * n)..<(($0 + 1) * n)]) }
    }

    /// The five expected outputs of one clip, split by output_sizes.
    public func outputs(_ e: Expected) throws -> [[Float]] {
        let all = try readFloats(e.outputsFile)
        var out: [[Float]] = []
        var o = 0
        for s in e.outputSizes {
            out.append(Array(all[o..<(o + s)]))
            o += s
        }
        if o != all.count { throw BridgeError("\(e.outputsFile): size does not match output_sizes") }
        return out
    }

    public func clip(_ id: String) throws -> Clip {
        guard let c = clips.first(where: { $0.id == id }) else { throw BridgeError("no golden clip \(id)") }
        return c
    }

    public func artefact(_ name: String) throws -> Artefact {
        guard let a = artefacts.first(where: { $0.name == name }) else { throw BridgeError("no golden vectors for artefact \(name)") }
        return a
    }

    /// Feed a clip's raw frames through a fresh ClipBuffer, as an app would.
    public func replay(_ c: Clip) throws -> ClipBuffer {
        let buf = ClipBuffer(spec: spec, modelFps: c.modelFps)
        let f = try frames(c)
        for k in 0..<f.count {
            try buf.add(f[k], width: c.frameWidth, height: c.frameHeight, format: c.pixelFormat, timestampUs: c.timestampsUs[k])
        }
        return buf
    }
}
