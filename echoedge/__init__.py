"""echo-edge: Echo-E3Net ejection-fraction models from training to validated on-device artefacts.

Importing this package is cheap: torch, tensorflow, coremltools and executorch are imported only
inside the functions that need them, so `echo-edge --help` answers quickly.
"""

__version__ = "0.1.0"
