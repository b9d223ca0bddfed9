"""Device bundles: `echo-edge bridge android|ios ARTEFACTS --out DIR`.

Shared machinery sits here (bundling: picking artefacts, validated EF error, README pieces,
all-or-nothing writing; golden: the golden vectors; summary: what a build returns); each platform
is a subpackage that imports only from these: `android` (Gradle module, Java sources and
templates) and `ios` (Swift package, Swift sources).
"""
