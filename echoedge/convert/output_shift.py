"""Output-shift correction of an ExecuTorch int8 program: the mean shift int8 puts on the
regression outputs, measured on the calibration clips and taken back out of the output offset
(the whole recipe). The measurement and the record are shared with the .tflite's and Core ML
W8A8's corrections (tflite_output_shift.py, coreml_output_shift.py).

Why: on the shipped checkpoint, the whole recipe's EF error against fp32 is mostly one shared
shift, not noise. PT2E simulation of the ExecuTorch whole recipe, 24 TEST videos x 2 clips: mean
|dEF| 0.336 of which the signed mean is -0.321 (spread 0.245); the shift measured on the 32
calibration clips (TRAIN) was -0.373, and taking it out gave mean |dEF| 0.224, p95 0.429. The
written .pte (bench/bench_int8.py, an AVX-512 host): run's protocol 0.327 / 0.705 -> 0.218 /
0.425, 100 TEST videos 0.341 / 0.632 -> 0.209 / 0.459, the same figures in two separate builds.
The conv-stages recipe shows the same in simulation (0.280 -> 0.155), but its artefacts are
`run`'s default and are left as they are for now.

The .tflite gets the same correction, measured on the file itself in LiteRT and taken out of the
head's bias (tflite_output_shift.py). Two builds of the whole .tflite once seemed to differ (run's
protocol 0.344 / 0.657 in one, 0.231 / 0.497 in the other): the .pte's correction was leaking, as
it was subtracted in place from a buffer torch.export shares with the deploy form, so a .tflite
converted after the whole .pte in the same process carried the .pte's shift. The correction now
goes into the converted graph only (tests/convert/test_output_shift.py).

This is empirical bias correction (Nagel et al., 2019) applied to the last layer only: the
correction is a constant per output, so only the regression outputs whose offset the model
states get one -- Echo-E3Net's E2FA returns ``out_mean + out_scale * z`` for (EF, EDV, ESV), its
first three outputs. The converter measures the converted PT2E graph that it lowers and
subtracts the shift from that graph's ``out_mean`` constant, which E2FA's float glue adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

OFFSET_BUFFER = "out_mean"  # E2FA's per-output offset (physical units)


@dataclass
class OutputShift:
    """The mean int8 - fp32 difference of each corrected output over the calibration clips."""

    outputs: list[str]
    shift: list[float]  # subtracted from the file's offset
    clips: int
    before: list[float]  # mean |int8 - fp32| per output on the clips, as converted
    after: list[float]  # the same with the shift subtracted
    measured_on: str = ""
    applied_to: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "bias correction of the output offset: the mean int8 - fp32 difference over "
                      "the calibration clips, subtracted",
            "outputs": self.outputs, "shift": [round(s, 6) for s in self.shift], "clips": self.clips,
            "calibration_mean_abs_error": {"before": [round(v, 6) for v in self.before],
                                           "after": [round(v, 6) for v in self.after]},
            "measured_on": self.measured_on, "applied_to": self.applied_to,
        }


def shift_line(outputs: Sequence[str], shift: Sequence[float]) -> str:
    """"ef -0.373, edv -0.103, esv +0.142": the build log's and `echo-edge info`'s one line."""
    return ", ".join(f"{n} {v:+.3f}" for n, v in zip(outputs, shift))


def offset_buffer(model: Any) -> tuple[str, int] | None:
    """(buffer path, number of outputs it offsets) of the model's stated output offset, or None.

    The offset's k entries belong to the model's first k outputs (Echo-E3Net: EF, EDV, ESV).
    """
    for name, buf in model.named_buffers():
        if name.rsplit(".", 1)[-1] == OFFSET_BUFFER and buf.dim() == 1:
            return name, int(buf.numel())
    return None


def measure_shift(quantized: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                  names: Sequence[str], measured_on: str) -> OutputShift:
    """The shift of each of `names` (the first len(names) outputs, each (N,) over N clips)."""
    q = np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in quantized[:len(names)]])
    r = np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in reference[:len(names)]])
    d = q - r
    shift = d.mean(axis=1)
    return OutputShift(list(names), [float(s) for s in shift], int(d.shape[1]),
                       [float(v) for v in np.abs(d).mean(axis=1)],
                       [float(v) for v in np.abs(d - shift[:, None]).mean(axis=1)], measured_on)


def reference_outputs(model: Any, clips: np.ndarray) -> list[np.ndarray]:
    """The eager module's outputs on `clips`, one clip at a time (batch 1, as the files run).

    Not model.evaluate.eager_infer: it puts the module in eval mode, which a PT2E-converted
    graph refuses, and the converted graph is one of the two modules measured here."""
    import torch

    per_clip = []
    with torch.inference_mode():
        for clip in clips:
            per_clip.append([o.float().numpy() for o in model(torch.from_numpy(np.ascontiguousarray(clip[None])))])
    return [np.concatenate([o[k] for o in per_clip]) for k in range(len(per_clip[0]))]


def take_out_graph_shift(converted: Any, model: Any, clips: np.ndarray) -> OutputShift | None:
    """Measure a converted PT2E graph's output shift on the calibration clips against the eager
    deploy form `model` and subtract it from the graph's output-offset constant; None when the
    model states no offset (its k entries belong to the first k artefact outputs). The ExecuTorch
    converter applies it to the graph it lowers, which computes what the lowered program does up to
    kernel rounding; debug-quant's simulation of the whole recipe applies the same, so that its
    figures are the recipe's as built."""
    import torch

    from echoedge.convert.artefact import OUTPUT_NAMES

    found = offset_buffer(model)
    if found is None:
        return None
    name, k = found
    shift = measure_shift(reference_outputs(fused_qdq(converted), clips), reference_outputs(model, clips),
                          list(OUTPUT_NAMES[:k]), "the converted PT2E graph (what is lowered) on the "
                          "calibration clips, against the eager deploy form")
    # A new tensor, never sub_ in place: torch.export shares buffers with the module it traced,
    # so an in-place change shifted the caller's model too, and with it every later conversion of
    # that model in the process (bench_int8's conv-stages .pte and its .tflite files, which then
    # differed from `run`'s, where each format converts in its own worker).
    owner, _, attr = name.rpartition(".")
    module = converted.get_submodule(owner) if owner else converted
    with torch.no_grad():
        module.register_buffer(attr, converted.get_buffer(name) - torch.tensor(shift.shift, dtype=torch.float32))
    shift.applied_to = f"the program's {name} constant"
    return shift


def fused_qdq(converted: Any) -> Any:
    """A copy of a converted PT2E graph in which each quantize_per_tensor -> dequantize_per_tensor
    pair is one float expression, equal bit for bit: round(x * (1 / s)) + z, clamped, minus z,
    times s, the decomposed ops' own arithmetic without the int8 tensor between them. Only for
    measuring: the graph that is lowered keeps its pairs (XNNPACK reads them).

    Written here because the decomposed pair costs two int8 conversions and six passes over every
    activation (2.7 s per clip for the shipped checkpoint's whole recipe against 0.32 s eager) and
    torch.fake_quantize_per_tensor_affine, which is exact too, was slower still in its cachemask
    kernel; the expression takes it to 1.3 s per clip, the same outputs on every clip measured.
    """
    import copy

    if getattr(converted, "graph", None) is None:  # an eager module: nothing to fuse
        return converted
    # By name: the ops are registered only once a PT2E module has been imported.
    q_op, dq_op = (f"quantized_decomposed.{k}_per_tensor.default" for k in ("quantize", "dequantize"))
    gm = copy.deepcopy(converted)
    graph = gm.graph
    for q in list(graph.nodes):
        if q.op != "call_function" or str(q.target) != q_op or q.kwargs:
            continue
        users = list(q.users)
        params = tuple(q.args[1:5])  # scale, zero point, quant_min, quant_max
        if not users or any(str(u.target) != dq_op or u.kwargs or tuple(u.args[1:5]) != params
                            for u in users):
            continue
        for u in users:
            with graph.inserting_before(u):
                fused = graph.call_function(_qdq, (q.args[0], *params))
            u.replace_all_uses_with(fused)
            graph.erase_node(u)
        graph.erase_node(q)
    graph.lint()
    gm.recompile()
    return gm


def _qdq(x: Any, scale: float, zero_point: int, quant_min: int, quant_max: int) -> Any:
    y = x * (1.0 / scale)  # as quantize_per_tensor: the inverse scale in double, then the product
    return y.round_().add_(zero_point).clamp_(quant_min, quant_max).sub_(zero_point).mul_(scale)


__all__: Sequence[str] = ("OFFSET_BUFFER", "OutputShift", "measure_shift", "offset_buffer",
                          "fused_qdq", "reference_outputs", "shift_line", "take_out_graph_shift")
