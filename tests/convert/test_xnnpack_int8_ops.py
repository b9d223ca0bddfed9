"""Int8 LeakyReLU and maximum on ExecuTorch's XNNPACK route (convert/xnnpack_int8_ops.py): the
annotations the quantizer adds, and the dtypes the lowered program computes in, read back from
the written .pte (the stock partitioner leaves both float: the test checks that too, so it fails
if the widened configs stop taking effect)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")

from torch import nn  # noqa: E402


class _Net(nn.Module):
    """A float stem (1x1 conv + LeakyReLU, as Echo-E3Net's), then int8 convs with a LeakyReLU and
    a time-max of two slices between them (Pool3dAs2d's pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 1), nn.LeakyReLU(0.01))
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.LeakyReLU(0.01))
        self.head = nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x)).permute(0, 2, 3, 1)
        y = torch.maximum(y[..., :4], y[..., 4:]).permute(0, 3, 1, 2)
        return self.head(y).mean(dim=(2, 3))


def _converted(x: torch.Tensor, keep_float: tuple[str, ...] = ("stem",)
               ) -> tuple[nn.Module, torch.fx.GraphModule]:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from echoedge.convert.executorch_quantizer import _in_scope, xnnpack_quantizer

    torch.manual_seed(0)
    net = _Net().eval()
    q = xnnpack_quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    q.set_filter_function(_in_scope(None, keep_float=keep_float))
    prepared = prepare_pt2e(torch.export.export(net, (x,)).module(), q)
    for i in range(4):
        prepared(x + 0.1 * i)
    return net, convert_pt2e(prepared)


def test_leaky_relu_and_maximum_are_annotated_int8() -> None:
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    from echoedge.convert import xnnpack_int8_ops

    assert xnnpack_int8_ops._KEY == Q_ANNOTATION_KEY
    x = torch.randn(1, 1, 8, 8)
    _, converted = _converted(x)
    nodes = list(converted.graph.nodes)
    leaky = [n for n in nodes if n.target == torch.ops.aten.leaky_relu.default]
    maxes = [n for n in nodes if n.target == torch.ops.aten.maximum.default]
    assert len(leaky) == 2 and len(maxes) == 1
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    # Both LeakyReLUs' and the maximum's outputs are quantized where they are made ...
    for n in [*leaky, *maxes]:
        assert [u.target for u in n.users] == [quantize], n.name
    # ... and the int8 LeakyReLU and the maximum read int8 (dequantized) inputs; the stem's reads
    # its float conv's output.
    stem, body = leaky
    assert stem.args[0].target == torch.ops.aten.conv2d.default
    assert body.args[0].target == dequantize
    assert all(a.target == dequantize for a in maxes[0].args)


def _lower(ep: torch.export.ExportedProgram, path, stock: bool) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from echoedge.convert.xnnpack_int8_ops import partitioner

    part = XnnpackPartitioner() if stock else partitioner()
    path.write_bytes(to_edge_transform_and_lower(ep, partitioner=[part]).to_executorch().buffer)


def test_lowered_program_runs_leaky_relu_and_maximum_int8(tmp_path) -> None:
    from echoedge.convert.executorch import run_program
    from echoedge.convert.weights_pte import read_pte

    x = torch.randn(1, 1, 8, 8)
    net, converted = _converted(x)
    ep = torch.export.export(converted, (x,))
    ops = {}
    for stock in (False, True):
        path = tmp_path / f"{'stock' if stock else 'widened'}.pte"
        _lower(ep, path, stock)
        ops[stock] = read_pte(path).ops_by_dtype
    # The stem's LeakyReLU computes float (its conv is kept float); its output is quantized there.
    assert ops[False]["xnnpack.LeakyReLU"] == {"float32": 1, "int8": 1}
    assert ops[False]["xnnpack.Maximum"] == {"int8": 1}
    assert ops[True]["xnnpack.LeakyReLU"] == {"float32": 2}
    assert ops[True]["xnnpack.Maximum"] == {"float32": 1}
    # The program computes what the converted graph does (up to int8 rounding), and near fp32.
    clips = np.stack([x.numpy()[0], x.numpy()[0] * 0.5])
    got = run_program(tmp_path / "widened.pte", clips, quantized=True)[0]
    want = np.concatenate([converted(torch.from_numpy(c[None])).detach().numpy() for c in clips])
    ref = np.concatenate([net(torch.from_numpy(c[None])).detach().numpy() for c in clips])
    scale = np.abs(ref).max()
    assert np.abs(got - want).max() <= 0.05 * scale
    assert np.abs(got - ref).max() <= 0.1 * scale


def test_leaky_relu_read_by_a_float_op_stays_float() -> None:
    # With the head float, the body's LeakyReLU output reaches a float conv (through the maximum):
    # an int8 copy would add a rounding the float route does not have, so nothing changes there.
    _, converted = _converted(torch.randn(1, 1, 8, 8), keep_float=("stem", "head"))
    nodes = list(converted.graph.nodes)
    body = [n for n in nodes if n.target == torch.ops.aten.leaky_relu.default][1]
    maxes = [n for n in nodes if n.target == torch.ops.aten.maximum.default]
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    assert all(u.target != quantize for u in [*body.users, *maxes[0].users])


class _Padded(nn.Module):
    """Conv3dAs2d's zero-padded form in miniature: zero frames made with new_zeros, then cat."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.01))
        self.b = nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(torch.cat([y.new_zeros((1, 4, 8, 8)), y], dim=0)).mean(dim=(0, 2, 3))


def test_new_zeros_does_not_keep_a_leaky_relu_float() -> None:
    # new_zeros reads its input's dtype and device only, never its values.
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from echoedge.convert.executorch_quantizer import xnnpack_quantizer

    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 8)
    q = xnnpack_quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(_Padded().eval(), (x,)).module(), q)
    prepared(x)
    converted = convert_pt2e(prepared)
    leaky = next(n for n in converted.graph.nodes if n.target == torch.ops.aten.leaky_relu.default)
    assert leaky.args[0].target == torch.ops.quantized_decomposed.dequantize_per_tensor.default
    assert all(u.target == torch.ops.quantized_decomposed.quantize_per_tensor.default for u in leaky.users)
