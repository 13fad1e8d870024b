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

Features and head, as timm's VGG: ``forward_features`` is the conv stack up to and including the last max
pool (512 channels, stride 32); the head is the 7x7 pool and the FC layers, whose 4096-wide output is the
pre-logits feature (``forward_head(x, pre_logits=True)``, and the output after ``reset_classifier(0)``). The
multi-scale features are the ReLU before each max pool (strides 1..16) and the last pool (stride 32).
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import Backbone
from .registry import register_model

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


class VGG(Backbone):
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
        self.num_features = width
        if init_weights:
            init_vgg(self)

    classifier_name = "classifier.6"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


class VGGCifar(Backbone):
    """``features`` (a config, with BatchNorm) -> global average pool -> one linear layer (small-image form)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_chans: int = 3,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.features = make_layers(cfg, batch_norm, in_chans)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = [v for v in cfg if v != "M"][-1]
        self.classifier = nn.Linear(self.num_features, num_classes)
        init_vgg(self)  # as the ImageNet form

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


_PAPER = "Very Deep Convolutional Networks for Large-Scale Image Recognition (Simonyan & Zisserman)"
_COMMON = dict(family="vgg", input_size=(3, 224, 224), min_size=32, paper=_PAPER, year=2014)
_FC_NOTE = "; 7x7 adaptive pool before the FC layers (torchvision)"
_BN_NOTE = " with BatchNorm after every conv (not in the paper)"


@register_model("vgg11", params=132_863_336, macs=7_609_090_048, reference="torchvision.models.vgg11",
                notes="configuration A (11 weight layers)" + _FC_NOTE, **_COMMON)
def vgg11(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-11 (configuration A), as torchvision's."""
    return VGG(CFGS["A"], batch_norm=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg11_bn", params=132_868_840, macs=7_609_090_048, reference="torchvision.models.vgg11_bn",
                notes="configuration A (11 weight layers)" + _BN_NOTE + _FC_NOTE, **_COMMON)
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-11 (configuration A) with BatchNorm, as torchvision's."""
    return VGG(CFGS["A"], batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg13", params=133_047_848, macs=11_308_466_176, reference="torchvision.models.vgg13",
                notes="configuration B (13 weight layers)" + _FC_NOTE, **_COMMON)
def vgg13(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-13 (configuration B), as torchvision's."""
    return VGG(CFGS["B"], batch_norm=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg13_bn", params=133_053_736, macs=11_308_466_176, reference="torchvision.models.vgg13_bn",
                notes="configuration B (13 weight layers)" + _BN_NOTE + _FC_NOTE, **_COMMON)
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-13 (configuration B) with BatchNorm, as torchvision's."""
    return VGG(CFGS["B"], batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg16", params=138_357_544, macs=15_470_264_320, reference="torchvision.models.vgg16",
                notes="configuration D (16 weight layers)" + _FC_NOTE, **_COMMON)
def vgg16(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-16 (configuration D), as torchvision's."""
    return VGG(CFGS["D"], batch_norm=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg16_bn", params=138_365_992, macs=15_470_264_320, reference="torchvision.models.vgg16_bn",
                notes="configuration D (16 weight layers)" + _BN_NOTE + _FC_NOTE, **_COMMON)
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-16 (configuration D) with BatchNorm, as torchvision's."""
    return VGG(CFGS["D"], batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg19", params=143_667_240, macs=19_632_062_464, reference="torchvision.models.vgg19",
                notes="configuration E (19 weight layers)" + _FC_NOTE, **_COMMON)
def vgg19(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-19 (configuration E), as torchvision's."""
    return VGG(CFGS["E"], batch_norm=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg19_bn", params=143_678_248, macs=19_632_062_464, reference="torchvision.models.vgg19_bn",
                notes="configuration E (19 weight layers)" + _BN_NOTE + _FC_NOTE, **_COMMON)
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VGG:
    """VGG-19 (configuration E) with BatchNorm, as torchvision's."""
    return VGG(CFGS["E"], batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


# Small-image forms: params and MACs at 32x32, 10 classes. VGG-16: 14,728,266 as pytorch-cifar's VGG16;
# VGG-19: 20.04M as the CIFAR-10 VGGNet of Liu et al. 2017 ("Learning Efficient Convolutional Networks through
# Network Slimming", Table 1).
_CIFAR = dict(family="vgg", input_size=(3, 32, 32), min_size=32, num_classes=10, paper=_PAPER, year=2014)
_CIFAR_NOTE = ("conv stack with BatchNorm and one linear layer on the 1x1x512 map (common CIFAR form, "
               "e.g. kuangliu/pytorch-cifar)")


@register_model("vgg11_bn_cifar", params=9_231_114, macs=152_769_536,
                notes="configuration A " + _CIFAR_NOTE, **_CIFAR)
def vgg11_bn_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> VGGCifar:
    """VGG (configuration A) with BatchNorm for 32x32 input: 9 weight layers."""
    return VGGCifar(CFGS["A"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg13_bn_cifar", params=9_416_010, macs=228_267_008,
                notes="configuration B " + _CIFAR_NOTE, **_CIFAR)
def vgg13_bn_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> VGGCifar:
    """VGG (configuration B) with BatchNorm for 32x32 input: 11 weight layers."""
    return VGGCifar(CFGS["B"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg16_bn_cifar", params=14_728_266, macs=313_201_664,
                notes="configuration D " + _CIFAR_NOTE, **_CIFAR)
def vgg16_bn_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> VGGCifar:
    """VGG (configuration D) with BatchNorm for 32x32 input: 14 weight layers."""
    return VGGCifar(CFGS["D"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("vgg19_bn_cifar", params=20_040_522, macs=398_136_320,
                notes="configuration E " + _CIFAR_NOTE, **_CIFAR)
def vgg19_bn_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> VGGCifar:
    """VGG (configuration E) with BatchNorm for 32x32 input: 17 weight layers."""
    return VGGCifar(CFGS["E"], num_classes=num_classes, in_chans=in_chans, **kwargs)
