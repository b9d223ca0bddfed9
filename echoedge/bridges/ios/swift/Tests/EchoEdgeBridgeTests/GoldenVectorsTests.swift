// Checks the bundle's golden vectors on macOS / iOS: `swift test` in the package folder.
import XCTest
@testable import EchoEdgeBridge
#if canImport(CoreML)
import CoreML
#endif

final class GoldenVectorsTests: XCTestCase {
    private func golden() throws -> GoldenVectors {
        let url = try XCTUnwrap(Bundle.module.resourceURL?.appendingPathComponent("golden"), "golden/ is not a test resource")
        return try GoldenVectors(folder: url)
    }

    func testPreprocessingMatchesPython() throws {
        let r = try GoldenCheck.checkPreprocessing(try golden())
        print(r)
        XCTAssertTrue(r.passed, r.description)
    }

    func testPostprocessingMatchesPython() throws {
        let r = try GoldenCheck.checkPostprocessing(try golden())
        print(r)
        XCTAssertTrue(r.passed, r.description)
    }

    func testBundledManifestsShareTheGoldenClipSpec() throws {
        let g = try golden()
        for a in g.artefacts {
            let folder = try XCTUnwrap(BundledArtefacts.folder(a.name), "artefact \(a.name) is not bundled")
            let m = try Manifest.read(folder.appendingPathComponent("manifest.json"))
            XCTAssertEqual(m.clipSpec, g.spec, a.name)
        }
    }

    #if canImport(CoreML)
    func testCoreMLArtefactsMatchValidation() throws {
        let g = try golden()
        for a in g.artefacts where a.format == "coreml" {
            let folder = try XCTUnwrap(BundledArtefacts.folder(a.name))
            let runner = try CoreMLRunner(folder: folder, computeUnits: .cpuOnly)
            if a.status == "ok" {
                let r = try GoldenCheck.checkArtefact(g, name: a.name, runner: runner)
                print(r)
                XCTAssertTrue(r.passed, r.description)
            } else {
                // Built where Core ML could not run it: no expected outputs exist, so check that it
                // runs and gives finite, plausible values, and print them for the record.
                for c in g.clips {
                    let out = try runner.run(try g.replay(c).clip())
                    let res = try Postprocessor.postprocess(out, frameWidth: c.frameWidth, frameHeight: c.frameHeight)
                    print("\(a.name) on \(c.id): EF \(res.ef) (\(res.bandLabel)), EDV \(res.edv), ESV \(res.esv) [no golden outputs: \(a.status)]")
                    XCTAssertTrue(out.allSatisfy { row in row.allSatisfy { $0.isFinite } }, a.name)
                }
            }
        }
    }
    #endif
}
