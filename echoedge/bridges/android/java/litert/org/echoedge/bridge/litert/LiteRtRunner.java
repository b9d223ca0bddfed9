package org.echoedge.bridge.litert;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.Map;
import org.echoedge.bridge.Manifest;
import org.echoedge.bridge.ModelRunner;
import org.echoedge.bridge.Preprocessor;
import org.tensorflow.lite.DataType;
import org.tensorflow.lite.Interpreter;
import org.tensorflow.lite.Tensor;

/**
 * A .tflite artefact folder on LiteRT's Interpreter (com.google.ai.edge.litert, package
 * org.tensorflow.lite). Runs the signature the manifest names (details.signature: onnx2tf names the
 * outputs output_0..output_4, mapped there to ef, edv, esv, ed_landmarks, es_landmarks), so the
 * outputs come back in the manifest's order whatever the file's tensor order. Quantized I/O uses
 * the manifest's scale/zero point, falling back to the file's own.
 */
public final class LiteRtRunner implements ModelRunner {
    private final Manifest manifest;
    private final Interpreter interpreter;

    public LiteRtRunner(File artefactDir, int threads) throws IOException {
        manifest = Manifest.read(new File(artefactDir, "manifest.json"));
        if (!"tflite".equals(manifest.format)) {
            throw new IOException(artefactDir + ": artefact format is " + manifest.format + ", not tflite");
        }
        if (manifest.signatureKey == null) {
            throw new IOException(artefactDir + ": manifest names no signature (details.signature)");
        }
        File model = new File(artefactDir, manifest.modelFile);
        if (!model.isFile()) throw new IOException(model + ": model file named in the manifest is missing");
        Interpreter.Options options = new Interpreter.Options();
        options.setNumThreads(threads);
        interpreter = new Interpreter(model, options);
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    @Override
    public float[][] run(float[] clipNcthw) {
        String key = manifest.signatureKey;
        Manifest.TensorInfo in = manifest.input();
        Tensor inT = interpreter.getInputTensorFromSignature(manifest.signatureInput, key);
        float[] x = Preprocessor.toLayout(clipNcthw, manifest.clipSpec, in.layout);
        ByteBuffer input;
        if (inT.dataType() == DataType.FLOAT32) {
            input = ByteBuffer.allocateDirect(4 * x.length).order(ByteOrder.nativeOrder());
            input.asFloatBuffer().put(x);
        } else if (inT.dataType() == DataType.INT8 || inT.dataType() == DataType.UINT8) {
            double scale = in.scale != null ? in.scale : inT.quantizationParams().getScale();
            int zp = in.zeroPoint != null ? in.zeroPoint : inT.quantizationParams().getZeroPoint();
            byte[] q = Preprocessor.quantize(x, scale, zp, inT.dataType() == DataType.UINT8);
            input = ByteBuffer.allocateDirect(q.length).order(ByteOrder.nativeOrder());
            input.put(q);
            input.rewind();
        } else {
            throw new IllegalStateException("unsupported input type " + inT.dataType());
        }
        Map<String, Object> inputs = new HashMap<>();
        inputs.put(manifest.signatureInput, input);
        Map<String, Object> outputs = new HashMap<>();
        int n = manifest.outputs.size();
        ByteBuffer[] buffers = new ByteBuffer[n];
        Tensor[] tensors = new Tensor[n];
        for (int k = 0; k < n; k++) {
            String out = manifest.signatureOutputs.get(k);
            tensors[k] = interpreter.getOutputTensorFromSignature(out, key);
            buffers[k] = ByteBuffer.allocateDirect(tensors[k].numBytes()).order(ByteOrder.nativeOrder());
            outputs.put(out, buffers[k]);
        }
        interpreter.runSignature(inputs, outputs, key);
        float[][] r = new float[n][];
        for (int k = 0; k < n; k++) {
            Manifest.TensorInfo spec = manifest.outputs.get(k);
            ByteBuffer b = buffers[k];
            b.rewind();
            DataType dt = tensors[k].dataType();
            if (dt == DataType.FLOAT32) {
                r[k] = new float[b.remaining() / 4];
                b.asFloatBuffer().get(r[k]);
            } else if (dt == DataType.INT8 || dt == DataType.UINT8) {
                double scale = spec.scale != null ? spec.scale : tensors[k].quantizationParams().getScale();
                int zp = spec.zeroPoint != null ? spec.zeroPoint : tensors[k].quantizationParams().getZeroPoint();
                r[k] = new float[b.remaining()];
                for (int j = 0; j < r[k].length; j++) {
                    byte q = b.get(j);
                    r[k][j] = Preprocessor.dequantize(dt == DataType.UINT8 ? (q & 0xFF) : q, scale, zp);
                }
            } else {
                throw new IllegalStateException("unsupported output type " + dt);
            }
        }
        return r;
    }

    @Override
    public void close() {
        interpreter.close();
    }
}
