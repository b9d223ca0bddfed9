"""The iOS bridge: `echo-edge bridge ios ARTEFACTS --out DIR`.

A Swift package with the .mlpackage (and .pte) artefacts as resources, Swift sources that mirror
the Android bridge's pure-Java core line by line (clip buffer, preprocessing, post-processing,
manifest and golden-vector readers), a Core ML wrapper, and an XCTest over the same golden vectors.
The Swift sources ship as package data under swift/.
"""

from __future__ import annotations

from echoedge.bridges.ios.bundle import build_ios_bundle

__all__ = ["build_ios_bundle"]
