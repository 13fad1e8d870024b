"""Shared blocks: the same functions (and keys) as torchvision's/timm's, and stochastic depth's statistics."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torchvision.ops as tvops
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import make_divisible as timm_make_divisible
from torch import nn
from torchvision.models._utils import _make_divisible as tv_make_divisible

from cnnzoo.errors import CnnzooError
from cnnzoo.models.layers import (
    Conv2dNormActivation,
    InvertedResidual,
    SqueezeExcitation,
    StochasticDepth,
    drop_path,
    get_act,
    make_divisible,
)


def test_make_divisible_known_values():
    assert make_divisible(32 * 0.75) == 24
    assert make_divisible(18) == 24  # 16 would be more than 10 % below 18
    assert make_divisible(30) == 32 and make_divisible(4) == 8  # never below the divisor
    assert make_divisible(32 * 1.1) == 32 and make_divisible(1280 * 1.1) == 1408


@settings(max_examples=300, deadline=None)
@given(v=st.floats(1, 5000, allow_nan=False), divisor=st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_make_divisible_matches_torchvision_and_timm(v, divisor):
    ours = make_divisible(v, divisor)
    assert ours == tv_make_divisible(v, divisor) == timm_make_divisible(v, divisor)
    assert ours % divisor == 0 and ours >= 0.9 * v


def _same(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    theirs.eval()
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_conv_norm_act_is_torchvisions():
    x = torch.randn(2, 8, 9, 9)
    _same(Conv2dNormActivation(8, 16, 3, 2, act="hardswish"),
          tvops.Conv2dNormActivation(8, 16, 3, 2, activation_layer=nn.Hardswish), x)
    _same(Conv2dNormActivation(8, 8, 5, groups=8, act=None, norm_layer=partial(nn.BatchNorm2d, eps=1e-3)),
          tvops.Conv2dNormActivation(8, 8, 5, groups=8, activation_layer=None,
                                     norm_layer=partial(nn.BatchNorm2d, eps=1e-3)), x)
    c = Conv2dNormActivation(8, 16, 3, norm_layer=None)  # no norm -> the conv gets a bias
    assert c[0].bias is not None and len(c) == 2


def test_squeeze_excitation_is_torchvisions():
    x = torch.randn(2, 32, 5, 5)
    _same(SqueezeExcitation(32, 8, act="relu", gate="hardsigmoid"),
          tvops.SqueezeExcitation(32, 8, scale_activation=nn.Hardsigmoid), x)
    _same(SqueezeExcitation(32, 8, act="silu"), tvops.SqueezeExcitation(32, 8, activation=nn.SiLU), x)


def test_inverted_residual_keys_and_residual():
    ir = InvertedResidual(16, 64, 16, 3, 1, se_channels=8)
    assert [type(m).__name__ for m in ir.block] == [
        "Conv2dNormActivation", "Conv2dNormActivation", "SqueezeExcitation", "Conv2dNormActivation"]
    assert ir.use_res_connect and ir.block[-1][-1].__class__ is nn.BatchNorm2d  # linear projection
    no_expand = InvertedResidual(16, 16, 24, 5, 2)  # expanded == in: no 1x1 expansion, block.0 = depthwise
    assert no_expand.block[0][0].groups == 16 and not no_expand.use_res_connect
    x = torch.randn(2, 16, 8, 8)
    ir.eval()
    with torch.no_grad():
        torch.testing.assert_close(ir(x), ir.block(x) + x)
    assert no_expand(x).shape == (2, 24, 4, 4)
    with pytest.raises(ValueError, match="stride"):
        InvertedResidual(16, 16, 16, 3, 3)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    x = torch.ones(20_000, 3, 2, 2)
    assert drop_path(x, 0.3, training=False) is x and drop_path(x, 0.0, training=True) is x
    torch.manual_seed(0)
    y = drop_path(x, 0.3, training=True)
    per_sample = y.flatten(1)
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # all or nothing per sample
    kept = per_sample[:, 0] > 0
    assert abs(kept.float().mean().item() - 0.7) < 0.015
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.7))
    assert abs(y.mean().item() - 1.0) < 0.03  # expectation preserved
    assert torch.count_nonzero(drop_path(x, 1.0, training=True)) == 0  # p = 1: all dropped, no NaN
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        drop_path(x, 1.5, training=True)


def test_stochastic_depth_module():
    sd = StochasticDepth(0.5)
    x = torch.ones(1000, 4)
    assert torch.equal(sd.eval()(x), x)
    torch.manual_seed(1)
    out = sd.train()(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert "p=0.5" in repr(sd)
    with pytest.raises(ValueError, match="row"):
        StochasticDepth(0.1, mode="batch")


def test_get_act():
    assert isinstance(get_act("hardswish"), nn.Hardswish) and get_act("relu6").inplace
    assert isinstance(get_act("swish"), nn.SiLU) and isinstance(get_act(nn.GELU), nn.GELU)
    assert isinstance(get_act("Sigmoid"), nn.Sigmoid)  # takes no ``inplace``; names are case-insensitive
    assert get_act(None) is None and get_act("relu", inplace=False).inplace is False
    with pytest.raises(CnnzooError, match="unknown activation 'mish'.*hardswish"):
        get_act("mish")
