// Signature stub of org.pytorch.executorch.Tensor (executorch-android 1.x).
package org.pytorch.executorch;

public abstract class Tensor {
    public static Tensor fromBlob(float[] data, long[] shape) {
        throw new UnsupportedOperationException("stub");
    }

    public static Tensor fromBlob(byte[] data, long[] shape) {
        throw new UnsupportedOperationException("stub");
    }

    public long[] shape() {
        throw new UnsupportedOperationException("stub");
    }

    public float[] getDataAsFloatArray() {
        throw new UnsupportedOperationException("stub");
    }

    public byte[] getDataAsByteArray() {
        throw new UnsupportedOperationException("stub");
    }
}
