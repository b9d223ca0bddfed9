// Proves on a device that the app computes what validation computed: mirror of GoldenCheck.java.
import Foundation

public enum GoldenCheck {
    public static let inputTolerance = 1e-5

    public struct Report: CustomStringConvertible {
        public var lines: [String] = []
        public var failures: [String] = []
        public var passed: Bool { failures.isEmpty }
        mutating func ok(_ s: String) { lines.append("ok   " + s) }
        mutating func fail(_ s: String) { lines.append("FAIL " + s); failures.append(s) }
        public var description: String { lines.joined(separator: "\n") }
    }

    public static func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Double {
        if a.count != b.count { return .infinity }
        var m = 0.0
        for k in 0..<a.count { m = max(m, abs(Double(a[k]) - Double(b[k]))) }
        return m
    }

    public static func checkPreprocessing(_ g: GoldenVectors) throws -> Report {
        var r = Report()
        for c in g.clips {
            let buf = try g.replay(c)
            if !buf.ready {
                r.fail("\(c.id): clip not ready after \(c.frameCount) frames")
                continue
            }
            let sel = try buf.selected()
            if sel != c.selectedFrames { r.fail("\(c.id): selected frames \(sel) != \(c.selectedFrames)") }
            let d = maxAbsDiff(try buf.clip(), try g.readFloats(c.inputFile))
            let msg = "\(c.id): preprocessed tensor max |diff| \(d) (limit \(inputTolerance))"
            if d <= inputTolerance { r.ok(msg) } else { r.fail(msg) }
        }
        return r
    }

    public static func checkArtefact(_ g: GoldenVectors, name: String, runner: ModelRunner) throws -> Report {
        var r = Report()
        let a = try g.artefact(name)
        if a.status != "ok" || a.expected.isEmpty {
            r.fail("\(a.name): no expected outputs in this bundle (status \(a.status))")
            return r
        }
        for e in a.expected {
            let c = try g.clip(e.clip)
            let got = try runner.run(try g.replay(c).clip())
            let want = try g.outputs(e)
            var worst = 0.0
            var ok = got.count == want.count
            if ok {
                for k in 0..<want.count {
                    if got[k].count != want[k].count { ok = false; break }
                    for j in 0..<want[k].count {
                        let diff = abs(Double(got[k][j]) - Double(want[k][j]))
                        worst = max(worst, diff)
                        if diff > a.atol + a.rtol * abs(Double(want[k][j])) { ok = false }
                    }
                }
            }
            var res: EchoResult? = nil
            if ok { res = try Postprocessor.postprocess(got, frameWidth: c.frameWidth, frameHeight: c.frameHeight) }
            var msg = "\(a.name) on \(c.id): max |diff| \(worst) (rtol \(a.rtol), atol \(a.atol))"
            if let res = res { msg += "; EF \(res.ef) (expected \(e.ef))" }
            if !ok { r.fail(msg) }
            else if res!.band != e.band { r.fail(msg + "; EF band \(res!.bandLabel) != expected \(efBandLabels[e.band])") }
            else { r.ok(msg) }
        }
        return r
    }

    /// Swift's post-processing of the stored expected outputs against the stored Python result.
    /// Exact in IEEE arithmetic; compared to 1e-12 relative only to allow for a JSON reader that
    /// does not round the last decimal digit correctly.
    public static func checkPostprocessing(_ g: GoldenVectors) throws -> Report {
        var r = Report()
        func same(_ a: Double, _ b: Double) -> Bool { a == b || abs(a - b) <= 1e-12 * max(abs(a), abs(b)) }
        func samePoints(_ a: [[Double]], _ b: [[Double]]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { p in same(p.0[0], p.1[0]) && same(p.0[1], p.1[1]) }
        }
        for a in g.artefacts {
            for e in a.expected {
                let c = try g.clip(e.clip)
                let res = try Postprocessor.postprocess(try g.outputs(e), frameWidth: c.frameWidth, frameHeight: c.frameHeight)
                let ok = same(res.ef, e.ef) && same(res.edv, e.edv) && same(res.esv, e.esv) && res.band == e.band
                    && samePoints(res.edLandmarksPx, e.edLandmarksPx) && samePoints(res.esLandmarksPx, e.esLandmarksPx)
                let msg = "\(a.name) on \(c.id): post-processing \(ok ? "equals" : "differs from") Python's (EF \(res.ef), \(res.bandLabel))"
                if ok { r.ok(msg) } else { r.fail(msg) }
            }
        }
        return r
    }
}
