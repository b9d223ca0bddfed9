package org.echoedge.bridge;

/**
 * Model outputs -> what an app shows: the mirror of echoedge.data.preprocess.postprocess.
 *
 * <p>Floats are the model's float values widened to double; the EF band is 0 for EF &lt; 40, 1 for
 * 40 &lt;= EF &lt; 50, 2 for EF &gt;= 50 (echoedge.model.metrics); normalised landmarks (x/W, y/H)
 * scale back by the original frame's size, because the resize maps the whole frame onto the model's.
 */
public final class Postprocessor {
    private Postprocessor() {}

    public static final String[] EF_BAND_LABELS = {"<40", "40-49", ">=50"};

    /** What one clip gives; landmarks are [K][2] (x, y) pixels of the original frame. */
    public static final class EchoResult {
        public final double ef, edv, esv;
        public final int band;
        public final String bandLabel;
        public final double[][] edLandmarksPx, esLandmarksPx;

        EchoResult(double ef, double edv, double esv, double[][] ed, double[][] es) {
            this.ef = ef;
            this.edv = edv;
            this.esv = esv;
            this.band = efBand(ef);
            this.bandLabel = EF_BAND_LABELS[band];
            this.edLandmarksPx = ed;
            this.esLandmarksPx = es;
        }

        @Override
        public String toString() {
            return String.format(java.util.Locale.ROOT, "EF %.1f%% (%s), EDV %.1f mL, ESV %.1f mL", ef, bandLabel, edv, esv);
        }
    }

    public static int efBand(double ef) {
        return ef < 40.0 ? 0 : (ef < 50.0 ? 1 : 2);
    }

    /** (K*2) normalised (x/W, y/H) floats -> [K][2] pixel (x, y) of a frameWidth x frameHeight frame. */
    public static double[][] landmarksToPixels(float[] lm, int frameWidth, int frameHeight) {
        if (lm.length % 2 != 0) throw new IllegalArgumentException("landmarks must hold (x, y) pairs");
        double[][] px = new double[lm.length / 2][2];
        for (int k = 0; k < px.length; k++) {
            px[k][0] = (double) lm[2 * k] * frameWidth;
            px[k][1] = (double) lm[2 * k + 1] * frameHeight;
        }
        return px;
    }

    /** outputs = {ef[1], edv[1], esv[1], ed_landmarks[K*2], es_landmarks[K*2]} of one clip. */
    public static EchoResult postprocess(float[][] outputs, int frameWidth, int frameHeight) {
        if (outputs.length != 5) {
            throw new IllegalArgumentException("Echo-E3Net has 5 outputs (ef, edv, esv, ed_landmarks, es_landmarks), got " + outputs.length);
        }
        return new EchoResult(outputs[0][0], outputs[1][0], outputs[2][0],
            landmarksToPixels(outputs[3], frameWidth, frameHeight),
            landmarksToPixels(outputs[4], frameWidth, frameHeight));
    }
}
