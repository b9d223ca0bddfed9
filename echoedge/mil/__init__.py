"""Core ML's MIL programs off macOS: read them, and run them in a reference interpreter.

Core ML runs a model only on macOS, but the ML program inside a `.mlpackage` is plain data. This
package lies below both its users, the Core ML converter (activation ranges for W8A8, checking a
conversion) and the Core ML runner (real EF numbers on Linux):

- `echoedge.mil.program`: load a saved program with coremltools (`load_mil_program`) and read what
  it declares (`program_info` -> `ProgramInfo`);
- `echoedge.mil.interpreter`: the `Interpreter` loop and `activation_ranges`;
- `echoedge.mil.ops`: the op kernels, one module per op family, and their registry.

Importing this package is cheap: torch and coremltools are imported inside the functions that
need them.
"""

from echoedge.mil.interpreter import RUNTIME, Interpreter, UnsupportedOpError, activation_ranges
from echoedge.mil.ops import SUPPORTED_OPS
from echoedge.mil.program import ProgramInfo, load_mil_program, program_info

__all__ = ["RUNTIME", "SUPPORTED_OPS", "Interpreter", "ProgramInfo", "UnsupportedOpError",
           "activation_ranges", "load_mil_program", "program_info"]
