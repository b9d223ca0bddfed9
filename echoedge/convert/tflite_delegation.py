"""Which ops of a .tflite file XNNPACK takes, read from a loaded interpreter (not guessed).

TFLite decides delegation at load time and its Python interpreter does not expose the execution
plan, nor does it log the "Replacing N out of M node(s)" line at its default level. What it does
expose, after `allocate_tensors` with the default XNNPACK delegate:

- `_get_ops_details()` lists every node: the file's ops plus one `DELEGATE` node per partition
  XNNPACK took (its outputs are the partition's outputs);
- a value computed inside a partition lives in XNNPACK's workspace, so the interpreter has no data
  for it (`get_tensor` raises "Tensor data is null"; echoedge.convert.memory_plan relies on the
  same fact).

So an op ran inside XNNPACK exactly when each of its outputs is either such a workspace value or
an output of a DELEGATE node; any other op is a fallback that the interpreter runs on its own
kernels. `xnnpack_coverage` counts both and names the fallback op types.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoedge.errors import EchoEdgeError, first_line


@dataclass
class DelegateCoverage:
    ops: int  # the file's ops (DELEGATE nodes excluded)
    delegated_ops: int
    fallback_ops: int
    partitions: int  # DELEGATE nodes: 1 means XNNPACK runs the whole graph in one piece
    fallback_by_op: dict[str, int] = field(default_factory=dict)
    interpreter: str = "litert"

    @property
    def share(self) -> float | None:
        return self.delegated_ops / self.ops if self.ops else None

    def to_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "delegated_ops": self.delegated_ops, "fallback_ops": self.fallback_ops,
                "partitions": self.partitions, "fallback_by_op": dict(self.fallback_by_op),
                "delegated_share": round(self.share, 6) if self.share is not None else None,
                "interpreter": self.interpreter,
                "how": "ops whose outputs live in XNNPACK's workspace or leave a DELEGATE node, "
                       "after allocate_tensors with the default delegates"}


def xnnpack_coverage(path: str | Path, threads: int = 2, kind: str = "litert") -> DelegateCoverage:
    """Delegated and fallback ops of the file at `path` in a LiteRT interpreter (XNNPACK on)."""
    from echoedge.convert.tflite_interpreter import make_interpreter

    try:
        it = make_interpreter(path, threads=threads, kind=kind)
        nodes = it._get_ops_details()
    except EchoEdgeError:
        raise
    except Exception as e:
        raise EchoEdgeError(f"{path}: the {kind} interpreter could not load the file ({first_line(e)})") from None
    delegates = [n for n in nodes if n.get("op_name") == "DELEGATE"]
    leaving = {int(t) for n in delegates for t in n.get("outputs", [])}

    def in_workspace(t: int) -> bool:
        if t < 0:
            return True  # an omitted optional output
        try:
            it.get_tensor(t)
        except ValueError:  # "Tensor data is null": held by the delegate, not in the arena
            return True
        return False

    fallback: Counter[str] = Counter()
    ops = 0
    for n in nodes:
        if n.get("op_name") == "DELEGATE":
            continue
        ops += 1
        outs = [int(t) for t in n.get("outputs", [])]
        if not all(t in leaving or in_workspace(t) for t in outs):
            fallback[str(n.get("op_name"))] += 1
    n_fallback = sum(fallback.values())
    return DelegateCoverage(ops, ops - n_fallback, n_fallback, len(delegates),
                            dict(sorted(fallback.items())), kind)


__all__ = ("DelegateCoverage", "xnnpack_coverage")
