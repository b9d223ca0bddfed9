"""The whole recipe's output-shift correction (convert/output_shift.py): measuring the shift, and
taking it out of the ExecuTorch converted graph's output offset (the only format that has it;
the .pte end to end: tests/convert/test_export_cli.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from echoedge.convert.output_shift import measure_shift, offset_buffer, reference_outputs  # noqa: E402
from echoedge.model.config import clip_spec_for, get_config  # noqa: E402
from echoedge.model.network import EchoE3Net  # noqa: E402

CFG = get_config("tiny")
SPEC = clip_spec_for(CFG, mean=35.0, std=48.0)


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape(1)[1:])).astype(np.float32)


def test_measure_shift_is_the_mean_signed_difference_per_output() -> None:
    ref = [np.array([50.0, 60.0, 70.0]), np.array([100.0, 110.0, 120.0]), np.zeros((3, 4))]
    got = [np.array([49.0, 59.5, 70.5]), np.array([101.0, 111.0, 121.0]), np.ones((3, 4))]
    s = measure_shift(got, ref, ["ef", "edv"], "test")
    assert s.outputs == ["ef", "edv"] and s.clips == 3
    assert s.shift == pytest.approx([-1.0 / 3, 1.0])
    assert s.before == pytest.approx([2.0 / 3, 1.0])
    assert s.after == pytest.approx([np.mean(np.abs(np.array([-1, -0.5, 0.5]) + 1 / 3)), 0.0])
    d = s.to_dict()
    assert d["outputs"] == ["ef", "edv"] and d["clips"] == 3 and "method" in d


def test_offset_buffer_is_e2fa_out_mean_and_none_without_one() -> None:
    model = EchoE3Net(CFG)
    assert offset_buffer(model) == ("fa.out_mean", 3)
    assert offset_buffer(torch.nn.Linear(4, 1)) is None


def test_executorch_takes_a_known_shift_out_of_the_graph_offset() -> None:
    """A copy of the model whose output offset is off by a known amount stands in for the
    converted graph: the measured shift is that amount, and after the correction the copy's
    outputs equal the model's again (the landmarks untouched throughout)."""
    from echoedge.convert.output_shift import take_out_graph_shift

    torch.manual_seed(0)
    model = EchoE3Net(CFG).eval()
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.fa.out_mean.add_(torch.tensor([1.5, -2.0, 0.25]))
    clips = _clips(3, seed=1)
    shift = take_out_graph_shift(shifted, model, clips)
    assert shift is not None and shift.outputs == ["ef", "edv", "esv"] and shift.clips == 3
    assert shift.shift == pytest.approx([1.5, -2.0, 0.25], abs=1e-4)
    assert shift.applied_to == "the program's fa.out_mean constant"
    x = _clips(2, seed=2)
    for a, b in zip(reference_outputs(shifted, x), reference_outputs(model, x)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert take_out_graph_shift(torch.nn.Linear(4, 1), torch.nn.Linear(4, 1), clips) is None


def test_taking_the_shift_out_leaves_the_callers_model_as_it_was() -> None:
    """torch.export shares buffers with the module it traced: the correction must go into the
    converted program only, not into the deploy form the caller converts again (the bug made every
    later conversion of that model in the process start from a shifted offset)."""
    from echoedge.convert.executorch import _quantize
    from echoedge.model.deploy import to_deploy_form

    torch.manual_seed(0)
    clips = _clips(4, seed=3)
    example = (torch.from_numpy(clips[:1].copy()),)
    deploy = to_deploy_form(EchoE3Net(CFG).eval(), example[0])
    before = deploy.fa.out_mean.clone()
    ep, _, shift = _quantize(deploy, torch.export.export(deploy, example), example, clips,
                             progress=False, recipe="whole")
    assert shift is not None and max(abs(s) for s in shift.shift) > 0
    assert torch.equal(deploy.fa.out_mean, before)
    program = {k: v for k, v in {**ep.state_dict, **ep.constants}.items() if k.endswith("out_mean")}
    assert len(program) == 1
    np.testing.assert_allclose(next(iter(program.values())).numpy(), before.numpy() - np.array(shift.shift),
                               rtol=0, atol=1e-5)


def test_shift_line_signs_each_output() -> None:
    from echoedge.convert.output_shift import shift_line

    assert shift_line(["ef", "edv", "esv"], [-0.3733, -0.1027, 0.1419]) == "ef -0.373, edv -0.103, esv +0.142"


def test_the_fused_measuring_copy_equals_the_converted_graph_bit_for_bit() -> None:
    """The shift is measured on a copy whose quantize -> dequantize pairs are one float expression
    (fused_qdq): the same numbers exactly, and the converted graph itself keeps its pairs."""
    from echoedge.convert.output_shift import fused_qdq
    from echoedge.model.deploy import to_deploy_form
    from echoedge.quantdebug.simulate import simulate_int8

    torch.manual_seed(0)
    clips = _clips(3, seed=4)
    deploy = to_deploy_form(EchoE3Net(CFG).eval(), torch.from_numpy(clips[:1].copy()))
    converted = simulate_int8(deploy, clips, recipe="whole")
    fused = fused_qdq(converted)

    def pairs(gm) -> int:  # static per-tensor quantize nodes (dynamic ones take .tensor params)
        return sum(1 for n in gm.graph.nodes if str(n.target) == "quantized_decomposed.quantize_per_tensor.default")

    assert pairs(converted) > 0 and pairs(fused) == 0
    for a, b in zip(reference_outputs(converted, clips), reference_outputs(fused, clips)):
        assert np.array_equal(a, b)
