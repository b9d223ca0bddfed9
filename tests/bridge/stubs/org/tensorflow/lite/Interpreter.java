// Signature stub of org.tensorflow.lite.Interpreter (LiteRT / TensorFlow Lite Java API).
package org.tensorflow.lite;

import java.io.File;
import java.util.Map;

public final class Interpreter implements AutoCloseable {
    public static class Options {
        public Options setNumThreads(int numThreads) {
            return this;
        }
    }

    public Interpreter(File modelFile, Options options) {
        throw new UnsupportedOperationException("stub");
    }

    public void runForMultipleInputsOutputs(Object[] inputs, Map<Integer, Object> outputs) {
        throw new UnsupportedOperationException("stub");
    }

    public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey) {
        throw new UnsupportedOperationException("stub");
    }

    public Tensor getInputTensorFromSignature(String inputName, String signatureKey) {
        throw new UnsupportedOperationException("stub");
    }

    public Tensor getOutputTensorFromSignature(String outputName, String signatureKey) {
        throw new UnsupportedOperationException("stub");
    }

    public int getOutputTensorCount() {
        throw new UnsupportedOperationException("stub");
    }

    public Tensor getInputTensor(int inputIndex) {
        throw new UnsupportedOperationException("stub");
    }

    public Tensor getOutputTensor(int outputIndex) {
        throw new UnsupportedOperationException("stub");
    }

    @Override
    public void close() {}
}
