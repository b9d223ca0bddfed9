"""EchoNet-Dynamic's video ResNets through every converter, scaled down (4 wide, 8 x 32 x 32).

Random weights with non-trivial BatchNorm statistics and an EF head that follows its input, so
a converter that mixed up frames or channels would move EF. Each artefact is run again in its
own runtime (the Runner interface) and compared with the eager model: fp32 within float
rounding, int8 / w8 within a stated bound.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from echoedge.data.clipspec import ClipSpec  # noqa: E402
from echoedge.model.video_resnet import EFOutputs, build_video_resnet  # noqa: E402

SPEC = ClipSpec(frames=8, period=1, height=32, width=32, channels=3)
# |dEF| bounds in EF points (EF here spreads over ~+-10 points around 55.6): fp32 is float
# rounding; int8 / w8 measured at 0.02-0.2 on these weights, bounded with margin.
FP32_BOUND = 0.01
INT8_BOUND = 1.0


class FakeCalibration:
    """What the converters read of echoedge.calibration.CalibrationSet: .clips and .id."""

    def __init__(self, clips: np.ndarray) -> None:
        self.clips, self.id, self.manifest = clips, "test-calibration", {}

    def __len__(self) -> int:
        return len(self.clips)


def tiny_video_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_video_resnet(arch, base_width=4).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        net.fc.weight.normal_(0.0, 2.0)  # EF follows the features, not only the 55.6 bias
    return EFOutputs(net).eval()


def _clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SPEC.input_shape()[1:])).astype(np.float32)


def _convert_and_check(fmt: str, precisions: tuple[str, ...], tmp_path, arch: str = "r2plus1d_18"):
    from echoedge.convert.artefact import read_manifest, verify_artefact
    from echoedge.convert.export import _converter
    from echoedge.model.deploy import to_deploy_form
    from echoedge.validate.runner import open_runner

    model = tiny_video_model(arch)
    deploy = to_deploy_form(model, example=torch.from_numpy(_clips(2, 1)))
    calibration = FakeCalibration(_clips(8, 2))
    test = _clips(3, 3)
    with torch.no_grad():
        ref = model(torch.from_numpy(test))[0].numpy()
    assert ref.shape == (3,) and np.ptp(ref) > 0.5  # EF depends on the clip
    for precision in precisions:
        bound = FP32_BOUND if precision == "fp32" else INT8_BOUND
        folder = _converter(fmt)(deploy, SPEC, tmp_path / f"{fmt}-{precision}", precision,
                                 calibration if precision == "int8" else None, "0" * 64,
                                 progress=False)
        verify_artefact(folder)
        m = read_manifest(folder)
        assert [t.name for t in m.outputs] == ["ef"]  # EF only: nothing else is made up
        runner = open_runner(folder)
        try:
            outs = runner(test)
        except Exception as e:  # Core ML off macOS runs through the MIL interpreter
            pytest.fail(f"{fmt} {precision}: {e}")
        finally:
            runner.close()
        assert len(outs) == 1
        got = np.asarray(outs[0]).reshape(-1)
        assert np.abs(got - ref).max() <= bound, (fmt, precision, got, ref)


@pytest.mark.slow  # ~90 s alone on 2 cores, most of it the int8 program
def test_executorch_fp32_and_int8(tmp_path):
    pytest.importorskip("executorch")
    _convert_and_check("executorch", ("fp32", "int8"), tmp_path)


def test_tflite_fp32_and_int8(tmp_path):
    pytest.importorskip("onnx2tf")
    _convert_and_check("tflite", ("fp32", "int8"), tmp_path)


def test_coreml_fp32_and_w8(tmp_path):
    pytest.importorskip("coremltools")
    _convert_and_check("coreml", ("fp32", "w8"), tmp_path)
