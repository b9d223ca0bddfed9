// Signature stub of org.pytorch.executorch.Module (executorch-android 1.x), for compiling the
// bridge's adapter on the JVM only; the real class is in the AAR and calls native code.
package org.pytorch.executorch;

public class Module {
    public static final int LOAD_MODE_FILE = 0;
    public static final int LOAD_MODE_MMAP = 1;

    public static Module load(String modelPath, int loadMode, int numThreads) {
        throw new UnsupportedOperationException("stub");
    }

    public static Module load(String modelPath) {
        throw new UnsupportedOperationException("stub");
    }

    public EValue[] forward(EValue... inputs) {
        throw new UnsupportedOperationException("stub");
    }

    public void destroy() {}
}
