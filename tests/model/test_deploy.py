"""The deploy form: exact 2D rewrites of 3D modules, on single ops, Echo-E3Net and a foreign net."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from echoedge.errors import EchoEdgeError
from echoedge.model.checkpoint import SHIPPED, load_checkpoint
from echoedge.model.deploy import DeployError, to_deploy_form
from echoedge.model.deploy_bn_pool import BatchNorm3dAs2d, Pool3dAs2d
from echoedge.model.deploy_check import (
    DeployCheck, assert_deploy_equal, check_deploy_equal, find_3d_ops,
)
from echoedge.model.deploy_conv import Conv3dAs2d
from echoedge.model.config import get_config
from echoedge.model.network import OUTPUT_NAMES, build_model

OP_TOL = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _deploy_diff(module: nn.Module, x: torch.Tensor) -> float:
    module.eval()
    deploy = to_deploy_form(module)
    with torch.no_grad():
        return _max_diff(module(x), deploy(x))


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.6 * torch.rand(n, generator=g) - 0.3)


def _has_3d_modules(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.nn") and type(m).__name__.endswith("3d")
               for m in model.modules())


# ---------------------------------------------------------------------------- single ops
CONV_CASES = [
    # kernel, stride, padding, dilation, groups, bias
    ((1, 3, 3), 1, (0, 1, 1), 1, 1, True),
    ((3, 3, 3), 1, 1, 1, 1, False),
    ((3, 1, 1), 1, (1, 0, 0), 1, 2, True),
    ((3, 3, 3), 1, (2, 1, 1), (2, 1, 1), 1, True),
    ((3, 3, 3), 1, 3, 3, "dw", False),
    ((3, 3, 3), (1, 2, 2), 1, 1, "dw", True),
    ((2, 3, 3), (2, 2, 2), (0, 1, 1), 1, 1, False),
    ((2, 3, 3), (2, 2, 2), (1, 1, 1), 1, 2, True),  # temporal padding, then blocks
    ((5, 5, 5), (5, 5, 5), 0, 1, 1, True),
    ((2, 3, 3), (2, 1, 1), (0, 1, 1), (2, 1, 1), 1, True),  # stride == kernel, dilated
    ((1, 1, 1), (2, 1, 1), 0, 1, 1, True),  # kernel 1, temporal stride 2: block slot 0
    ((2, 2, 2), 1, "same", 1, 1, True),  # asymmetric 'same' padding
    ((3, 3, 3), 1, "valid", (1, 2, 2), 2, False),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel,stride,padding,dilation,groups,bias", CONV_CASES,
                         ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_conv3d_rewrite_equals_reference(kernel, stride, padding, dilation, groups, bias):
    torch.manual_seed(len(str(kernel)) + len(str(stride)))
    cin, cout = 4, 6
    if groups == "dw":
        groups, cout = cin, cin
    conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias)
    x = torch.randn(2, cin, 11, 12, 13)
    deploy = to_deploy_form(conv)
    assert isinstance(deploy, Conv3dAs2d)
    with torch.no_grad():
        assert _max_diff(conv(x), deploy(x)) <= OP_TOL


def _graph_ops(module: nn.Module, x: torch.Tensor) -> set[str]:
    ep = torch.export.export(module, (x,))
    return {getattr(n.target, "__name__", str(n.target)).split(".")[0]
            for n in ep.graph.nodes if n.op == "call_function"}


# The cases whose rewrite pads time: stride 1 in time, temporal kernel > 1, padding.
PADDED_CASES = [c for c in CONV_CASES if isinstance(c[0], tuple) and c[0][0] > 1
                and c[1] in (1, (1, 2, 2)) and c[2] != "valid"]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel,stride,padding,dilation,groups,bias", PADDED_CASES,
                         ids=[f"padded{i}" for i in range(len(PADDED_CASES))])
@pytest.mark.parametrize("frames", [2, 9])
def test_specialised_conv_has_no_zero_frames_and_equals_reference(
        kernel, stride, padding, dilation, groups, bias, frames):
    torch.manual_seed(7)
    cin, cout = 4, 6
    if groups == "dw":
        groups, cout = cin, cin
    conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias).eval()
    # Frames large enough that zero frames outweigh the boundary runs' weight slices.
    x = torch.randn(2, cin, frames, 24, 20)
    deploy = to_deploy_form(conv, example=x)
    assert deploy.runs is not None
    with torch.no_grad():
        assert _max_diff(conv(x), deploy(x)) <= OP_TOL
    ops = _graph_ops(deploy, x[:1])
    assert not ops & {"full", "zeros", "new_zeros", "constant_pad_nd", "pad"}, ops
    with pytest.raises(DeployError, match=f"specialised to {frames} input frames"):
        deploy(torch.randn(1, cin, frames + 1, 24, 20))


def test_specialisation_keeps_zero_padding_where_a_frame_reads_only_padding():
    # Temporal kernel 2, dilation 3, padding 3 on 2 frames: output frame 1 reads frames -2 and 1,
    # frame 2 reads -1 and 2 (padding only) -> the zero-padded form is kept, still exact.
    conv = nn.Conv3d(2, 3, (2, 1, 1), padding=(3, 0, 0), dilation=(3, 1, 1)).eval()
    x = torch.randn(1, 2, 2, 4, 4)
    deploy = to_deploy_form(conv, example=x)
    assert deploy.runs is None
    with torch.no_grad():
        assert _max_diff(conv(x), deploy(x)) <= OP_TOL


def test_specialisation_keeps_zero_frames_where_weight_copies_would_be_larger():
    # Deep-stage shape: 2 frames of 3x3 with 64 channels; boundary weight slices (2 x 2/3 of
    # 64*64*27) dwarf two zero frames (2 x 64*9).
    conv = nn.Conv3d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 2, 3, 3)
    deploy = to_deploy_form(conv, example=x)
    assert deploy.runs is None
    with torch.no_grad():
        assert _max_diff(conv(x), deploy(x)) <= OP_TOL


def test_echo_e3net_specialised_deploy_form_has_fewer_zero_tensors_and_no_bigger_footprint():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = build_model(cfg).eval()
    x = torch.randn(cfg.input_shape(1))
    plain, special = to_deploy_form(model), to_deploy_form(model, example=x)

    def footprint(m: nn.Module) -> tuple[int, int]:
        ep = torch.export.export(m, (x,))
        fulls = [n for n in ep.graph.nodes if n.op == "call_function"
                 and getattr(n.target, "__name__", "").split(".")[0] in ("full", "zeros", "new_zeros")]
        zeros = sum(n.meta["val"].numel() for n in fulls)
        return len(fulls), zeros + sum(p.numel() for p in m.parameters())

    (n_plain, size_plain), (n_special, size_special) = footprint(plain), footprint(special)
    assert n_special < n_plain
    assert size_special <= size_plain


def test_conv3d_rewrite_accepts_unbatched_input():
    conv = nn.Conv3d(3, 5, 3, padding=1).eval()
    x = torch.randn(3, 6, 8, 8)
    with torch.no_grad():
        assert _max_diff(conv(x), to_deploy_form(conv)(x)) <= OP_TOL


def test_batchnorm_folds_into_the_conv_it_follows():
    torch.manual_seed(2)
    seq = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8),
                        nn.LeakyReLU(0.1))
    _randomise_bn(seq)
    deploy = to_deploy_form(seq.eval())
    assert isinstance(deploy[0], Conv3dAs2d) and isinstance(deploy[1], nn.Identity)
    assert isinstance(deploy[0].post[0], nn.LeakyReLU)  # activation runs inside the rewrite
    with torch.no_grad():
        x = torch.randn(2, 3, 6, 10, 10)
        assert _max_diff(seq(x), deploy(x)) <= OP_TOL


class _ConvUsedTwice(nn.Module):
    """The conv output feeds BN and the sum: BN must not be folded; BN after add is unfoldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0))
        self.bn = nn.BatchNorm3d(4)
        self.bn_after_add = nn.BatchNorm3d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn_after_add(self.bn(y) + y)


def test_batchnorm_that_cannot_be_folded_becomes_batchnorm2d():
    torch.manual_seed(3)
    m = _ConvUsedTwice()
    _randomise_bn(m)
    deploy = to_deploy_form(m.eval())
    assert isinstance(deploy.bn, BatchNorm3dAs2d) and isinstance(deploy.bn_after_add,
                                                                 BatchNorm3dAs2d)
    x = torch.randn(2, 4, 5, 6, 6)
    with torch.no_grad():
        assert _max_diff(m(x), deploy(x)) <= OP_TOL


POOL_CASES = [
    nn.MaxPool3d((1, 2, 2)),
    nn.MaxPool3d(2),
    nn.MaxPool3d((2, 3, 3), (2, 2, 2), (0, 1, 1)),
    nn.MaxPool3d((1, 2, 2), (2, 2, 2)),
    nn.MaxPool3d((3, 2, 2), (3, 2, 2), ceil_mode=True),
    nn.AvgPool3d(2),
    nn.AvgPool3d((3, 3, 3), (3, 2, 2), (0, 1, 1), count_include_pad=False),
    nn.AvgPool3d((2, 3, 3), (2, 2, 2), (0, 1, 1), divisor_override=5),
    nn.AvgPool3d((2, 1, 1)),
    nn.AvgPool3d((2, 1, 1), divisor_override=3),
]


@pytest.mark.parametrize("pool", POOL_CASES, ids=[f"pool{i}" for i in range(len(POOL_CASES))])
def test_pool3d_rewrite_equals_reference(pool):
    x = torch.randn(2, 3, 12, 11, 10)
    deploy = to_deploy_form(pool)
    assert isinstance(deploy, Pool3dAs2d)
    with torch.no_grad():
        assert _max_diff(pool(x), deploy(x)) <= OP_TOL


# ---------------------------------------------------------------------------- unsupported ops
class _Wrapped(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(2, 2, 1), inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("inner,op", [
    (nn.AdaptiveMaxPool3d((2, 1, 1)), "AdaptiveMaxPool3d"),
    (nn.ConvTranspose3d(2, 2, 2, stride=2), "ConvTranspose3d"),
    (nn.AdaptiveAvgPool3d((1, 2, 2)), "AdaptiveAvgPool3d"),
    (nn.InstanceNorm3d(2), "InstanceNorm3d"),
    (nn.MaxPool3d((3, 2, 2), (2, 2, 2)), "MaxPool3d"),
    (nn.AvgPool3d((2, 2, 2), padding=1), "AvgPool3d"),
    (nn.Conv3d(2, 2, 3, padding=1, padding_mode="reflect"), "Conv3d"),
], ids=["adaptivemax_t2", "convtranspose", "adaptivepool_hw2", "instancenorm", "maxpool_overlap",
        "avgpool_tpad", "reflect_pad"])
def test_unsupported_module_raises_deploy_error_naming_path_and_op(inner, op):
    with pytest.raises(DeployError) as err:
        to_deploy_form(_Wrapped(inner))
    assert "body.1" in str(err.value) and op in str(err.value)
    assert isinstance(err.value, EchoEdgeError)


class _FunctionalConv3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 2, 3, 3, 3))
        self.inner = _Wrapped(nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(self.inner(x), self.weight, padding=1)


def test_functional_conv3d_is_caught_by_the_graph_scan():
    m = _FunctionalConv3d().eval()
    x = torch.randn(1, 2, 4, 6, 6)
    with pytest.raises(DeployError, match=r"conv3d"):
        to_deploy_form(m, example=x)
    # The root module issued the call: the message names it, and the rewritten conv is clean.
    assert find_3d_ops(to_deploy_form(m), x) == ["<root> [_FunctionalConv3d] (conv3d.default)"]


def test_view_on_a_conv_output_falls_back_to_contiguous_outputs():
    class ViewHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(2, 3, (1, 3, 3), padding=(0, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).view(x.shape[0], -1)

    m = ViewHead().eval()
    deploy = to_deploy_form(m, example=torch.randn(2, 2, 3, 5, 5))
    assert deploy.deploy_check.passed and deploy.conv.contiguous_out


# ---------------------------------------------------------------------------- a foreign network
class _R2Plus1DNet(nn.Module):
    """C3D stem, two 3D max pools, a residual (2+1)D block with a shared ReLU, mean, Linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, 8, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(8), nn.ReLU(inplace=True))
        self.pool1 = nn.MaxPool3d((1, 2, 2))
        self.conv2 = nn.Conv3d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(16)
        self.pool2 = nn.MaxPool3d((2, 2, 2))
        self.spatial = nn.Conv3d(16, 12, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn_s = nn.BatchNorm3d(12)
        self.temporal = nn.Conv3d(12, 16, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t = nn.BatchNorm3d(16)
        self.relu = nn.ReLU()  # shared, torchvision-style: must not be absorbed into one conv
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.stem(x))
        x = self.pool2(self.relu(self.bn2(self.conv2(x))))
        y = self.relu(self.bn_s(self.spatial(x)))
        x = self.relu(x + self.bn_t(self.temporal(y)))
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_foreign_r2plus1d_network_deploys_equal():
    torch.manual_seed(4)
    net = _R2Plus1DNet()
    _randomise_bn(net)
    net.eval()
    x = torch.randn(2, 3, 8, 32, 32)
    deploy = to_deploy_form(net, example=x)
    assert not _has_3d_modules(deploy)
    assert isinstance(deploy.relu, nn.ReLU)
    check = deploy.deploy_check
    assert check.passed and set(check.max_abs_diff) == {"out0"}
    assert check.max_abs_diff["out0"] <= OP_TOL, check.summary()


# ---------------------------------------------------------------------------- Echo-E3Net
@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(5)
    model = build_model("tiny")
    _randomise_bn(model, seed=5)
    for m in model.modules():  # default init: outputs that depend strongly on the input
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    model.eval()
    clips = torch.randn(2, *model.cfg.input_shape(1)[1:])
    reference_state = {k: v.clone() for k, v in model.state_dict().items()}
    deploy = to_deploy_form(model, example=clips)
    return model, deploy, clips, reference_state


def test_tiny_deploy_equals_reference(tiny_pair):
    model, deploy, clips, _ = tiny_pair
    check = assert_deploy_equal(model, deploy, clips)
    assert isinstance(check, DeployCheck) and check.passed
    assert set(check.max_abs_diff) == set(OUTPUT_NAMES)
    assert check.max_abs_ef_diff <= 1e-3, check.summary()
    assert max(check.max_abs_diff.values()) <= 1e-4, check.summary()
    assert deploy.deploy_check.max_abs_diff.keys() == check.max_abs_diff.keys()


def test_tiny_deploy_form_has_no_3d_module_or_op(tiny_pair):
    model, deploy, clips, _ = tiny_pair
    assert _has_3d_modules(model) and not _has_3d_modules(deploy)
    assert find_3d_ops(deploy, clips[:1]) == []
    assert len(find_3d_ops(model, clips[:1])) > 0


def test_reference_is_unchanged_by_the_rewrite(tiny_pair):
    model, deploy, _, reference_state = tiny_pair
    state = model.state_dict()
    assert state.keys() == reference_state.keys()
    assert all(torch.equal(state[k], reference_state[k]) for k in state)
    assert deploy is not model and isinstance(model.encoder.stem[0], nn.Conv3d)


def test_check_reports_a_broken_deploy_form(tiny_pair):
    model, deploy, clips, _ = tiny_pair
    import copy

    broken = copy.deepcopy(deploy)
    with torch.no_grad():
        broken.fa.mlp[-1].bias.add_(0.1)
    check = check_deploy_equal(model, broken, clips)
    assert not check.passed and check.max_abs_ef_diff > 1e-3
    with pytest.raises(DeployError, match=r"ef .* edv"):
        assert_deploy_equal(model, broken, clips)


def test_paper_checkpoint_deploys_equal_within_budget():
    start = time.perf_counter()
    model = load_checkpoint(SHIPPED).model
    torch.manual_seed(6)
    clip = torch.randn(model.cfg.input_shape(1))
    deploy = to_deploy_form(model, example=clip)
    elapsed = time.perf_counter() - start
    check = deploy.deploy_check
    assert check.passed and check.max_abs_ef_diff <= 1e-3, check.summary()
    assert not _has_3d_modules(deploy)
    assert elapsed < 60, f"paper deploy + check + export took {elapsed:.1f} s"
