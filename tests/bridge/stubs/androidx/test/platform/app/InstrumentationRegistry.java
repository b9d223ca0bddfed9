// Signature stub of androidx.test.platform.app.InstrumentationRegistry.
package androidx.test.platform.app;

import android.app.Instrumentation;

public final class InstrumentationRegistry {
    public static Instrumentation getInstrumentation() {
        throw new UnsupportedOperationException("stub");
    }
}
