package org.echoedge.bridge;

import java.util.ArrayList;

/**
 * Frames in as they arrive, one model clip out: the mirror of echoedge.data.preprocess.ClipBuffer.
 *
 * <p>Frame mode ({@code modelFps <= 0}): every arriving frame is a source frame, as in training;
 * the clip is the last span = (T - 1) * period + 1 frames, every period-th. Time mode
 * ({@code modelFps > 0}): the clip samples t_k = t_newest - offsetUs(T - 1 - k) and takes the
 * buffered frame nearest to each (ties: the earlier), so a 30 or 60 FPS source gets the temporal
 * spacing the model was trained on. Frames are greyed and resized on arrival; the buffer holds
 * model-size frames only. Not thread-safe: feed it from one thread.
 */
public final class ClipBuffer {
    private static final class Frame {
        final long timestampUs;
        final int index;
        final double[] grey;

        Frame(long timestampUs, int index, double[] grey) {
            this.timestampUs = timestampUs;
            this.index = index;
            this.grey = grey;
        }
    }

    private final Manifest.ClipSpec spec;
    private final double modelFps;
    private final ArrayList<Frame> frames = new ArrayList<>();
    private int count = 0;
    private int frameWidth = 0, frameHeight = 0;

    public ClipBuffer(Manifest.ClipSpec spec, double modelFps) {
        this.spec = spec;
        this.modelFps = modelFps;
    }

    /** Frame mode: every arriving frame is one source frame. */
    public ClipBuffer(Manifest.ClipSpec spec) {
        this(spec, 0.0);
    }

    public boolean timeMode() {
        return modelFps > 0;
    }

    /** floor(x + 0.5) of steps * period * 1e6 / modelFps, in microseconds. */
    public long offsetUs(int steps) {
        return (long) Math.floor((double) steps * spec.period * 1_000_000.0 / modelFps + 0.5);
    }

    public void add(byte[] pixels, int width, int height, Preprocessor.PixelFormat format, long timestampUs) {
        addGray(Preprocessor.toGray(pixels, width, height, format), width, height, timestampUs);
    }

    /** Android Bitmap.getPixels() ints. */
    public void addArgb(int[] argb, int width, int height, long timestampUs) {
        addGray(Preprocessor.toGrayArgb(argb, width, height), width, height, timestampUs);
    }

    public void addGray(int[] grey, int width, int height, long timestampUs) {
        if (timeMode() && !frames.isEmpty() && timestampUs <= frames.get(frames.size() - 1).timestampUs) {
            throw new IllegalArgumentException("frame timestamps must increase: " + timestampUs + " us after "
                + frames.get(frames.size() - 1).timestampUs + " us");
        }
        frameWidth = width;
        frameHeight = height;
        long ts = timeMode() ? timestampUs : count;
        frames.add(new Frame(ts, count, Preprocessor.areaResize(grey, width, height, spec.width, spec.height)));
        count++;
        evict();
    }

    private void evict() {
        if (!timeMode()) {
            while (frames.size() > spec.span()) frames.remove(0);
            return;
        }
        // The oldest frame can never be nearest to the earliest target once the next one is at or before it.
        long t0 = frames.get(frames.size() - 1).timestampUs - offsetUs(spec.frames - 1);
        while (frames.size() >= 2 && frames.get(1).timestampUs <= t0) frames.remove(0);
    }

    public boolean ready() {
        if (frames.isEmpty()) return false;
        if (!timeMode()) return frames.size() >= spec.span();
        long t0 = frames.get(frames.size() - 1).timestampUs - offsetUs(spec.frames - 1);
        return frames.get(0).timestampUs <= t0;
    }

    /** Arrival indices (0-based) of the frames the clip is made of, oldest first. */
    public int[] selected() {
        return positionsToIndices(selectPositions());
    }

    private int[] selectPositions() {
        if (!ready()) throw new IllegalStateException("clip not ready: " + frames.size() + " frames buffered");
        int[] pos = new int[spec.frames];
        if (!timeMode()) {
            for (int k = 0; k < spec.frames; k++) pos[k] = k * spec.period;
            return pos;
        }
        long newest = frames.get(frames.size() - 1).timestampUs;
        int j = 0;
        for (int k = 0; k < spec.frames; k++) {
            long target = newest - offsetUs(spec.frames - 1 - k);
            // Targets increase, so the nearest frame's position never moves back.
            while (j + 1 < frames.size()
                && Math.abs(frames.get(j + 1).timestampUs - target) < Math.abs(frames.get(j).timestampUs - target)) {
                j++;
            }
            pos[k] = j;
        }
        return pos;
    }

    private int[] positionsToIndices(int[] pos) {
        int[] idx = new int[pos.length];
        for (int k = 0; k < pos.length; k++) idx[k] = frames.get(pos[k]).index;
        return idx;
    }

    /** The model input (1, C, T, H, W) float, NCTHW, for the newest complete clip. */
    public float[] clip() {
        int[] pos = selectPositions();
        double[][] grey = new double[pos.length][];
        for (int k = 0; k < pos.length; k++) grey[k] = frames.get(pos[k]).grey;
        return Preprocessor.normalise(grey, spec);
    }

    /** Size of the newest original frame: what landmarks map back to. */
    public int frameWidth() {
        return frameWidth;
    }

    public int frameHeight() {
        return frameHeight;
    }

    public Manifest.ClipSpec spec() {
        return spec;
    }

    public void clear() {
        frames.clear();
        count = 0;
    }
}
