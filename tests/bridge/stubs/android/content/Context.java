// Signature stub of android.content.Context (only what the instrumentation-test template calls).
package android.content;

import android.content.res.AssetManager;
import java.io.File;

public abstract class Context {
    public abstract AssetManager getAssets();

    public abstract File getFilesDir();
}
