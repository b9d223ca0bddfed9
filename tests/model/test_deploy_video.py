"""The deploy form of EchoNet-Dynamic's video ResNets: overlapping strided Conv3d, global 3D
pools and torchvision's residual blocks, rewritten exactly with step-1 slices and no F.pad."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from echoedge.model.deploy import specialise_frames, to_deploy_form
from echoedge.model.deploy_bn_pool import GlobalPool3dAs2d
from echoedge.model.deploy_check import find_3d_ops
from echoedge.model.deploy_conv import Conv3dAs2d
from echoedge.model.deploy_frames import TimeWindow
from echoedge.model.video_resnet import ARCHITECTURES, build_video_resnet

OP_TOL = 1e-5


def _graph_ops(module: nn.Module, x: torch.Tensor) -> list[torch.fx.Node]:
    ep = torch.export.export(module, (x,))
    return [n for n in ep.graph.nodes if n.op == "call_function"]


def _backend_unfriendly(nodes: list[torch.fx.Node]) -> list[str]:
    """Strided slices, padding ops and reductions the backends do not delegate."""
    bad = []
    for n in nodes:
        name = getattr(n.target, "__name__", str(n.target)).split(".")[0]
        if name == "slice" and len(n.args) > 4 and n.args[4] != 1:
            bad.append(n.format_node())
        if name in ("constant_pad_nd", "pad", "reflection_pad3d", "replication_pad3d", "mean",
                    "amax", "max", "adaptive_avg_pool3d", "adaptive_max_pool3d", "as_strided"):
            bad.append(n.format_node())
    return bad


# ---------------------------------------------------------------------------- strided Conv3d
# (temporal kernel, stride, padding, dilation): every overlapping strided window, and frame
# counts that are and are not multiples of the stride.
GRID = [(k, s, p, d) for k, s, p, d in itertools.product((2, 3, 4), (2, 3), (0, 1, 2), (1, 2))
        if k != s or d != 1]  # kernel == stride (undilated) is the block path, tested elsewhere
FRAMES = (5, 8, 9)


def _conv(k: int, s: int, p: int, d: int, groups: int = 1) -> nn.Conv3d:
    cin = 4
    cout = cin if groups == cin else 6
    return nn.Conv3d(cin, cout, (k, 3, 1), stride=(s, 2, 1), padding=(p, 1, 0),
                     dilation=(d, 1, 1), groups=groups, bias=True).eval()


@pytest.mark.parametrize("k,s,p,d", GRID, ids=[f"k{k}s{s}p{p}d{d}" for k, s, p, d in GRID])
def test_general_strided_conv3d_equals_reference(k, s, p, d):
    torch.manual_seed(k * 100 + s * 10 + p + d)
    for groups in (1, 4):  # stacked taps, and the per-tap sum of depthwise convs
        conv = _conv(k, s, p, d, groups)
        for t in FRAMES:
            if TimeWindow(k, s, d, p, p).out_frames(t) < 1:
                continue
            x = torch.randn(2, 4, t, 7, 5)
            with torch.no_grad():
                ref = conv(x)
                plain = to_deploy_form(conv)
                assert plain.runs is None
                assert (ref - plain(x)).abs().max().item() <= OP_TOL, (groups, t)
                special = to_deploy_form(conv)
                specialise_frames(special, x[:1])
                assert (ref - special(x)).abs().max().item() <= OP_TOL, (groups, t)


def test_strided_runs_drop_every_zero_frame_where_they_fit():
    # EchoNet-Dynamic's temporal downsampling (kernel 3, stride 2, padding 1) over 16 and 15
    # frames (15: the block view would be zero-extended by a frame), and a dilated kernel 4.
    for conv, t in [(nn.Conv3d(8, 6, (3, 1, 1), (2, 1, 1), (1, 0, 0)), 16),
                    (nn.Conv3d(8, 6, (3, 1, 1), (2, 1, 1), (1, 0, 0)), 15),
                    (nn.Conv3d(8, 6, (4, 3, 3), (3, 1, 1), (2, 1, 1), (2, 1, 1)), 17),
                    (nn.Conv3d(8, 6, (3, 1, 1), (2, 1, 1), (0, 0, 0)), 9)]:
        conv.eval()
        x = torch.randn(1, 8, t, 12, 12)
        deploy = to_deploy_form(conv, example=x)
        assert deploy.runs is not None, (conv, t)
        nodes = _graph_ops(deploy, x)
        names = {getattr(n.target, "__name__", "").split(".")[0] for n in nodes}
        assert not names & {"full", "zeros", "new_zeros"}, names
        assert _backend_unfriendly(nodes) == []
        with torch.no_grad():
            assert (conv(x) - deploy(x)).abs().max().item() <= OP_TOL


def test_strided_conv_keeps_zero_frames_where_no_block_view_of_real_frames_fits():
    # Depthwise (a sum over taps, each tap's conv run once over the output frames that read it),
    # 3 frames, kernel 3, stride 2, padding 1: tap 1 reads frames 0 and 2, and a block view of
    # two blocks of 2 needs 4 real frames. The zero-extended form is kept, still exact.
    conv = nn.Conv3d(2, 2, (3, 1, 1), (2, 1, 1), (1, 0, 0), groups=2).eval()
    x = torch.randn(1, 2, 3, 4, 4)
    deploy = to_deploy_form(conv, example=x)
    assert deploy.runs is None
    assert _backend_unfriendly(_graph_ops(deploy, x)) == []
    with torch.no_grad():
        assert (conv(x) - deploy(x)).abs().max().item() <= OP_TOL


# ---------------------------------------------------------------------------- global pools
@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool3d(1), nn.AdaptiveAvgPool3d((1, 1, 1)),
                                  nn.AdaptiveMaxPool3d(1)], ids=["avg", "avg_tuple", "max"])
@pytest.mark.parametrize("t", [1, 3, 8])
def test_global_pool3d_is_time_slices_then_a_2d_global_pool(pool, t):
    x = torch.randn(2, 5, t, 7, 6)
    deploy = to_deploy_form(pool)
    assert isinstance(deploy, GlobalPool3dAs2d)
    with torch.no_grad():
        assert (pool(x) - deploy(x)).abs().max().item() <= OP_TOL
        assert (pool(x[0]) - deploy(x[0])).abs().max().item() <= OP_TOL  # unbatched
    nodes = _graph_ops(deploy, x[:1])
    names = {getattr(n.target, "__name__", "").split(".")[0] for n in nodes}
    assert names & {"avg_pool2d", "max_pool2d", "max_pool2d_with_indices"}, names
    assert _backend_unfriendly(nodes) == []


# ---------------------------------------------------------------------------- the networks
def _randomised(arch: str, seed: int) -> nn.Module:
    """A scaled-down model with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = build_video_resnet(arch, base_width=8)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
    with torch.no_grad():  # a head whose EF moves with the features (torchvision's is ~0.01)
        model.fc.weight.normal_(0.0, 1.0 / model.fc.in_features ** 0.5, generator=g)
    return model.eval()


def _pooled(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """The globally pooled features fc reads, (B, C)."""
    seen = []
    hook = model.avgpool.register_forward_hook(lambda m, a, out: seen.append(out.flatten(1)))
    try:
        with torch.no_grad():
            model(clips)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_video_resnet_deploy_form_equals_reference(arch):
    model = _randomised(arch, seed=ARCHITECTURES.index(arch))
    reference_state = {k: v.clone() for k, v in model.state_dict().items()}
    clips = torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(9))
    deploy = to_deploy_form(model, example=clips)  # checked equal, graph scanned for 3D ops
    check = deploy.deploy_check
    assert check.passed and check.max_abs_diff["out0"] <= 1e-4, check.summary()
    # The pooled features too: EF (~55 + a small term) would hide a wrong feature in rounding.
    ref_feat, dep_feat = _pooled(model, clips), _pooled(deploy, clips)
    assert (ref_feat - dep_feat).abs().max().item() <= 1e-5 * max(1.0, ref_feat.abs().max().item())
    assert (ref_feat[0] - ref_feat[1]).abs().max().item() > 1e-2  # features follow the clip
    with torch.no_grad():
        ef = model(clips)[:, 0]

    # No 3D module or op is left, and nothing a backend would not delegate.
    assert not [m for m in deploy.modules() if type(m).__name__.endswith("3d")
                and type(m).__module__.startswith("torch.nn")]
    assert isinstance(deploy.avgpool, GlobalPool3dAs2d)
    nodes = _graph_ops(deploy, clips[:1])
    assert find_3d_ops(deploy, clips[:1]) == [] and _backend_unfriendly(nodes) == []
    strided = [p for p, m in deploy.named_modules()
               if isinstance(m, Conv3dAs2d) and m.window.stride > 1 and m.window.kernel > 1]
    assert bool(strided) == (arch != "mc3_18")  # MC3 never strides in time with kernel > 1

    # torchvision's block survives: in-place ReLU after `out += identity`, and the reference
    # is untouched (its in-place ops ran on its own tensors).
    relu = deploy.layer2[0].relu
    assert isinstance(relu, nn.ReLU) and relu.inplace
    state = model.state_dict()
    assert all(torch.equal(state[k], reference_state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(model(clips)[:, 0], ef)


def test_r2plus1d_deploy_form_on_eight_frames():
    # T = 8 reaches one frame at layer4: every strided window there reads padding.
    model = _randomised("r2plus1d_18", seed=4)
    clips = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    deploy = to_deploy_form(model, example=clips)
    assert deploy.deploy_check.passed, deploy.deploy_check.summary()
