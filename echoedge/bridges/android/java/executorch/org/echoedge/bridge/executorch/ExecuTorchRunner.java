package org.echoedge.bridge.executorch;

import java.io.File;
import java.io.IOException;
import org.echoedge.bridge.Manifest;
import org.echoedge.bridge.ModelRunner;
import org.echoedge.bridge.Preprocessor;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;

/**
 * A .pte artefact folder on ExecuTorch's Android runtime (org.pytorch:executorch-android).
 * Module.load needs a file path: copy the artefact folder out of the APK's assets first (see README).
 */
public final class ExecuTorchRunner implements ModelRunner {
    private final Manifest manifest;
    private final Module module;

    public ExecuTorchRunner(File artefactDir, int threads) throws IOException {
        manifest = Manifest.read(new File(artefactDir, "manifest.json"));
        if (!"executorch".equals(manifest.format)) {
            throw new IOException(artefactDir + ": artefact format is " + manifest.format + ", not executorch");
        }
        File model = new File(artefactDir, manifest.modelFile);
        if (!model.isFile()) throw new IOException(model + ": model file named in the manifest is missing");
        module = Module.load(model.getAbsolutePath(), Module.LOAD_MODE_MMAP, threads);
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    @Override
    public float[][] run(float[] clipNcthw) {
        Manifest.TensorInfo in = manifest.input();
        float[] x = Preprocessor.toLayout(clipNcthw, manifest.clipSpec, in.layout);
        if (x.length != in.elementCount()) {
            throw new IllegalArgumentException("clip has " + x.length + " values, the program takes " + in.elementCount());
        }
        Tensor t = in.quantized()
            ? Tensor.fromBlob(Preprocessor.quantize(x, in.scale, in.zeroPoint, "uint8".equals(in.dtype)), in.shape)
            : Tensor.fromBlob(x, in.shape);
        EValue[] out = module.forward(EValue.from(t));
        if (out.length != manifest.outputs.size()) {
            throw new IllegalStateException("program returned " + out.length + " outputs, manifest lists " + manifest.outputs.size());
        }
        float[][] r = new float[out.length][];
        for (int k = 0; k < out.length; k++) {
            Manifest.TensorInfo spec = manifest.outputs.get(k);
            Tensor o = out[k].toTensor();
            if (spec.quantized()) {
                byte[] q = o.getDataAsByteArray();
                r[k] = new float[q.length];
                boolean unsigned = "uint8".equals(spec.dtype);
                for (int j = 0; j < q.length; j++) {
                    r[k][j] = Preprocessor.dequantize(unsigned ? (q[j] & 0xFF) : q[j], spec.scale, spec.zeroPoint);
                }
            } else {
                r[k] = o.getDataAsFloatArray();
            }
        }
        return r;
    }

    @Override
    public void close() {
        module.destroy();
    }
}
