package org.echoedge.bridge;

/**
 * One artefact in its runtime: takes the NCTHW float clip ClipBuffer.clip() returns and gives the
 * five outputs {ef[1], edv[1], esv[1], ed_landmarks[K*2], es_landmarks[K*2]} as floats (an adapter
 * quantizes an int8 input and dequantizes int8 outputs with the manifest's scale/zero point, and
 * reorders the input to the file's layout). Adapters: executorch.ExecuTorchRunner, litert.LiteRtRunner.
 */
public interface ModelRunner extends AutoCloseable {
    float[][] run(float[] clipNcthw) throws Exception;

    Manifest manifest();

    @Override
    void close();
}
