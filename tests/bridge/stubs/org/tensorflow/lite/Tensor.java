// Signature stub of org.tensorflow.lite.Tensor (LiteRT / TensorFlow Lite Java API).
package org.tensorflow.lite;

public interface Tensor {
    class QuantizationParams {
        public float getScale() {
            throw new UnsupportedOperationException("stub");
        }

        public int getZeroPoint() {
            throw new UnsupportedOperationException("stub");
        }
    }

    DataType dataType();

    int numBytes();

    int[] shape();

    String name();

    QuantizationParams quantizationParams();
}
