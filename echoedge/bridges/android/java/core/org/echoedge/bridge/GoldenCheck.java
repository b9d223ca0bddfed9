package org.echoedge.bridge;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Proves on a device (or on the JVM) that the app computes what validation computed.
 *
 * <p>checkPreprocessing: the golden raw frames through ClipBuffer equal the Python tensor within
 * 1e-5 and pick the same frames. checkArtefact: the runtime's outputs on the Java-preprocessed
 * clip equal the validation runner's within the artefact's tolerance (|got - want| &lt;= atol +
 * rtol * |want|, element-wise) and land in the same EF band. main() is the JVM entry the Python
 * tests call: GOLDEN_DIR [OUT_DIR], writing Java's tensors and post-processing there.
 */
public final class GoldenCheck {
    private GoldenCheck() {}

    public static final double INPUT_TOLERANCE = 1e-5;

    public static final class Report {
        public final List<String> lines = new ArrayList<>();
        public final List<String> failures = new ArrayList<>();

        public boolean passed() {
            return failures.isEmpty();
        }

        void ok(String s) {
            lines.add("ok   " + s);
        }

        void fail(String s) {
            lines.add("FAIL " + s);
            failures.add(s);
        }

        @Override
        public String toString() {
            return String.join("\n", lines);
        }
    }

    public static boolean close(double got, double want, double rtol, double atol) {
        return Math.abs(got - want) <= atol + rtol * Math.abs(want);
    }

    public static double maxAbsDiff(float[] a, float[] b) {
        if (a.length != b.length) return Double.POSITIVE_INFINITY;
        double m = 0.0;
        for (int k = 0; k < a.length; k++) m = Math.max(m, Math.abs((double) a[k] - (double) b[k]));
        return m;
    }

    public static Report checkPreprocessing(GoldenVectors g) throws IOException {
        Report r = new Report();
        for (GoldenVectors.Clip c : g.clips) {
            ClipBuffer buf = g.replay(c);
            if (!buf.ready()) {
                r.fail(c.id + ": clip not ready after " + c.frameCount + " frames");
                continue;
            }
            int[] sel = buf.selected();
            if (!Arrays.equals(sel, c.selectedFrames)) r.fail(c.id + ": selected frames " + Arrays.toString(sel) + " != " + Arrays.toString(c.selectedFrames));
            double d = maxAbsDiff(buf.clip(), g.readFloats(c.inputFile));
            String msg = String.format(Locale.ROOT, "%s: preprocessed tensor max |diff| %.3g (limit %.0e)", c.id, d, INPUT_TOLERANCE);
            if (d <= INPUT_TOLERANCE) r.ok(msg); else r.fail(msg);
        }
        return r;
    }

    public static Report checkArtefact(GoldenVectors g, String artefactName, ModelRunner runner) throws Exception {
        Report r = new Report();
        GoldenVectors.Artefact a = g.artefact(artefactName);
        if (!"ok".equals(a.status) || a.expected.isEmpty()) {
            r.fail(a.name + ": no expected outputs in this bundle (status " + a.status + ")");
            return r;
        }
        for (GoldenVectors.Expected e : a.expected) {
            GoldenVectors.Clip c = g.clip(e.clip);
            ClipBuffer buf = g.replay(c);
            float[][] got = runner.run(buf.clip());
            float[][] want = g.outputs(e);
            double worst = 0.0;
            boolean ok = got.length == want.length;
            for (int k = 0; ok && k < want.length; k++) {
                if (got[k].length != want[k].length) { ok = false; break; }
                for (int j = 0; j < want[k].length; j++) {
                    double excess = Math.abs((double) got[k][j] - want[k][j]) - (a.atol + a.rtol * Math.abs((double) want[k][j]));
                    worst = Math.max(worst, Math.abs((double) got[k][j] - want[k][j]));
                    if (excess > 0) ok = false;
                }
            }
            Postprocessor.EchoResult res = ok ? Postprocessor.postprocess(got, c.frameWidth, c.frameHeight) : null;
            String msg = String.format(Locale.ROOT, "%s on %s: max |diff| %.3g (rtol %.0e, atol %.0e)%s", a.name, c.id, worst,
                a.rtol, a.atol, res == null ? "" : String.format(Locale.ROOT, "; EF %.2f (expected %.2f)", res.ef, e.ef));
            if (!ok) r.fail(msg);
            else if (res.band != e.band) r.fail(msg + "; EF band " + res.bandLabel + " != expected " + Postprocessor.EF_BAND_LABELS[e.band]);
            else r.ok(msg);
        }
        return r;
    }

    /** Java's post-processing of the stored expected outputs equals the stored Python result bit for bit. */
    public static Report checkPostprocessing(GoldenVectors g, File outDir) throws IOException {
        Report r = new Report();
        for (GoldenVectors.Artefact a : g.artefacts) {
            for (GoldenVectors.Expected e : a.expected) {
                GoldenVectors.Clip c = g.clip(e.clip);
                Postprocessor.EchoResult res = Postprocessor.postprocess(g.outputs(e), c.frameWidth, c.frameHeight);
                double[] flat = flatten(res);
                if (outDir != null) writeDoubles(new File(outDir, a.name + "." + c.id + ".post.f64"), flat);
                boolean same = res.ef == e.ef && res.edv == e.edv && res.esv == e.esv && res.band == e.band
                    && Arrays.deepEquals(res.edLandmarksPx, e.edLandmarksPx) && Arrays.deepEquals(res.esLandmarksPx, e.esLandmarksPx);
                String msg = a.name + " on " + c.id + ": post-processing " + (same ? "equals" : "differs from") + " Python's (" + res + ")";
                if (same) r.ok(msg); else r.fail(msg);
            }
        }
        return r;
    }

    /** [ef, edv, esv, band, ed (x, y)..., es (x, y)...] */
    public static double[] flatten(Postprocessor.EchoResult res) {
        int k = res.edLandmarksPx.length;
        double[] f = new double[4 + 4 * k];
        f[0] = res.ef; f[1] = res.edv; f[2] = res.esv; f[3] = res.band;
        for (int j = 0; j < k; j++) {
            f[4 + 2 * j] = res.edLandmarksPx[j][0];
            f[5 + 2 * j] = res.edLandmarksPx[j][1];
            f[4 + 2 * k + 2 * j] = res.esLandmarksPx[j][0];
            f[5 + 2 * k + 2 * j] = res.esLandmarksPx[j][1];
        }
        return f;
    }

    static void writeFloats(File f, float[] v) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(v);
        try (FileOutputStream o = new FileOutputStream(f)) { o.write(b.array()); }
    }

    static void writeDoubles(File f, double[] v) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asDoubleBuffer().put(v);
        try (FileOutputStream o = new FileOutputStream(f)) { o.write(b.array()); }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: GoldenCheck GOLDEN_DIR [OUT_DIR]");
            System.exit(2);
        }
        GoldenVectors g = new GoldenVectors(GoldenVectors.directory(new File(args[0])));
        File out = args.length > 1 ? new File(args[1]) : null;
        if (out != null) {
            out.mkdirs();
            for (GoldenVectors.Clip c : g.clips) {
                ClipBuffer buf = g.replay(c);
                writeFloats(new File(out, c.id + ".input.f32"), buf.clip());
                int[] sel = buf.selected();
                double[] s = new double[sel.length];
                for (int k = 0; k < sel.length; k++) s[k] = sel[k];
                writeDoubles(new File(out, c.id + ".selected.f64"), s);
            }
            // What an adapter feeds an int8-input file: Java's clip quantized with the manifest's scale.
            for (GoldenVectors.Artefact a : g.artefacts) {
                if (a.inputScale == null) continue;
                for (GoldenVectors.Expected e : a.expected) {
                    byte[] q = Preprocessor.quantize(g.replay(g.clip(e.clip)).clip(), a.inputScale, a.inputZeroPoint, "uint8".equals(a.inputDtype));
                    try (FileOutputStream o = new FileOutputStream(new File(out, a.name + "." + e.clip + ".input.q8"))) { o.write(q); }
                }
            }
        }
        Report pre = checkPreprocessing(g);
        Report post = checkPostprocessing(g, out);
        System.out.println(pre);
        System.out.println(post);
        boolean passed = pre.passed() && post.passed();
        System.out.println(passed ? "GOLDEN OK" : "GOLDEN FAILED");
        System.exit(passed ? 0 : 1);
    }
}
