// Frames in as they arrive, one model clip out: mirror of ClipBuffer.java and
// echoedge.data.preprocess.ClipBuffer.
//
// Frame mode (modelFps <= 0): every arriving frame is a source frame, as in training; the clip is
// the last span = (T - 1) * period + 1 frames, every period-th. Time mode (modelFps > 0): the clip
// samples t_k = t_newest - offsetUs(T - 1 - k) and takes the buffered frame nearest to each (ties:
// the earlier). Frames are greyed and resized on arrival. Not thread-safe: feed it from one queue.
import Foundation

public final class ClipBuffer {
    private struct Frame {
        let timestampUs: Int64
        let index: Int
        let grey: [Double]
    }

    public let spec: ClipSpec
    public let modelFps: Double
    private var frames: [Frame] = []
    private var count = 0
    public private(set) var frameWidth = 0
    public private(set) var frameHeight = 0

    public init(spec: ClipSpec, modelFps: Double = 0.0) {
        self.spec = spec
        self.modelFps = modelFps
    }

    public var timeMode: Bool { modelFps > 0 }

    /// floor(x + 0.5) of steps * period * 1e6 / modelFps, in microseconds.
    public func offsetUs(_ steps: Int) -> Int64 {
        return Int64((Double(steps) * Double(spec.period) * 1_000_000.0 / modelFps + 0.5).rounded(.down))
    }

    public func add(_ pixels: [UInt8], width: Int, height: Int, format: PixelFormat, timestampUs: Int64) throws {
        try addGray(try Preprocessor.toGray(pixels, width: width, height: height, format: format),
                    width: width, height: height, timestampUs: timestampUs)
    }

    public func addGray(_ grey: [Int], width: Int, height: Int, timestampUs: Int64) throws {
        if timeMode, let last = frames.last, timestampUs <= last.timestampUs {
            throw BridgeError("frame timestamps must increase: \(timestampUs) us after \(last.timestampUs) us")
        }
        frameWidth = width
        frameHeight = height
        let ts = timeMode ? timestampUs : Int64(count)
        frames.append(Frame(timestampUs: ts, index: count,
                            grey: Preprocessor.areaResize(grey, width: width, height: height, outW: spec.width, outH: spec.height)))
        count += 1
        evict()
    }

    private func evict() {
        if !timeMode {
            while frames.count > spec.span { frames.removeFirst() }
            return
        }
        // The oldest frame can never be nearest to the earliest target once the next one is at or before it.
        let t0 = frames[frames.count - 1].timestampUs - offsetUs(spec.frames - 1)
        while frames.count >= 2 && frames[1].timestampUs <= t0 { frames.removeFirst() }
    }

    public var ready: Bool {
        if frames.isEmpty { return false }
        if !timeMode { return frames.count >= spec.span }
        let t0 = frames[frames.count - 1].timestampUs - offsetUs(spec.frames - 1)
        return frames[0].timestampUs <= t0
    }

    /// Arrival indices (0-based) of the frames the clip is made of, oldest first.
    public func selected() throws -> [Int] {
        return try selectPositions().map { frames[$0].index }
    }

    private func selectPositions() throws -> [Int] {
        if !ready { throw BridgeError("clip not ready: \(frames.count) frames buffered") }
        var pos = [Int](repeating: 0, count: spec.frames)
        if !timeMode {
            for k in 0..<spec.frames { pos[k] = k * spec.period }
            return pos
        }
        let newest = frames[frames.count - 1].timestampUs
        var j = 0
        for k in 0..<spec.frames {
            let target = newest - offsetUs(spec.frames - 1 - k)
            // Targets increase, so the nearest frame's position never moves back.
            while j + 1 < frames.count
                && abs(frames[j + 1].timestampUs - target) < abs(frames[j].timestampUs - target) {
                j += 1
            }
            pos[k] = j
        }
        return pos
    }

    /// The model input (1, C, T, H, W) Float, NCTHW, for the newest complete clip.
    public func clip() throws -> [Float] {
        let pos = try selectPositions()
        return Preprocessor.normalise(pos.map { frames[$0].grey }, spec: spec)
    }

    public func clear() {
        frames.removeAll()
        count = 0
    }
}
