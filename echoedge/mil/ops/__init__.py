"""MIL op kernels (PyTorch CPU), one module per op family; importing this package registers them all.

Kernels follow the op definitions in coremltools' MIL reference
(coremltools/converters/mil/mil/ops/defs/iOS15..iOS18). torch is never imported here: each kernel
reaches it through its `_Op` view (`o.torch`).
"""

from __future__ import annotations

from echoedge.mil.ops import (  # noqa: F401  (imported to register their kernels)
    activation, elementwise, linalg, norm, pool, quant, reduce, shape,
)
from echoedge.mil.ops.registry import _OPS, UnsupportedOpError

SUPPORTED_OPS = frozenset(_OPS) | {"const"}
# Ops whose output depends only on constants: evaluated once when the program loads.
_CONSTEXPR = {n for n in _OPS if n.startswith("constexpr_")}

__all__ = ("SUPPORTED_OPS", "UnsupportedOpError")
