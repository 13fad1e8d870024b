"""VGG-11/13/16/19, with and without batch norm (Simonyan & Zisserman 2014, "Very Deep Convolutional
Networks for Large-Scale Image Recognition").

The paper's Table 1 as data: configurations A (11 weight layers), B (13), D (16) and E (19); a number is a
3x3 conv (stride 1, padding 1) with that many channels followed by ReLU, "M" a 2x2/2 max pool. Every
variant is the same builder over one of these lists, with the three FC layers 4096-4096-classes on top.

Departures, all torchvision's (its ``state_dict`` files load directly): a 7x7 adaptive average pool before
the classifier (an identity at 224, it lets smaller or larger inputs reach the fixed-size FC layers; the
paper instead converts the FC layers to convolutions at test time), the ``_bn`` variants (BatchNorm after
every conv, which the paper, written before BatchNorm, does not have), and Kaiming initialisation instead of
the paper's N(0, 0.01) with weights copied from the trained net A.

Small-image forms (``vgg11_bn_cifar`` ... ``vgg19_bn_cifar``): the same conv stacks with BatchNorm, whose
five pools take a 32x32 image to a 1x1x512 map, and one linear layer on that 512-d feature instead of the
4096-wide FC layers, the adaptation most CIFAR code uses (e.g. kuangliu/pytorch-cifar, which reports
92.64 % for VGG-16 on CIFAR-10). At 32x32 the ImageNet form spends 119M of its 274M MACs and 124M of its
133M parameters on FC layers that see a 1x1 map copied 49 times by the adaptive pool; this form has none.
A global average pool (an identity at 32x32) lets larger inputs reach the linear layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import register_model

__all__ = ["VGG", "VGGCifar", "CFGS", "make_layers"]

CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: list[int | str], batch_norm: bool = False, in_chans: int = 3) -> nn.Sequential:
    """Walk a configuration list: conv3x3 (+BN) + ReLU for a number, a 2x2/2 max pool for "M"."""
    layers: list[nn.Module] = []
    ch = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(v, int)
        layers.append(nn.Conv2d(ch, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        ch = v
    return nn.Sequential(*layers)


def init_vgg(model: nn.Module) -> None:
    """torchvision's VGG initialisation: Kaiming (fan-out) convs, N(0, 0.01) linear layers, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class VGG(nn.Module):
    """``features`` (from a config) -> 7x7 adaptive average pool -> ``classifier`` (FC 4096, 4096, classes;
    dropout 0.5 after each hidden FC layer, as the paper)."""

    def __init__(
        self,
        cfg: list[int | str],
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.features = make_layers(cfg, batch_norm, in_chans)
        width = [v for v in cfg if v != "M"][-1]
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(width * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            init_vgg(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class VGGCifar(nn.Module):
    """``features`` (a config, with BatchNorm) -> global average pool -> one linear layer (small-image form)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_chans: int = 3,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.features = make_layers(cfg, batch_norm, in_chans)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear([v for v in cfg if v != "M"][-1], num_classes)
        init_vgg(self)  # as the ImageNet form

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_PAPER = "Very Deep Convolutional Networks for Large-Scale Image Recognition (Simonyan & Zisserman)"

# name: (config, batch norm, params, MACs at 224x224)
_VARIANTS: dict[str, tuple[str, bool, int, int]] = {
    "vgg11": ("A", False, 132_863_336, 7_609_090_048),
    "vgg11_bn": ("A", True, 132_868_840, 7_609_090_048),
    "vgg13": ("B", False, 133_047_848, 11_308_466_176),
    "vgg13_bn": ("B", True, 133_053_736, 11_308_466_176),
    "vgg16": ("D", False, 138_357_544, 15_470_264_320),
    "vgg16_bn": ("D", True, 138_365_992, 15_470_264_320),
    "vgg19": ("E", False, 143_667_240, 19_632_062_464),
    "vgg19_bn": ("E", True, 143_678_248, 19_632_062_464),
}


def _register(name: str, cfg: str, bn: bool, params: int, macs: int) -> None:
    depth = sum(isinstance(v, int) for v in CFGS[cfg]) + 3

    @register_model(
        name, family="vgg", input_size=(3, 224, 224), min_size=32, params=params, macs=macs, paper=_PAPER,
        year=2014, reference=f"torchvision.models.{name}",
        notes=f"configuration {cfg} ({depth} weight layers)"
              + (" with BatchNorm after every conv (not in the paper)" if bn else "")
              + "; 7x7 adaptive pool before the FC layers (torchvision)")
    def factory(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
        return VGG(CFGS[cfg], batch_norm=bn, num_classes=num_classes, in_chans=in_chans, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"VGG-{depth} (configuration {cfg}){' with BatchNorm' if bn else ''}, as torchvision's."
    globals()[name] = factory


for _name, _spec in _VARIANTS.items():
    _register(_name, *_spec)


# name: (config, params, MACs at 32x32), 10 classes. VGG-16: 14,728,266 as pytorch-cifar's VGG16; VGG-19:
# 20.04M as the CIFAR-10 VGGNet of Liu et al. 2017 ("Learning Efficient Convolutional Networks through Network
# Slimming", Table 1).
_CIFAR_VARIANTS: dict[str, tuple[str, int, int]] = {
    "vgg11_bn_cifar": ("A", 9_231_114, 152_769_536),
    "vgg13_bn_cifar": ("B", 9_416_010, 228_267_008),
    "vgg16_bn_cifar": ("D", 14_728_266, 313_201_664),
    "vgg19_bn_cifar": ("E", 20_040_522, 398_136_320),
}


def _register_cifar(name: str, cfg: str, params: int, macs: int) -> None:
    depth = sum(isinstance(v, int) for v in CFGS[cfg]) + 1

    @register_model(
        name, family="vgg", input_size=(3, 32, 32), min_size=32, num_classes=10, params=params, macs=macs,
        paper=_PAPER, year=2014,
        notes=f"configuration {cfg} conv stack with BatchNorm and one linear layer on the 1x1x512 map "
              "(common CIFAR form, e.g. kuangliu/pytorch-cifar)")
    def factory(num_classes: int = 10, in_chans: int = 3, **kwargs) -> VGGCifar:
        return VGGCifar(CFGS[cfg], num_classes=num_classes, in_chans=in_chans, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"VGG (configuration {cfg}) with BatchNorm for 32x32 input: {depth} weight layers."
    globals()[name] = factory


for _name, _spec in _CIFAR_VARIANTS.items():
    _register_cifar(_name, *_spec)
