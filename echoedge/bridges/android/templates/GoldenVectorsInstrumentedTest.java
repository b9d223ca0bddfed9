package org.echoedge.bridge;

import static org.junit.Assert.assertTrue;

import android.content.Context;
import android.content.res.AssetManager;
import androidx.test.ext.junit.runners.AndroidJUnit4;
import androidx.test.platform.app.InstrumentationRegistry;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import org.junit.Test;
import org.junit.runner.RunWith;

/**
 * Runs the bundle's golden vectors on the device: the Java preprocessing of the golden raw frames
 * equals the Python tensor, and each artefact's runtime output equals what validation computed
 * within the artefact's tolerance. Golden files are this test APK's assets (echoedge/golden);
 * artefacts are the library's assets (echoedge/artefacts), copied to files/ because both runtimes
 * load from a path. Run: ./gradlew :echo-edge-bridge:connectedAndroidTest
 */
@RunWith(AndroidJUnit4.class)
public class GoldenVectorsInstrumentedTest {

    private static GoldenVectors golden() throws IOException {
        final AssetManager testAssets = InstrumentationRegistry.getInstrumentation().getContext().getAssets();
        return new GoldenVectors(name -> testAssets.open("echoedge/golden/" + name));
    }

    private static File copyAssetFolder(Context ctx, String assetDir) throws IOException {
        File dest = new File(ctx.getFilesDir(), assetDir);
        dest.mkdirs();
        for (String name : ctx.getAssets().list(assetDir)) {
            try (InputStream in = ctx.getAssets().open(assetDir + "/" + name);
                 OutputStream out = new FileOutputStream(new File(dest, name))) {
                byte[] buf = new byte[1 << 16];
                int n;
                while ((n = in.read(buf)) > 0) out.write(buf, 0, n);
            }
        }
        return dest;
    }

    @Test
    public void preprocessingMatchesPython() throws Exception {
        GoldenCheck.Report r = GoldenCheck.checkPreprocessing(golden());
        System.out.println(r);
        assertTrue(r.toString(), r.passed());
    }

    @Test
    public void artefactsMatchValidation() throws Exception {
        Context ctx = InstrumentationRegistry.getInstrumentation().getTargetContext();
        GoldenVectors g = golden();
        StringBuilder failures = new StringBuilder();
        for (GoldenVectors.Artefact a : g.artefacts) {
            if (!"ok".equals(a.status)) continue;  // listed as not run where the bundle was built
            File dir = copyAssetFolder(ctx, "echoedge/artefacts/" + a.name);
            try (ModelRunner runner = open(a.format, dir)) {
                if (runner == null) continue;
                GoldenCheck.Report r = GoldenCheck.checkArtefact(g, a.name, runner);
                System.out.println(r);
                if (!r.passed()) failures.append(r).append('\n');
            }
        }
        assertTrue(failures.toString(), failures.length() == 0);
    }

    private static ModelRunner open(String format, File dir) throws IOException {
@OPEN_RUNNERS@
        return null;
    }
}
