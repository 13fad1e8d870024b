"""VGG-11/13/16/19 (+BN): equal to torchvision, from the paper's configuration table.

Every VGG carries the same 102M-parameter classifier (25088-4096-4096-1000). Building and randomising it
sixteen times (ours and theirs, eight variants) would dominate the suite, so the models are built on the
meta device and given storage without initialisation; the reference's features get fresh random weights
and its classifier one shared random head; ``assert_same_function`` then loads everything into ours.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.vgg import CFGS
from equivalence import assert_same_function

VARIANTS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
WEIGHTS = {
    "vgg11": "VGG11_Weights", "vgg11_bn": "VGG11_BN_Weights", "vgg13": "VGG13_Weights",
    "vgg13_bn": "VGG13_BN_Weights", "vgg16": "VGG16_Weights", "vgg16_bn": "VGG16_BN_Weights",
    "vgg19": "VGG19_Weights", "vgg19_bn": "VGG19_BN_Weights",
}


def _uninitialised_float64(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        model = build()
    return model.double().to_empty(device="cpu")


@pytest.fixture(scope="module")
def shared_head() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    shapes = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]
    for i, (fan_in, fan_out) in zip((0, 3, 6), shapes, strict=True):
        sd[f"{i}.weight"] = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) / fan_in ** 0.5
        sd[f"{i}.bias"] = torch.rand(fan_out, generator=g, dtype=torch.float64) * 0.2 - 0.1
    return sd


@pytest.mark.parametrize("name", VARIANTS)
def test_equal_to_torchvision_at_32px(name, shared_head):
    torch.manual_seed(0)
    theirs = _uninitialised_float64(getattr(torchvision.models, name))
    with torch.no_grad():
        for m in theirs.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.uniform_(m.bias, -0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):  # weights and statistics: randomised by assert_same_function
                m.num_batches_tracked.zero_()
    theirs.classifier.load_state_dict(shared_head, assign=True)
    ours = _uninitialised_float64(lambda: cnnzoo.create_model(name))
    assert assert_same_function(ours, theirs, (3, 32, 32)) < 1e-9


@pytest.mark.parametrize("name", VARIANTS)
def test_params_and_macs_equal_torchvision_metadata(name):
    info = cnnzoo.model_info(name)
    meta = getattr(torchvision.models, WEIGHTS[name]).IMAGENET1K_V1.meta
    with torch.device("meta"):
        model = cnnzoo.create_model(name).eval()
        with FlopCounterMode(display=False) as fc:
            model(torch.empty(1, *info.input_size))
    assert sum(p.numel() for p in model.parameters()) == info.params == meta["num_params"]
    assert fc.get_total_flops() // 2 == info.macs
    assert round(info.macs / 1e9, 3) == meta["_ops"]  # torchvision's "GFLOPS" are MACs
    assert info.min_size == meta["min_size"][0] == 32
    if name == "vgg16":
        assert info.params == 138_357_544


def test_configuration_table_is_table_1():
    weight_layers = {cfg: sum(isinstance(v, int) for v in layers) + 3 for cfg, layers in CFGS.items()}
    assert weight_layers == {"A": 11, "B": 13, "D": 16, "E": 19}
    assert all(layers.count("M") == 5 for layers in CFGS.values())  # five 2x2 pools: total stride 32
    with torch.device("meta"):
        m = cnnzoo.create_model("vgg16_bn", num_classes=10, in_chans=1)
        assert m(torch.empty(2, 1, 32, 32)).shape == (2, 10)
    convs = [x for x in m.features if isinstance(x, nn.Conv2d)]
    assert convs[0].in_channels == 1 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.features) == 13


def test_vgg11_default_size_min_size_and_init():
    torch.manual_seed(0)
    m = cnnzoo.create_model("vgg11").eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 224, 224))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 32x32"):
        m(torch.randn(1, 3, 31, 31))
    # torchvision's init: Kaiming normal (fan_out) for convs, N(0, 0.01) for the FC layers, zero biases
    conv = m.features[-3]
    assert isinstance(conv, nn.Conv2d)
    expected = (2.0 / (512 * 9)) ** 0.5
    with torch.no_grad():
        assert abs(conv.weight.std().item() / expected - 1) < 0.01 and conv.bias.abs().max() == 0
        assert abs(m.classifier[0].weight.std().item() - 0.01) < 1e-4


# ----------------------------------------------------------------------------- small-image forms
def _vgg_cifar_params(cfg: list[int | str], num_classes: int = 10, in_chans: int = 3) -> int:
    """Counted from the table by hand: 3x3 conv weights + bias + BN scale/shift, then one linear layer."""
    total, ch = 0, in_chans
    for v in cfg:
        if v != "M":
            total += 9 * ch * v + v + 2 * v
            ch = v
    return total + ch * num_classes + num_classes


@pytest.mark.parametrize("name,cfg", [("vgg11_bn_cifar", "A"), ("vgg13_bn_cifar", "B"),
                                      ("vgg16_bn_cifar", "D"), ("vgg19_bn_cifar", "E")])
def test_vgg_cifar_params_from_the_table(name, cfg):
    info = cnnzoo.model_info(name)
    assert info.params == _vgg_cifar_params(CFGS[cfg]) and info.input_size == (3, 32, 32)
    assert info.min_size == 32 and info.num_classes == 10


def test_vgg_cifar_published_counts():
    # pytorch-cifar's VGG16: 14,728,266; Network Slimming (Liu et al. 2017, Table 1) VGGNet on CIFAR-10: 20.04M
    assert cnnzoo.model_info("vgg16_bn_cifar").params == 14_728_266
    assert round(cnnzoo.model_info("vgg19_bn_cifar").params / 1e6, 2) == 20.04


def test_vgg_cifar_conv_stack_is_torchvisions():
    """The small-image form keeps the ImageNet conv stack: torchvision's vgg11_bn features load strictly and
    give the same 1x1x512 map at 32x32; the head is a single linear layer on it."""
    torch.manual_seed(0)
    theirs = torchvision.models.vgg11_bn().features.eval()
    ours = cnnzoo.create_model("vgg11_bn_cifar").eval()
    ours.features.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = ours.features(x)
        assert f.shape == (2, 512, 1, 1)
        assert torch.equal(f, theirs(x))
        expected = f.flatten(1) @ ours.classifier.weight.T + ours.classifier.bias
        assert torch.allclose(ours(x), expected, atol=1e-6)
    assert isinstance(ours.classifier, nn.Linear) and ours.classifier.in_features == 512
