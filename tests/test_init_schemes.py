"""Weight-init schemes: each draws from the distribution its formula says, on real zoo nets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.training.init_schemes import INIT_SCHEMES, apply_init, init_names, resolve_init


def _net() -> nn.Sequential:
    """Large enough layers that sample std and max are within a few percent of the formula."""
    return nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 128, 5, groups=2),
                         nn.Flatten(), nn.Linear(2048, 1000), nn.ReLU(), nn.Linear(1000, 10))


def _scramble(net: nn.Module) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(3.0, 4.0)


def test_names_and_aliases() -> None:
    assert set(INIT_SCHEMES) == {"default", "paddle", "xavier", "kaiming"}
    assert resolve_init("course") == "paddle" and resolve_init("Paddle") == "paddle"
    assert resolve_init(None) == "default"
    assert "course" in init_names()


def test_unknown_scheme_is_one_line_cnnzoo_error() -> None:
    with pytest.raises(CnnzooError, match=r"unknown init scheme 'glorot': use one of default, paddle") as e:
        apply_init(_net(), "glorot")
    assert "\n" not in str(e.value)


def test_default_leaves_weights_alone() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    apply_init(net, "default")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_paddle_conv_normal_over_all_input_channels_linear_xavier_biases_zero() -> None:
    torch.manual_seed(0)
    net = _net()
    _scramble(net)
    apply_init(net, "course")
    conv1, bn, conv2, lin1, lin2 = net[0], net[1], net[3], net[5], net[7]
    # Paddle's Conv2D: N(0, sqrt(2 / (k*k*in_channels))); the grouped conv counts all 128 input channels
    for conv, fan_in in ((conv1, 64 * 9), (conv2, 128 * 25)):
        w = conv.weight
        assert w.mean().abs() < 0.02 * math.sqrt(2 / fan_in)
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
        assert torch.count_nonzero(conv.bias) == 0
    # Linear: Xavier uniform, bound sqrt(6 / (fan_in + fan_out)), std bound / sqrt(3)
    for lin, fi, fo in ((lin1, 2048, 1000), (lin2, 1000, 10)):
        bound = math.sqrt(6 / (fi + fo))
        assert lin.weight.abs().max().item() <= bound
        assert lin.weight.abs().max().item() > 0.99 * bound
        assert lin.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
        assert torch.count_nonzero(lin.bias) == 0
    assert torch.equal(bn.weight, torch.ones(128)) and torch.count_nonzero(bn.bias) == 0


def test_xavier_uniform_bounds_with_torch_fan_counting() -> None:
    torch.manual_seed(1)
    net = _net()
    _scramble(net)
    apply_init(net, "xavier")
    conv2 = net[3]  # weight (128, 64, 5, 5): fan_in 64*25, fan_out 128*25
    bound = math.sqrt(6 / (64 * 25 + 128 * 25))
    assert bound * 0.99 < conv2.weight.abs().max().item() <= bound
    assert conv2.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(conv2.bias) == 0 and torch.count_nonzero(net[5].bias) == 0


def test_kaiming_normal_fan_in() -> None:
    torch.manual_seed(2)
    net = _net()
    apply_init(net, "kaiming")
    assert net[5].weight.std().item() == pytest.approx(math.sqrt(2 / 2048), rel=0.02)
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    assert torch.count_nonzero(net[0].bias) == 0


def test_paddle_init_on_zoo_alexnet_keeps_structure_and_signal() -> None:
    """On the real AlexNet: same modules and shapes; PyTorch's default leaves the logits ~100x smaller than
    the input scale, Paddle's keeps them near it (why AlexNet learns under the course recipe only then)."""
    torch.manual_seed(0)
    net = cnnzoo.create_model("alexnet", num_classes=2).eval()
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        spread_default = net(x).std(0).mean().item()
        apply_init(net, "paddle")
        spread_paddle = net(x).std(0).mean().item()
    assert {k: v.shape for k, v in net.state_dict().items()} == shapes
    first = net.features[0]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / (3 * 121)), rel=0.05)
    assert spread_paddle > 10 * spread_default
