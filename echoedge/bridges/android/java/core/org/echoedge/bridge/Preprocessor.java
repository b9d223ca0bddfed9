package org.echoedge.bridge;

/**
 * Frame -> model input, a line-by-line mirror of echoedge/data/preprocess.py (and Preprocessor.swift).
 *
 * <p>grey = (r + g + b + 1) / 3 on the first three channels (the rounded channel mean the model
 * was trained on, whatever the channel order); resize = exact area average (OpenCV INTER_AREA when
 * downscaling) in double, columns then rows; normalise = (v - mean) / std rounded once to float.
 * The JVM test checks these against the Python reference within 1e-5.
 */
public final class Preprocessor {
    private Preprocessor() {}

    /** Pixel layouts an app hands in; RGB and BGR give the same grey (channel mean). */
    public enum PixelFormat {
        GRAY8(1), RGB888(3), BGR888(3), RGBA8888(4), BGRA8888(4);

        public final int bytesPerPixel;

        PixelFormat(int bytesPerPixel) {
            this.bytesPerPixel = bytesPerPixel;
        }

        public static PixelFormat parse(String name) {
            return valueOf(name.toUpperCase(java.util.Locale.ROOT));
        }
    }

    /** uint8 pixels (row-major, interleaved) -> grey levels 0..255, one int per pixel. */
    public static int[] toGray(byte[] pixels, int width, int height, PixelFormat format) {
        int n = width * height;
        int bpp = format.bytesPerPixel;
        if (pixels.length < n * bpp) {
            throw new IllegalArgumentException("frame has " + pixels.length + " bytes, " + format + " "
                + width + "x" + height + " needs " + (n * bpp));
        }
        int[] g = new int[n];
        if (bpp == 1) {
            for (int p = 0; p < n; p++) g[p] = pixels[p] & 0xFF;
            return g;
        }
        for (int p = 0; p < n; p++) {
            int o = p * bpp;
            int s = (pixels[o] & 0xFF) + (pixels[o + 1] & 0xFF) + (pixels[o + 2] & 0xFF);
            g[p] = (s + 1) / 3;
        }
        return g;
    }

    /** Android Bitmap.getPixels() ints (0xAARRGGBB) -> grey levels; alpha ignored. */
    public static int[] toGrayArgb(int[] argb, int width, int height) {
        int n = width * height;
        int[] g = new int[n];
        for (int p = 0; p < n; p++) {
            int c = argb[p];
            int s = ((c >> 16) & 0xFF) + ((c >> 8) & 0xFF) + (c & 0xFF);
            g[p] = (s + 1) / 3;
        }
        return g;
    }

    /** Exact area-average weights along one axis: output o covers [o*in/out, (o+1)*in/out). */
    public static final class AxisWeights {
        public final int[] first;
        public final double[][] weights;

        AxisWeights(int[] first, double[][] weights) {
            this.first = first;
            this.weights = weights;
        }
    }

    public static AxisWeights areaWeights(int nIn, int nOut) {
        if (nIn < 1 || nOut < 1) throw new IllegalArgumentException("cannot resize between sizes " + nIn + " and " + nOut);
        int[] first = new int[nOut];
        double[][] w = new double[nOut][];
        for (int o = 0; o < nOut; o++) {
            double lo = (double) ((long) o * nIn) / nOut;
            double hi = (double) ((long) (o + 1) * nIn) / nOut;
            int f = (int) Math.floor(lo);
            int last = Math.min((int) Math.ceil(hi), nIn);
            first[o] = f;
            w[o] = new double[last - f];
            for (int i = f; i < last; i++) {
                w[o][i - f] = (Math.min(hi, i + 1.0) - Math.max(lo, (double) i)) / (hi - lo);
            }
        }
        return new AxisWeights(first, w);
    }

    /** Grey (height x width, row-major) -> outH x outW grey levels in double; same size is the identity. */
    public static double[] areaResize(int[] grey, int width, int height, int outW, int outH) {
        if (width == outW && height == outH) {
            double[] out = new double[grey.length];
            for (int p = 0; p < grey.length; p++) out[p] = grey[p];
            return out;
        }
        AxisWeights wx = areaWeights(width, outW);
        AxisWeights wy = areaWeights(height, outH);
        double[] cols = new double[height * outW];  // columns first
        for (int y = 0; y < height; y++) {
            int row = y * width;
            for (int ox = 0; ox < outW; ox++) {
                double acc = 0.0;
                double[] w = wx.weights[ox];
                int f = wx.first[ox];
                for (int k = 0; k < w.length; k++) acc += w[k] * grey[row + f + k];
                cols[y * outW + ox] = acc;
            }
        }
        double[] out = new double[outH * outW];  // then rows
        for (int oy = 0; oy < outH; oy++) {
            double[] w = wy.weights[oy];
            int f = wy.first[oy];
            for (int ox = 0; ox < outW; ox++) {
                double acc = 0.0;
                for (int k = 0; k < w.length; k++) acc += w[k] * cols[(f + k) * outW + ox];
                out[oy * outW + ox] = acc;
            }
        }
        return out;
    }

    /** T model-size grey frames -> (1, C, T, H, W) float input, (v - mean) / std. */
    public static float[] normalise(double[][] frames, Manifest.ClipSpec spec) {
        int plane = spec.height * spec.width;
        int t = frames.length;
        float[] out = new float[spec.channels * t * plane];
        for (int k = 0; k < t; k++) {
            for (int p = 0; p < plane; p++) {
                out[k * plane + p] = (float) ((frames[k][p] - spec.mean) / spec.std);
            }
        }
        for (int c = 1; c < spec.channels; c++) System.arraycopy(out, 0, out, c * t * plane, t * plane);
        return out;
    }

    /** Round to nearest, ties away from zero (TFLite's std::round). */
    public static double roundHalfAway(double x) {
        return Math.signum(x) * Math.floor(Math.abs(x) + 0.5);
    }

    /** Float input -> int8 (or uint8 as unsigned values in a byte) for an int8-input file. */
    public static byte[] quantize(float[] x, double scale, int zeroPoint, boolean unsigned) {
        if (!(scale > 0)) throw new IllegalArgumentException("quantization scale must be > 0");
        int lo = unsigned ? 0 : -128, hi = unsigned ? 255 : 127;
        byte[] q = new byte[x.length];
        for (int k = 0; k < x.length; k++) {
            double v = roundHalfAway((double) x[k] / scale) + zeroPoint;
            q[k] = (byte) (int) Math.max(lo, Math.min(hi, v));
        }
        return q;
    }

    /** Quantized output value -> float: scale * (q - zp) in double, rounded once to float. */
    public static float dequantize(int q, double scale, int zeroPoint) {
        return (float) (scale * (double) (q - zeroPoint));
    }

    /**
     * NCTHW (what normalise returns) -> the layout the runtime file wants, from its manifest:
     * NCTHW (ExecuTorch, Core ML, TFLite files that kept PyTorch's layout) or NTHWC.
     */
    public static float[] toLayout(float[] ncthw, Manifest.ClipSpec spec, String layout) {
        if (layout == null || layout.isEmpty() || layout.equals("NCTHW")) return ncthw;
        if (!layout.equals("NTHWC")) throw new IllegalArgumentException("unsupported input layout " + layout);
        int c = spec.channels, t = spec.frames, plane = spec.height * spec.width;
        float[] out = new float[ncthw.length];
        for (int ci = 0; ci < c; ci++)
            for (int ti = 0; ti < t; ti++)
                for (int p = 0; p < plane; p++)
                    out[(ti * plane + p) * c + ci] = ncthw[(ci * t + ti) * plane + p];
        return out;
    }
}
