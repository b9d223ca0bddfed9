"""The Android bridge: `echo-edge bridge android ARTEFACTS --out DIR`.

A Gradle library module with the .pte / .tflite artefacts, a pure-Java core (clip buffer,
preprocessing, post-processing, manifest and golden-vector readers) that mirrors
echoedge.data.preprocess, thin adapters for ExecuTorch and LiteRT, and golden vectors computed by
the validation runners. Java sources ship as package data under java/ (core, executorch, litert);
templates/ holds the Gradle and instrumentation-test templates.
"""

from __future__ import annotations

from echoedge.bridges.android.bundle import build_android_bundle

__all__ = ["build_android_bundle"]
