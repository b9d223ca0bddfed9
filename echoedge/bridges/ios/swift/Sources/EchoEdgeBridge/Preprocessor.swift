// Frame -> model input: a line-by-line mirror of Preprocessor.java and echoedge/data/preprocess.py.
//
// grey = (r + g + b + 1) / 3 on the first three channels (the rounded channel mean the model was
// trained on, whatever the channel order); resize = exact area average (OpenCV INTER_AREA when
// downscaling) in Double, columns then rows; normalise = (v - mean) / std rounded once to Float.
// Plain loops on purpose: vImage's scalers are not specified to the last bit, and the golden test
// holds this code to the Python reference within 1e-5.
import Foundation

public enum PixelFormat: String {
    case gray8, rgb888, bgr888, rgba8888, bgra8888

    public var bytesPerPixel: Int {
        switch self {
        case .gray8: return 1
        case .rgb888, .bgr888: return 3
        case .rgba8888, .bgra8888: return 4
        }
    }
}

public enum Preprocessor {
    /// uint8 pixels (row-major, interleaved) -> grey levels 0..255, one Int per pixel.
    public static func toGray(_ pixels: [UInt8], width: Int, height: Int, format: PixelFormat) throws -> [Int] {
        let n = width * height
        let bpp = format.bytesPerPixel
        if pixels.count < n * bpp {
            throw BridgeError("frame has \(pixels.count) bytes, \(format) \(width)x\(height) needs \(n * bpp)")
        }
        var g = [Int](repeating: 0, count: n)
        if bpp == 1 {
            for p in 0..<n { g[p] = Int(pixels[p]) }
            return g
        }
        for p in 0..<n {
            let o = p * bpp
            let s = Int(pixels[o]) + Int(pixels[o + 1]) + Int(pixels[o + 2])
            g[p] = (s + 1) / 3
        }
        return g
    }

    /// Exact area-average weights along one axis: output o covers [o*in/out, (o+1)*in/out).
    public static func areaWeights(_ nIn: Int, _ nOut: Int) -> (first: [Int], weights: [[Double]]) {
        precondition(nIn >= 1 && nOut >= 1, "cannot resize between sizes \(nIn) and \(nOut)")
        var first = [Int](repeating: 0, count: nOut)
        var w = [[Double]](repeating: [], count: nOut)
        for o in 0..<nOut {
            let lo = Double(o * nIn) / Double(nOut)
            let hi = Double((o + 1) * nIn) / Double(nOut)
            let f = Int(lo.rounded(.down))
            let last = min(Int(hi.rounded(.up)), nIn)
            first[o] = f
            var row = [Double](repeating: 0, count: last - f)
            for i in f..<last {
                row[i - f] = (min(hi, Double(i) + 1.0) - max(lo, Double(i))) / (hi - lo)
            }
            w[o] = row
        }
        return (first, w)
    }

    /// Grey (height x width, row-major) -> outH x outW grey levels in Double; same size is the identity.
    public static func areaResize(_ grey: [Int], width: Int, height: Int, outW: Int, outH: Int) -> [Double] {
        if width == outW && height == outH {
            return grey.map { Double($0) }
        }
        let wx = areaWeights(width, outW)
        let wy = areaWeights(height, outH)
        var cols = [Double](repeating: 0, count: height * outW)  // columns first
        for y in 0..<height {
            let row = y * width
            for ox in 0..<outW {
                var acc = 0.0
                let w = wx.weights[ox]
                let f = wx.first[ox]
                for k in 0..<w.count { acc += w[k] * Double(grey[row + f + k]) }
                cols[y * outW + ox] = acc
            }
        }
        var out = [Double](repeating: 0, count: outH * outW)  // then rows
        for oy in 0..<outH {
            let w = wy.weights[oy]
            let f = wy.first[oy]
            for ox in 0..<outW {
                var acc = 0.0
                for k in 0..<w.count { acc += w[k] * cols[(f + k) * outW + ox] }
                out[oy * outW + ox] = acc
            }
        }
        return out
    }

    /// T model-size grey frames -> (1, C, T, H, W) Float input, (v - mean) / std.
    public static func normalise(_ frames: [[Double]], spec: ClipSpec) -> [Float] {
        let plane = spec.height * spec.width
        let t = frames.count
        var out = [Float](repeating: 0, count: spec.channels * t * plane)
        for k in 0..<t {
            for p in 0..<plane {
                out[k * plane + p] = Float((frames[k][p] - spec.mean) / spec.std)
            }
        }
        for c in 1..<max(spec.channels, 1) {
            for j in 0..<(t * plane) { out[c * t * plane + j] = out[j] }
        }
        return out
    }

    /// Round to nearest, ties away from zero (TFLite's std::round), written as Java's signum * floor.
    public static func roundHalfAway(_ x: Double) -> Double {
        let sign: Double = x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0)
        return sign * (abs(x) + 0.5).rounded(.down)
    }

    /// Float input -> int8 (or uint8 bit patterns) for an int8-input file.
    public static func quantize(_ x: [Float], scale: Double, zeroPoint: Int, unsigned: Bool) -> [UInt8] {
        precondition(scale > 0, "quantization scale must be > 0")
        let lo = unsigned ? 0.0 : -128.0, hi = unsigned ? 255.0 : 127.0
        return x.map { (v: Float) -> UInt8 in
            let q = Int(max(lo, min(hi, roundHalfAway(Double(v) / scale) + Double(zeroPoint))))
            return UInt8(bitPattern: Int8(truncatingIfNeeded: q))
        }
    }

    /// Quantized output value -> Float: scale * (q - zp) in Double, rounded once to Float.
    public static func dequantize(_ q: Int, scale: Double, zeroPoint: Int) -> Float {
        return Float(scale * Double(q - zeroPoint))
    }

    /// NCTHW (what normalise returns) -> the layout the file wants: NCTHW or NTHWC.
    public static func toLayout(_ ncthw: [Float], spec: ClipSpec, layout: String) throws -> [Float] {
        if layout.isEmpty || layout == "NCTHW" { return ncthw }
        if layout != "NTHWC" { throw BridgeError("unsupported input layout \(layout)") }
        let c = spec.channels, t = spec.frames, plane = spec.height * spec.width
        var out = [Float](repeating: 0, count: ncthw.count)
        for ci in 0..<c {
            for ti in 0..<t {
                for p in 0..<plane { out[(ti * plane + p) * c + ci] = ncthw[(ci * t + ti) * plane + p] }
            }
        }
        return out
    }
}
