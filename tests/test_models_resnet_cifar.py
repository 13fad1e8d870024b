"""Small-image ResNets (src/cnnzoo/models/resnet_cifar.py).

Neither torchvision nor timm has these nets, so the references are: torchvision's ResNet-18 with the
CIFAR stem swapped in, and a short transcription of akamaster/pytorch_resnet_cifar10 (the usual PyTorch
port of the paper's CIFAR nets) for the 6n+2 nets. Parameter counts are the paper's Table 6.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.resnet_cifar import CIFAR_DEPTHS, CifarResNet, ShortcutA
from equivalence import assert_same_function

PAPER_NETS = [f"resnet{d}_cifar" for d in CIFAR_DEPTHS]
STEM_NETS = ["resnet18_cifar", "resnet34_cifar"]

# Exact counts at 10 classes. The paper's Table 6 gives 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
PARAMS_A = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}
TABLE6_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}
PARAMS_B = {20: 272_474, 56: 855_770}  # 1x1-projection shortcuts: 2 convs + 2 BNs more (2,752)


# ---- reference: akamaster/pytorch_resnet_cifar10 resnet.py, transcribed (option A, keys `linear`) ----
class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _AkBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = (0, 0, 0, 0, planes // 4, planes // 4)
            self.shortcut = _Lambda(lambda x: F.pad(x[:, :, ::2, ::2], pad))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _AkResNet(nn.Module):
    def __init__(self, n, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(_AkBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


def _tv_with_cifar_stem(depth: int) -> nn.Module:
    ref = getattr(tvm, f"resnet{depth}")(num_classes=10)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    return ref


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_paper_params_match_table6(depth):
    info = cnnzoo.model_info(f"resnet{depth}_cifar")
    with torch.device("meta"):
        n_params = sum(p.numel() for p in cnnzoo.create_model(info.name).parameters())
    assert n_params == info.params == PARAMS_A[depth]
    assert round(n_params / 1e6, 2 if depth < 100 else 1) == TABLE6_M[depth]
    assert info.input_size == (3, 32, 32) and info.num_classes == 10 and info.min_size == 4


@pytest.mark.parametrize("depth", sorted(PARAMS_B))
def test_option_b_shortcuts_add_two_projections(depth):
    model = cnnzoo.create_model(f"resnet{depth}_cifar", shortcut="B")
    assert sum(p.numel() for p in model.parameters()) == PARAMS_B[depth]
    assert isinstance(model.layer2[0].downsample, nn.Sequential)


@pytest.mark.parametrize("depth", [20, 56])
def test_paper_nets_equal_akamaster_port(depth):
    ours = cnnzoo.create_model(f"resnet{depth}_cifar")
    ref = _AkResNet((depth - 2) // 6)
    assert assert_same_function(ours, ref, (3, 32, 32), key_map=ours.convert_state_dict) < 1e-9


@pytest.mark.parametrize("depth", [18, 34])
def test_stem_nets_equal_torchvision_with_cifar_stem(depth):
    ours = cnnzoo.create_model(f"resnet{depth}_cifar")
    assert assert_same_function(ours, _tv_with_cifar_stem(depth), (3, 32, 32)) < 1e-9


def test_shortcut_a_subsamples_and_zero_pads():
    x = torch.arange(2 * 16 * 5 * 5, dtype=torch.float64).reshape(2, 16, 5, 5)
    y = ShortcutA(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 3, 3)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
    assert sum(p.numel() for p in ShortcutA(16, 32, 2).parameters()) == 0


@pytest.mark.parametrize("name", STEM_NETS + PAPER_NETS)
def test_forward_at_default_size_and_macs(name):
    info = cnnzoo.model_info(name)
    model = cnnzoo.create_model(name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    assert fc.get_total_flops() == 2 * info.macs


def test_macs_known_values():
    # ResNet-20 is the classic "41M FLOPs" net; the CIFAR stem makes ResNet-18 as costly as at 112x112
    assert cnnzoo.model_info("resnet20_cifar").macs == 40_551_040
    assert cnnzoo.model_info("resnet56_cifar").macs == 125_485_696
    assert cnnzoo.model_info("resnet18_cifar").macs == 555_422_720


def test_stem_keeps_resolution():
    model = cnnzoo.create_model("resnet18_cifar").eval()
    shapes = {}
    for name in ("layer1", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, k=name: shapes.__setitem__(k, o.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert shapes == {"layer1": (1, 64, 32, 32), "layer4": (1, 512, 4, 4)}


@pytest.mark.parametrize("name,min_size", [("resnet20_cifar", 4), ("resnet18_cifar", 8)])
def test_mnist_input_and_min_size(name, min_size):
    model = cnnzoo.create_model(name, in_chans=1, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)  # MNIST needs no resizing
        assert model(torch.randn(2, 1, min_size, min_size)).shape == (2, 7)
    with pytest.raises(cnnzoo.InputSizeError, match=f"minimum is {min_size}x{min_size}"):
        model(torch.randn(2, 1, min_size - 1, min_size - 1))


def test_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth=21)
    assert len(CifarResNet(depth=8).layer3) == 1


def test_load_imagenet_resnet18_into_cifar_stem(tmp_path):
    torch.manual_seed(0)
    sd = tvm.resnet18().state_dict()
    save_file(sd, str(tmp_path / "resnet18.safetensors"))
    model = cnnzoo.create_model("resnet18_cifar")
    report = cnnzoo.load_pretrained(model, tmp_path / "resnet18.safetensors", strict=False)
    assert report["missing"] == ["conv1.weight"]  # the 7x7 stem does not fit the 3x3 one
    assert sorted(report["reset"]) == ["fc.bias", "fc.weight"]
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(model.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    with pytest.raises(cnnzoo.CnnzooError, match="missing"):
        cnnzoo.load_pretrained(model, tmp_path / "resnet18.safetensors")  # strict by default


def test_load_akamaster_checkpoint(tmp_path):
    ref = _AkResNet(3).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "best_prec1": 91.7},
               tmp_path / "resnet20-12fca82f.th")  # akamaster's DataParallel checkpoint layout
    model = cnnzoo.create_model("resnet20_cifar").eval()
    report = cnnzoo.load_pretrained(model, tmp_path / "resnet20-12fca82f.th")
    assert report == {"reset": [], "missing": [], "unexpected": []}
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-5  # float32; the pools sum in a different order
