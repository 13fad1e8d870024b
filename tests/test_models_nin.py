"""Network in Network: no reference library has it, so parameters against a hand count, and shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo


def _mlpconv(cin: int, widths: tuple[int, int, int], k: int) -> int:
    """Parameters of conv k x k -> 1x1 -> 1x1, with biases."""
    a, b, c = widths
    return (cin * a * k * k + a) + (a * b + b) + (b * c + c)


def test_parameter_counts_by_hand():
    cifar = _mlpconv(3, (192, 160, 96), 5) + _mlpconv(96, (192, 192, 192), 5) \
        + _mlpconv(192, (192, 192, 10), 3)
    imagenet = _mlpconv(3, (96, 96, 96), 11) + _mlpconv(96, (256, 256, 256), 5) \
        + _mlpconv(256, (384, 384, 384), 3) + _mlpconv(384, (1000, 1000, 1000), 3)
    assert cifar == 966_986 and imagenet == 7_439_608
    for name, hand in [("nin_cifar", cifar), ("nin", imagenet)]:
        info = cnnzoo.model_info(name)
        with torch.device("meta"):
            m = cnnzoo.create_model(name).eval()
            with FlopCounterMode(display=False) as fc:
                m(torch.empty(1, *info.input_size))
        assert sum(p.numel() for p in m.parameters()) == hand == info.params
        assert fc.get_total_flops() // 2 == info.macs
        assert not any(isinstance(x, nn.Linear) for x in m.modules())  # global average pooling, no FC


@pytest.mark.parametrize("name, sizes", [
    ("nin_cifar", {"block1": 32, "pool1": 16, "block2": 16, "pool2": 8, "block3": 8}),  # pools round up
    ("nin", {"block1": 54, "pool1": 26, "block2": 26, "pool2": 12, "block3": 12, "pool3": 5, "block4": 5}),
])
def test_shapes_and_logits_are_class_map_averages(name, sizes):
    info = cnnzoo.model_info(name)
    torch.manual_seed(0)
    m = cnnzoo.create_model(name).eval()
    seen: dict[str, torch.Tensor] = {}
    for key in sizes:
        getattr(m.features, key).register_forward_hook(lambda _m, _i, o, key=key: seen.update({key: o}))
    with torch.no_grad():
        out = m(torch.randn(1, *info.input_size))
    assert {k: v.shape[-1] for k, v in seen.items()} == sizes
    last = seen[list(sizes)[-1]]
    assert last.shape[1] == info.num_classes  # one map per class
    assert torch.allclose(out, last.mean((2, 3)), atol=1e-6)
    assert out.shape == (1, info.num_classes) and (out >= 0).all()  # the ReLU after the class maps is kept
    assert out.abs().max() > 0


def test_cifar_net_pools_and_dropout_as_the_caffe_model():
    m = cnnzoo.create_model("nin_cifar")
    f = m.features
    assert isinstance(f.pool1, nn.MaxPool2d) and isinstance(f.pool2, nn.AvgPool2d)
    assert f.pool1.ceil_mode and f.pool2.ceil_mode and (f.pool1.kernel_size, f.pool1.stride) == (3, 2)
    assert [n for n, x in f.named_children() if isinstance(x, nn.Dropout)] == ["drop1", "drop2"]
    kernels = [f.block1.conv.kernel_size, f.block2.conv.kernel_size, f.block3.conv.kernel_size]
    assert kernels == [(5, 5), (5, 5), (3, 3)]
    d2l = cnnzoo.create_model("nin").features
    assert [n for n, x in d2l.named_children() if isinstance(x, nn.Dropout)] == ["drop3"]
    assert d2l.block1.conv.stride == (4, 4) and not d2l.pool1.ceil_mode


@pytest.mark.parametrize("name, min_size", [("nin_cifar", 4), ("nin", 67)])
def test_min_size_channels_classes(name, min_size):
    assert cnnzoo.model_info(name).min_size == min_size
    m = cnnzoo.create_model(name, num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, min_size, min_size)).shape == (2, 7)
    with pytest.raises(cnnzoo.InputSizeError, match=f"minimum is {min_size}x{min_size}"):
        m(torch.randn(1, 1, min_size - 1, min_size - 1))
