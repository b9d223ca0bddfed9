// One artefact in its runtime: takes the NCTHW clip ClipBuffer.clip() returns and gives the five
// outputs [ef[1], edv[1], esv[1], ed_landmarks[K*2], es_landmarks[K*2]] as Floats. Mirror of
// ModelRunner.java. Adapters: CoreMLRunner (here), ExecuTorchRunner (Extras/, needs ExecuTorch).
import Foundation

public protocol ModelRunner {
    var manifest: Manifest { get }
    func run(_ clipNcthw: [Float]) throws -> [[Float]]
}

/// The artefact folders bundled as this package's resources (Resources/artefacts/<name>).
public enum BundledArtefacts {
    public static func folder(_ name: String) -> URL? {
        let url = Bundle.module.resourceURL?.appendingPathComponent("artefacts").appendingPathComponent(name)
        guard let u = url, FileManager.default.fileExists(atPath: u.path) else { return nil }
        return u
    }
}
