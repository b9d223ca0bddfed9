package org.echoedge.bridge;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** The parts of an artefact's manifest.json an app needs (echoedge/convert/artefact.py). */
public final class Manifest {

    /** The ClipSpec: frames, period, height, width, channels, mean, std (0-255 grey scale). */
    public static final class ClipSpec {
        public final int frames, period, height, width, channels;
        public final double mean, std;

        public ClipSpec(int frames, int period, int height, int width, int channels, double mean, double std) {
            if (frames < 1 || period < 1 || height < 1 || width < 1) throw new IllegalArgumentException("ClipSpec sizes must be >= 1");
            if (channels != 1 && channels != 3) throw new IllegalArgumentException("ClipSpec.channels must be 1 or 3");
            if (!(std > 0)) throw new IllegalArgumentException("ClipSpec.std must be > 0");
            this.frames = frames; this.period = period; this.height = height; this.width = width;
            this.channels = channels; this.mean = mean; this.std = std;
        }

        /** Source frames one clip covers, first to last inclusive. */
        public int span() {
            return (frames - 1) * period + 1;
        }

        /** Number of floats in one (1, C, T, H, W) input. */
        public int inputSize() {
            return channels * frames * height * width;
        }

        public static ClipSpec fromJson(Map<String, Object> d) {
            return new ClipSpec(
                (int) Json.number(d.get("frames"), "clip_spec.frames"),
                (int) Json.number(d.get("period"), "clip_spec.period"),
                (int) Json.number(d.get("height"), "clip_spec.height"),
                (int) Json.number(d.get("width"), "clip_spec.width"),
                (int) Json.number(d.get("channels"), "clip_spec.channels"),
                Json.number(d.get("mean"), "clip_spec.mean"),
                Json.number(d.get("std"), "clip_spec.std"));
        }
    }

    /** One input or output tensor; scale/zeroPoint only for quantized I/O (real = scale * (q - zp)). */
    public static final class TensorInfo {
        public final String name, dtype, layout;
        public final long[] shape;
        public final Double scale;
        public final Integer zeroPoint;

        TensorInfo(Map<String, Object> d) {
            name = Json.string(d.get("name"), "tensor.name");
            dtype = Json.string(d.get("dtype"), "tensor.dtype");
            layout = d.get("layout") == null ? "" : Json.string(d.get("layout"), "tensor.layout");
            List<Object> s = Json.array(d.get("shape"), "tensor.shape");
            shape = new long[s.size()];
            for (int k = 0; k < shape.length; k++) shape[k] = (long) Json.number(s.get(k), "tensor.shape");
            scale = d.get("scale") == null ? null : Json.number(d.get("scale"), "tensor.scale");
            zeroPoint = d.get("zero_point") == null ? null : (int) Json.number(d.get("zero_point"), "tensor.zero_point");
        }

        public boolean quantized() {
            return scale != null && zeroPoint != null && (dtype.equals("int8") || dtype.equals("uint8"));
        }

        public int elementCount() {
            long n = 1;
            for (long v : shape) n *= v;
            return (int) n;
        }
    }

    public final String format, precision, runtime, modelFile, modelSha256;
    public final ClipSpec clipSpec;
    public final List<TensorInfo> inputs = new ArrayList<>();
    public final List<TensorInfo> outputs = new ArrayList<>();
    /** TFLite only (details.signature): the signature key, its input key, and output keys in output order. */
    public final String signatureKey, signatureInput;
    public final List<String> signatureOutputs = new ArrayList<>();

    public Manifest(Map<String, Object> d) {
        format = Json.string(d.get("format"), "format");
        precision = Json.string(d.get("precision"), "precision");
        runtime = Json.string(d.get("runtime"), "runtime");
        modelFile = Json.string(d.get("model_file"), "model_file");
        modelSha256 = d.get("model_sha256") == null ? "" : Json.string(d.get("model_sha256"), "model_sha256");
        clipSpec = ClipSpec.fromJson(Json.object(d.get("clip_spec"), "clip_spec"));
        for (Object t : Json.array(d.get("inputs"), "inputs")) inputs.add(new TensorInfo(Json.object(t, "inputs[]")));
        for (Object t : Json.array(d.get("outputs"), "outputs")) outputs.add(new TensorInfo(Json.object(t, "outputs[]")));
        Object details = d.get("details");
        Object sig = details instanceof Map ? Json.object(details, "details").get("signature") : null;
        if (sig instanceof Map) {
            Map<String, Object> sm = Json.object(sig, "details.signature");
            signatureKey = Json.string(sm.get("key"), "signature.key");
            signatureInput = Json.string(sm.get("input"), "signature.input");
            Map<String, Object> keys = Json.object(sm.get("outputs"), "signature.outputs");
            for (TensorInfo t : outputs) signatureOutputs.add(Json.string(keys.get(t.name), "signature.outputs." + t.name));
        } else {
            signatureKey = null;
            signatureInput = null;
        }
        if (inputs.isEmpty() || outputs.size() != 5) {
            throw new IllegalArgumentException("manifest: an Echo-E3Net artefact has 1 input and 5 outputs");
        }
    }

    public static Manifest parse(String json) {
        return new Manifest(Json.object(Json.parse(json), "manifest"));
    }

    public static Manifest read(File file) throws IOException {
        try {
            return parse(new String(Files.readAllBytes(file.toPath()), StandardCharsets.UTF_8));
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
    }

    public TensorInfo input() {
        return inputs.get(0);
    }
}
