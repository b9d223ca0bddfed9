// Signature stub of org.pytorch.executorch.EValue (executorch-android 1.x).
package org.pytorch.executorch;

public class EValue {
    public static EValue from(Tensor tensor) {
        throw new UnsupportedOperationException("stub");
    }

    public Tensor toTensor() {
        throw new UnsupportedOperationException("stub");
    }
}
