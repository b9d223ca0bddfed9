"""Mixed precision to an EF budget: the greedy search stops as soon as the budget holds, fails
clearly when it cannot, and the emitted artefacts really keep the chosen layers float.

The search logic is tested on a scripted evaluator (exact step counts); the simulation-backed
search on a small network with one deliberately fragile conv (Core ML W8 scheme: cheap to
simulate); the ExecuTorch emit on the same network (the .pte's EF follows the keep-float
simulation, not the all-int8 one); on the tiny Echo-E3Net deploy form, marked slow, the TFLite
emit and (no lowering) the kept units' convs leaving the ExecuTorch quantizer's graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")

from echoedge.convert.artefact import read_manifest  # noqa: E402
from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.errors import EchoEdgeError  # noqa: E402
from echoedge.quantdebug.budget import (  # noqa: E402
    BudgetError, CandidatePoint, emit_mixed, greedy_budget, pareto_front, pareto_plot, search_budget,
)
from echoedge.quantdebug.simulate import ef_per_video, load_videos, simulate  # noqa: E402

SPEC = ClipSpec(frames=4, height=16, width=16)


@dataclass
class FakeCalibration:
    clips: np.ndarray
    id: str = "calib-budget-test"
    manifest: dict = field(default_factory=dict)


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape(1)[1:])).astype(np.float32)


# ------------------------------------------------------------------------- the greedy search
ERRORS = {(): 1.0, ("a",): 0.5, ("a", "b"): 0.2, ("a", "b", "c"): 0.1}


def _scripted():
    calls = []

    def evaluate(kept):
        calls.append(tuple(kept))
        e = ERRORS[tuple(kept)]
        return e, 2 * e
    return evaluate, calls


def test_search_stops_as_soon_as_the_budget_holds():
    evaluate, calls = _scripted()
    kept, steps = greedy_budget(evaluate, ["a", "b", "c"], budget=0.3)
    assert kept == ["a", "b"]
    assert calls == [(), ("a",), ("a", "b")]  # "c" is never tried
    assert [s.mean_abs_def for s in steps] == [1.0, 0.5, 0.2]


def test_no_unit_float_when_int8_already_meets_the_budget():
    evaluate, calls = _scripted()
    kept, steps = greedy_budget(evaluate, ["a", "b", "c"], budget=1.0)
    assert kept == [] and calls == [()]


def test_search_fails_clearly_when_the_budget_cannot_be_met():
    evaluate, calls = _scripted()
    with pytest.raises(BudgetError, match=r"EF budget 0.05 cannot be met.*3 of 3.*0.100"):
        greedy_budget(evaluate, ["a", "b", "c"], budget=0.05)
    assert len(calls) == 4
    evaluate, calls = _scripted()
    with pytest.raises(BudgetError, match="1 of 3 candidate"):
        greedy_budget(evaluate, ["a", "b", "c"], budget=0.3, max_float=1)
    assert len(calls) == 2


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan")])
def test_budget_must_be_positive(budget):
    evaluate, _ = _scripted()
    with pytest.raises(EchoEdgeError, match="positive"):
        greedy_budget(evaluate, ["a"], budget=budget)


def test_memory_limit_passes_over_a_unit_and_keeps_the_next():
    means = {(): 0.9, ("b",): 0.2}
    memory = {(): 10.0, ("a",): 30.0, ("b",): 12.0}
    log: list[str] = []
    kept, steps = greedy_budget(lambda k: (means[tuple(k)], 1.0), ["a", "b", "c"], budget=0.3, log=log.append,
                                fits=lambda k: (memory[tuple(k)] <= 20, memory[tuple(k)]))
    assert kept == ["b"] and [s.memory_mb for s in steps] == [10.0, 12.0]
    assert any("a stays int8" in line and "30.0 MB" in line for line in log)


def test_memory_limit_that_nothing_meets_fails_clearly():
    with pytest.raises(BudgetError, match="every unit int8 already needs 50.0 MB"):
        greedy_budget(lambda k: (0.1, 0.1), ["a"], budget=0.3, fits=lambda k: (False, 50.0))
    with pytest.raises(BudgetError, match=r"stayed int8 for the memory limit \(a, b\)"):
        greedy_budget(lambda k: (0.9, 0.9), ["a", "b"], budget=0.3,
                      fits=lambda k: (not k, 10.0 + 20 * len(k)))


def test_activation_estimate_is_the_liveness_peak():
    """x (1,1,8,8) -> conv (4 ch) -> relu -> conv (2 ch), float32: the peak is the relu step, where
    the conv output (1024 B) and the relu output (1024 B) are alive at once."""
    from torch import nn

    from echoedge.quantdebug.memory_budget import estimate_activation_bytes

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    ep = torch.export.export(net, (torch.zeros(1, 1, 8, 8),))
    assert estimate_activation_bytes(ep.module()) == 2048


def test_int8_activations_estimate_below_float(fragile_model):
    """ExecuTorch int8 recipe: observed outputs count 1 byte; keeping a conv float widens its output."""
    from echoedge.quantdebug.memory_budget import memory_of_config

    model, clips = fragile_model(), _clips(2, seed=3)
    fp32 = memory_of_config(model, clips, "coreml", "w8")
    int8 = memory_of_config(model, clips, "executorch", "int8")
    conv2_float = memory_of_config(model, clips, "executorch", "int8", ["conv2"])
    assert int8 < conv2_float <= fp32


# ------------------------------------------------------------------- in the simulation
@pytest.fixture(scope="module")
def setup(synth_root, fragile_model):
    model = fragile_model()
    videos = load_videos(synth_root, SPEC, "VAL", videos=3, clips_per_video=1)
    return model, videos, ef_per_video(model, videos)


def test_simulated_search_keeps_the_fragile_layer_float(setup):
    model, videos, ref = setup
    r = search_budget(model, videos, None, 0.01, ["conv2", "conv3", "lm"], "coreml", "w8",
                      ef_reference=ref)
    assert r.steps[0].mean_abs_def > 0.01  # all-W8 misses the budget...
    assert r.kept_float == ["conv2"] and r.evaluations == 2  # ...keeping conv2 float meets it
    assert r.mean_abs_def <= 0.01 and r.videos == videos.names


def test_search_reuses_an_all_but_sweep_on_the_same_videos(setup):
    from echoedge.quantdebug.sensitivity import sensitivity_sweep

    model, videos, ref = setup
    sweep = sensitivity_sweep(model, videos, None, "coreml", "w8", "all-but", ef_reference=ref)
    r = search_budget(model, videos, None, 0.01, sweep, "coreml", "w8", ef_reference=ref)
    assert r.kept_float == ["conv2"] and len(r.steps) == 2
    assert r.evaluations == 0  # both configurations were measured by the sweep
    assert r.steps[1].mean_abs_def == sweep.units[0].mean_abs_def


def test_simulated_search_fails_when_the_candidates_run_out(setup):
    model, videos, ref = setup
    with pytest.raises(BudgetError, match="cannot be met"):
        search_budget(model, videos, None, 0.01, ["conv3", "lm"], "coreml", "w8", ef_reference=ref)
    with pytest.raises(EchoEdgeError, match="does not quantize: conv9"):
        search_budget(model, videos, None, 0.01, ["conv9"], "coreml", "w8", ef_reference=ref)


# ------------------------------------------------------------------------------ emitting
@pytest.fixture(scope="module")
def mixed_pte(tmp_path_factory, fragile_model):
    model = fragile_model()
    calib = FakeCalibration(_clips(8, seed=1))
    out = emit_mixed(model, SPEC, "executorch", ["conv2"], tmp_path_factory.mktemp("mixed") / "et",
                     calib, "b" * 64, progress=False)
    return model, calib, out


def test_mixed_executorch_artefact_records_and_keeps_the_float_layer(mixed_pte):
    from echoedge.validate.runner import open_runner

    model, calib, folder = mixed_pte
    recipe = read_manifest(folder).details["quantization"]["recipe"]
    assert recipe["kept_float"] == ["conv2"] and read_manifest(folder).precision == "int8"
    x = _clips(4, seed=9)
    with open_runner(folder) as r:
        ef = r(x)[0]
    def sim_ef(sim):  # the simulated graph is exported at batch 1, like the program
        with torch.no_grad():
            return np.concatenate([sim(torch.from_numpy(c[None]))[0].numpy() for c in x])

    ef_keep = sim_ef(simulate(model, "executorch", "int8", calib.clips, keep_float=["conv2"]))
    ef_all = sim_ef(simulate(model, "executorch", "int8", calib.clips))
    # The program computes the keep-float configuration: far closer to its simulation than to
    # the all-int8 one (conv2 in int8 moves EF by a lot on this network).
    assert np.abs(ef - ef_keep).max() < 0.2 * np.abs(ef - ef_all).max()


def test_keep_float_is_checked_before_converting(tmp_path, fragile_model):
    model = fragile_model()
    calib = FakeCalibration(_clips(8, seed=1))
    with pytest.raises(EchoEdgeError, match="does not have: convX"):
        emit_mixed(model, SPEC, "executorch", ["convX"], tmp_path / "x", calib, "b" * 64, progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(EchoEdgeError, match="mixed precision applies"):
        emit_mixed(model, SPEC, "tflite", ["conv2"], tmp_path / "y", calib, "b" * 64, precision="fp32")


def test_mixed_core_ml_w8_keeps_the_unit_weights_fp16(tmp_path, fragile_model):
    """Core ML per-op selection: the kept unit's weight stays an fp16 const, the others int8."""
    pytest.importorskip("coremltools")
    from echoedge.mil.program import load_mil_program

    out = emit_mixed(fragile_model(), SPEC, "coreml", ["conv2"], tmp_path / "cm", None, "b" * 64,
                     progress=False)
    q = read_manifest(out).details["quantization"]
    assert q["kept_float"] == ["conv2"] and q["kept_float_weights"] == ["conv2.weight"]
    prog, _ = load_mil_program(out / "model.mlpackage")
    ops = {op.name: op for op in prog.functions["main"].operations}
    dequantized = {op.name for op in ops.values() if op.op_type == "constexpr_affine_dequantize"}
    assert ops["p_conv2_weight_to_fp16"].op_type == "const"  # float, straight into the conv
    assert any(n.startswith("p_conv3_weight") for n in dequantized)  # the rest is W8


@pytest.mark.slow
def test_tiny_echo_e3net_mixed_tflite_denylists_the_unit(tmp_path):
    """TFLite: the kept unit's convs are denylisted nodes (float), every other in-scope conv int8."""
    pytest.importorskip("onnx2tf")
    from echoedge.model.config import get_config
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import build_model
    from echoedge.quantdebug.simulate import quant_units

    cfg = get_config("tiny")
    torch.manual_seed(0)
    spec = ClipSpec(frames=cfg.frames, height=cfg.height, width=cfg.width)
    clips = np.random.default_rng(2).standard_normal((4, *spec.input_shape(1)[1:])).astype(np.float32)
    deploy = to_deploy_form(build_model(cfg).eval(), example=torch.from_numpy(clips[:1]))
    units = quant_units(deploy, "tflite", "int8")
    keep = [units[1].name]  # a CNN conv of the tiny config (several deploy convs)
    out = emit_mixed(deploy, spec, "tflite", keep, tmp_path / "tfl", FakeCalibration(clips), "c" * 64,
                     progress=False)
    scope = read_manifest(out).details["quantization"]["scope"]
    assert scope["kept_float"] == keep and scope["kept_float_convs"] == len(units[1].layers)
    # The op check passed (every remaining in-scope conv int8) and the kept convs are float.
    assert scope["int8_heavy_ops_in_scope"] == sum(len(u.layers) for u in units) - len(units[1].layers)
    assert sum(scope["float_by_recipe"].values()) >= len(units[1].layers)


@pytest.mark.slow
def test_tiny_echo_e3net_keep_float_reaches_the_quantizer():
    """The tiny Echo-E3Net deploy form with two of its seven int8 units float: the per-channel
    weight dequantizations of their deploy convs are gone from the graph the converter lowers.

    The real mixed .pte of the same weights with the same two units float (manifest records them,
    the program runs, its EF is measured) is emitted once, through `echo-edge debug-quant`, in
    tests/quantdebug/test_job.py; lowering it here too cost another ~1.5 min on 2 cores.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from echoedge.convert.executorch_quantizer import quantizer_for
    from echoedge.model.config import get_config
    from echoedge.model.deploy import to_deploy_form
    from echoedge.model.network import build_model
    from echoedge.quantdebug.simulate import quant_units

    cfg = get_config("tiny")
    torch.manual_seed(0)
    ref = build_model(cfg).eval()
    spec = ClipSpec(frames=cfg.frames, height=cfg.height, width=cfg.width)
    clips = np.random.default_rng(2).standard_normal((4, *spec.input_shape(1)[1:])).astype(np.float32)
    deploy = to_deploy_form(ref, example=torch.from_numpy(clips[:1]))
    units = quant_units(deploy)
    keep = [units[0].name, units[1].name]  # the first two units: their deploy convs stay float
    _, recipe = quantizer_for(deploy, keep_float=keep)
    assert recipe["kept_float"] == keep

    def weight_dqs(keep_float):
        ep = torch.export.export(deploy, (torch.from_numpy(clips[:1]),))
        q, _ = quantizer_for(deploy, keep_float=keep_float)
        prepared = prepare_pt2e(ep.module(), q)
        prepared(torch.from_numpy(clips[:1]))
        g = convert_pt2e(prepared).graph
        return sum(1 for n in g.nodes if "dequantize_per_channel" in str(n.target))

    assert weight_dqs([]) - weight_dqs(keep) == sum(len(u.layers) for u in units[:2]) > 0


# ------------------------------------------------------------------------------ Pareto
def _pt(name, err, lat, size):
    return CandidatePoint(name, None, "executorch", "int8", [], err, err, lat, size, "x")


def test_pareto_front_and_plot(tmp_path):
    pts = [_pt("fast-bad", 0.5, 10, 1), _pt("slow-good", 0.1, 30, 4), _pt("dominated", 0.6, 40, 5),
           _pt("mid", 0.2, 20, 2), _pt("no-latency", 0.0, None, 1)]
    assert {p.name for p in pareto_front(pts)} == {"fast-bad", "slow-good", "mid"}
    # Smaller but otherwise beaten: on the (error, latency, size) front, not on the plotted plane's.
    pts.append(_pt("small", 0.21, 21, 0.5))
    assert "small" in {p.name for p in pareto_front(pts)}
    assert {p.name for p in pareto_front(pts, size=False)} == {"fast-bad", "slow-good", "mid"}
    out = pareto_plot(pts, tmp_path / "p.png", budget=0.25)
    assert out.read_bytes()[:4] == b"\x89PNG"
