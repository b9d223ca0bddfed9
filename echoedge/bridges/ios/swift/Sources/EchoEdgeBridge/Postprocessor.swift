// Model outputs -> what an app shows: mirror of Postprocessor.java and
// echoedge.data.preprocess.postprocess. EF band: 0 for EF < 40, 1 for 40 <= EF < 50, 2 for EF >= 50;
// normalised landmarks (x/W, y/H) scale back by the original frame's size.
import Foundation

public let efBandLabels = ["<40", "40-49", ">=50"]

public struct EchoResult {
    public let ef: Double, edv: Double, esv: Double
    public let band: Int
    public var bandLabel: String { efBandLabels[band] }
    /// [K][2] (x, y) pixels of the original frame.
    public let edLandmarksPx: [[Double]], esLandmarksPx: [[Double]]
}

public enum Postprocessor {
    public static func efBand(_ ef: Double) -> Int {
        return ef < 40.0 ? 0 : (ef < 50.0 ? 1 : 2)
    }

    /// (K*2) normalised (x/W, y/H) floats -> [K][2] pixel (x, y) of a frameWidth x frameHeight frame.
    public static func landmarksToPixels(_ lm: [Float], frameWidth: Int, frameHeight: Int) -> [[Double]] {
        precondition(lm.count % 2 == 0, "landmarks must hold (x, y) pairs")
        return (0..<(lm.count / 2)).map { k in
            [Double(lm[2 * k]) * Double(frameWidth), Double(lm[2 * k + 1]) * Double(frameHeight)]
        }
    }

    /// outputs = [ef[1], edv[1], esv[1], ed_landmarks[K*2], es_landmarks[K*2]] of one clip.
    public static func postprocess(_ outputs: [[Float]], frameWidth: Int, frameHeight: Int) throws -> EchoResult {
        if outputs.count != 5 {
            throw BridgeError("Echo-E3Net has 5 outputs (ef, edv, esv, ed_landmarks, es_landmarks), got \(outputs.count)")
        }
        let ef = Double(outputs[0][0])
        return EchoResult(ef: ef, edv: Double(outputs[1][0]), esv: Double(outputs[2][0]), band: efBand(ef),
                          edLandmarksPx: landmarksToPixels(outputs[3], frameWidth: frameWidth, frameHeight: frameHeight),
                          esLandmarksPx: landmarksToPixels(outputs[4], frameWidth: frameWidth, frameHeight: frameHeight))
    }
}
