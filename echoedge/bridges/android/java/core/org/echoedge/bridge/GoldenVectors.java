package org.echoedge.bridge;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The bundle's golden/ folder: index.json plus raw little-endian files (uint8 frames, float32
 * tensors), readable without any library. Written by echoedge.bridges.golden; the same
 * folder ships in the iOS bundle.
 */
public final class GoldenVectors {

    /** Opens a file of the golden folder by name: a directory on the JVM, AssetManager on Android. */
    public interface Source {
        InputStream open(String name) throws IOException;
    }

    public static Source directory(final File dir) {
        return name -> new FileInputStream(new File(dir, name));
    }

    public static final class Clip {
        public final String id, description, framesFile, inputFile;
        public final Preprocessor.PixelFormat pixelFormat;
        public final int frameCount, frameWidth, frameHeight;
        public final long[] timestampsUs;
        public final double modelFps;  // 0 = frame mode
        public final int[] selectedFrames;

        Clip(Map<String, Object> d) {
            id = Json.string(d.get("id"), "clip.id");
            description = d.get("description") == null ? "" : (String) d.get("description");
            framesFile = Json.string(d.get("frames_file"), "clip.frames_file");
            inputFile = Json.string(d.get("input_file"), "clip.input_file");
            pixelFormat = Preprocessor.PixelFormat.parse(Json.string(d.get("pixel_format"), "clip.pixel_format"));
            frameCount = (int) Json.number(d.get("frame_count"), "clip.frame_count");
            frameWidth = (int) Json.number(d.get("frame_width"), "clip.frame_width");
            frameHeight = (int) Json.number(d.get("frame_height"), "clip.frame_height");
            List<Object> ts = Json.array(d.get("timestamps_us"), "clip.timestamps_us");
            timestampsUs = new long[ts.size()];
            for (int k = 0; k < timestampsUs.length; k++) timestampsUs[k] = (long) Json.number(ts.get(k), "timestamp");
            modelFps = d.get("model_fps") == null ? 0.0 : Json.number(d.get("model_fps"), "clip.model_fps");
            List<Object> sel = Json.array(d.get("selected_frames"), "clip.selected_frames");
            selectedFrames = new int[sel.size()];
            for (int k = 0; k < selectedFrames.length; k++) selectedFrames[k] = (int) Json.number(sel.get(k), "selected");
        }

        public int frameBytes() {
            return frameWidth * frameHeight * pixelFormat.bytesPerPixel;
        }
    }

    public static final class Expected {
        public final String clip, outputsFile;
        public final String quantizedInputFile;  // null unless the artefact takes int8/uint8
        public final int[] outputSizes;
        public final double ef, edv, esv;
        public final int band;
        public final double[][] edLandmarksPx, esLandmarksPx;

        Expected(Map<String, Object> d) {
            clip = Json.string(d.get("clip"), "expected.clip");
            outputsFile = Json.string(d.get("outputs_file"), "expected.outputs_file");
            quantizedInputFile = d.get("quantized_input_file") == null ? null : Json.string(d.get("quantized_input_file"), "expected.quantized_input_file");
            List<Object> sz = Json.array(d.get("output_sizes"), "expected.output_sizes");
            outputSizes = new int[sz.size()];
            for (int k = 0; k < outputSizes.length; k++) outputSizes[k] = (int) Json.number(sz.get(k), "size");
            Map<String, Object> r = Json.object(d.get("result"), "expected.result");
            ef = Json.number(r.get("ef"), "result.ef");
            edv = Json.number(r.get("edv"), "result.edv");
            esv = Json.number(r.get("esv"), "result.esv");
            band = (int) Json.number(r.get("band"), "result.band");
            edLandmarksPx = points(Json.array(r.get("ed_landmarks_px"), "result.ed_landmarks_px"));
            esLandmarksPx = points(Json.array(r.get("es_landmarks_px"), "result.es_landmarks_px"));
        }

        private static double[][] points(List<Object> a) {
            double[][] p = new double[a.size()][2];
            for (int k = 0; k < p.length; k++) {
                List<Object> xy = Json.array(a.get(k), "point");
                p[k][0] = Json.number(xy.get(0), "x");
                p[k][1] = Json.number(xy.get(1), "y");
            }
            return p;
        }
    }

    public static final class Artefact {
        public final String name, format, precision, modelFile, status, runtimeUsed;
        public final double rtol, atol;
        /** Set for files with a quantized (int8/uint8) input: the manifest's scale and zero point. */
        public final Double inputScale;
        public final Integer inputZeroPoint;
        public final String inputDtype;
        public final List<Expected> expected = new ArrayList<>();

        Artefact(Map<String, Object> d) {
            name = Json.string(d.get("name"), "artefact.name");
            format = Json.string(d.get("format"), "artefact.format");
            precision = Json.string(d.get("precision"), "artefact.precision");
            modelFile = Json.string(d.get("model_file"), "artefact.model_file");
            status = Json.string(d.get("status"), "artefact.status");
            runtimeUsed = d.get("runtime_used") == null ? "" : (String) d.get("runtime_used");
            Map<String, Object> tol = Json.object(d.get("tolerance"), "artefact.tolerance");
            rtol = Json.number(tol.get("rtol"), "tolerance.rtol");
            atol = Json.number(tol.get("atol"), "tolerance.atol");
            Map<String, Object> in = d.get("input") == null ? null : Json.object(d.get("input"), "artefact.input");
            inputDtype = in == null ? "float32" : Json.string(in.get("dtype"), "input.dtype");
            inputScale = in == null || in.get("scale") == null ? null : Json.number(in.get("scale"), "input.scale");
            inputZeroPoint = in == null || in.get("zero_point") == null ? null : (int) Json.number(in.get("zero_point"), "input.zero_point");
            for (Object e : Json.array(d.get("expected"), "artefact.expected")) expected.add(new Expected(Json.object(e, "expected[]")));
        }
    }

    public final Source source;
    public final Manifest.ClipSpec spec;
    public final List<Clip> clips = new ArrayList<>();
    public final List<Artefact> artefacts = new ArrayList<>();

    public GoldenVectors(Source source) throws IOException {
        this.source = source;
        Map<String, Object> d = Json.object(Json.parse(new String(readAll("index.json"), StandardCharsets.UTF_8)), "index.json");
        if (!"echo-edge-golden".equals(d.get("format"))) throw new IOException("index.json: not an echo-edge golden-vector index");
        spec = Manifest.ClipSpec.fromJson(Json.object(d.get("clip_spec"), "clip_spec"));
        for (Object c : Json.array(d.get("clips"), "clips")) clips.add(new Clip(Json.object(c, "clips[]")));
        for (Object a : Json.array(d.get("artefacts"), "artefacts")) artefacts.add(new Artefact(Json.object(a, "artefacts[]")));
    }

    public byte[] readAll(String name) throws IOException {
        try (InputStream in = source.open(name)) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) out.write(buf, 0, n);
            return out.toByteArray();
        }
    }

    public float[] readFloats(String name) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(readAll(name)).order(ByteOrder.LITTLE_ENDIAN);
        float[] f = new float[b.remaining() / 4];
        b.asFloatBuffer().get(f);
        return f;
    }

    /** Frame k of a clip's raw frames (uint8, interleaved as its pixel format says). */
    public byte[][] frames(Clip c) throws IOException {
        byte[] all = readAll(c.framesFile);
        int n = c.frameBytes();
        if (all.length != n * c.frameCount) throw new IOException(c.framesFile + ": expected " + (n * c.frameCount) + " bytes, got " + all.length);
        byte[][] f = new byte[c.frameCount][n];
        for (int k = 0; k < c.frameCount; k++) System.arraycopy(all, k * n, f[k], 0, n);
        return f;
    }

    /** The five expected outputs of one clip, split by output_sizes. */
    public float[][] outputs(Expected e) throws IOException {
        float[] all = readFloats(e.outputsFile);
        float[][] out = new float[e.outputSizes.length][];
        int o = 0;
        for (int k = 0; k < out.length; k++) {
            out[k] = new float[e.outputSizes[k]];
            System.arraycopy(all, o, out[k], 0, e.outputSizes[k]);
            o += e.outputSizes[k];
        }
        if (o != all.length) throw new IOException(e.outputsFile + ": size does not match output_sizes");
        return out;
    }

    public Clip clip(String id) {
        for (Clip c : clips) if (c.id.equals(id)) return c;
        throw new IllegalArgumentException("no golden clip " + id);
    }

    public Artefact artefact(String name) {
        for (Artefact a : artefacts) if (a.name.equals(name)) return a;
        throw new IllegalArgumentException("no golden vectors for artefact " + name);
    }

    /** Feed a clip's raw frames through a fresh ClipBuffer, as an app would. */
    public ClipBuffer replay(Clip c) throws IOException {
        ClipBuffer buf = new ClipBuffer(spec, c.modelFps);
        byte[][] f = frames(c);
        for (int k = 0; k < f.length; k++) buf.add(f[k], c.frameWidth, c.frameHeight, c.pixelFormat, c.timestampsUs[k]);
        return buf;
    }
}
