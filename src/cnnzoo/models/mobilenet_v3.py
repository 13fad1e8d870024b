"""MobileNet V3 Small and Large (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244).

MobileNetV2's inverted residual ("bneck") with three changes found by architecture search and by hand:
squeeze-and-excitation in some blocks (gated by a hard sigmoid, squeeze = a quarter of the expansion),
the hard-swish nonlinearity x * relu6(x + 3) / 6 in the deeper half, and a cheaper head (the last
expansion moved after the pooling). The tables below are the paper's Tables 1 and 2, row for row.

Keys are torchvision's (``features.N.block.M``); checked equal to torchvision's nets.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from torch import Tensor, nn

from .layers import Backbone, Conv2dNormActivation, InvertedResidual, make_divisible
from .mobilenet_v2 import init_mobilenet
from .registry import register_model

__all__ = ["MobileNetV3", "BneckRow", "V3_LARGE", "V3_SMALL"]


class BneckRow(NamedTuple):
    """One "bneck" row of the paper's Tables 1/2."""

    kernel: int
    exp: int  # "exp size": channels after the 1x1 expansion
    out: int  # "#out"
    se: bool  # "SE"
    nl: str  # "NL": "RE" = ReLU, "HS" = hard-swish
    stride: int  # "s"


STEM = 16  # conv2d 3x3, stride 2, 16 channels, hard-swish (both tables' first row)

# Table 1, MobileNetV3-Large (input 224x224x3)
V3_LARGE: tuple[BneckRow, ...] = (
    BneckRow(3, 16, 16, False, "RE", 1),
    BneckRow(3, 64, 24, False, "RE", 2),
    BneckRow(3, 72, 24, False, "RE", 1),
    BneckRow(5, 72, 40, True, "RE", 2),
    BneckRow(5, 120, 40, True, "RE", 1),
    BneckRow(5, 120, 40, True, "RE", 1),
    BneckRow(3, 240, 80, False, "HS", 2),
    BneckRow(3, 200, 80, False, "HS", 1),
    BneckRow(3, 184, 80, False, "HS", 1),
    BneckRow(3, 184, 80, False, "HS", 1),
    BneckRow(3, 480, 112, True, "HS", 1),
    BneckRow(3, 672, 112, True, "HS", 1),
    BneckRow(5, 672, 160, True, "HS", 2),
    BneckRow(5, 960, 160, True, "HS", 1),
    BneckRow(5, 960, 160, True, "HS", 1),
)
LARGE_HEAD = 1280  # Table 1: conv2d 1x1, NBN, 1280 after the pooling

# Table 2, MobileNetV3-Small (input 224x224x3)
V3_SMALL: tuple[BneckRow, ...] = (
    BneckRow(3, 16, 16, True, "RE", 2),
    BneckRow(3, 72, 24, False, "RE", 2),
    BneckRow(3, 88, 24, False, "RE", 1),
    BneckRow(5, 96, 40, True, "HS", 2),
    BneckRow(5, 240, 40, True, "HS", 1),
    BneckRow(5, 240, 40, True, "HS", 1),
    BneckRow(5, 120, 48, True, "HS", 1),
    BneckRow(5, 144, 48, True, "HS", 1),
    BneckRow(5, 288, 96, True, "HS", 2),
    BneckRow(5, 576, 96, True, "HS", 1),
    BneckRow(5, 576, 96, True, "HS", 1),
)
SMALL_HEAD = 1024  # Table 2: conv2d 1x1, NBN, 1024 after the pooling

_NL = {"RE": "relu", "HS": "hardswish"}


class MobileNetV3(Backbone):
    """MobileNet V3 from bneck rows: stem, bnecks, 1x1 conv to 6x the last width, pool, 2-layer head.

    Departures from the paper, as torchvision (whose weights this loads): the head's two "conv2d 1x1,
    NBN" layers after the pooling are ``nn.Linear`` (the same function on a 1x1 map) with dropout 0.2
    before the last; Small's last 1x1 conv (576) has no SE although Table 2 marks one; BatchNorm uses
    eps 1e-3 and momentum 0.01 (TensorFlow's defaults, with which the reference weights were trained).

    Features and head as timm's: ``forward_features`` ends with the last 1x1 conv before the pooling (960
    channels for Large), the head is pool, Linear + hard-swish to 1280 (the pre-logits features), dropout,
    linear; the multi-scale features are the last block at each stride, that 1x1 conv included.
    """

    def __init__(
        self,
        rows: tuple[BneckRow, ...],
        head_channels: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm = norm_layer or partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)  # torchvision's default
        ch = make_divisible(STEM * width_mult)
        layers: list[nn.Module] = [Conv2dNormActivation(in_chans, ch, 3, 2, act="hardswish", norm_layer=norm)]
        for i, r in enumerate(rows):
            exp, out = make_divisible(r.exp * width_mult), make_divisible(r.out * width_mult)
            layers.append(InvertedResidual(
                ch, exp, out, r.kernel, r.stride, act=_NL[r.nl],
                se_channels=make_divisible(exp // 4) if r.se else None, se_act="relu", se_gate="hardsigmoid",
                norm_layer=norm, drop_path=drop_path_rate * i / len(rows),  # off by default, as the paper
            ))
            ch = out
        last_conv = 6 * ch
        layers.append(Conv2dNormActivation(ch, last_conv, 1, act="hardswish", norm_layer=norm))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head = make_divisible(head_channels * width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, head),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(head, num_classes),
        )
        self.num_features = last_conv
        init_mobilenet(self)  # torchvision's (same as MobileNetV2's)

    classifier_name = "classifier.3"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


_PAPER = "Howard et al., Searching for MobileNetV3"
_NOTES = ("as torchvision: head 1x1 convs as Linear + dropout 0.2, no SE on Small's last conv, "
          "BN eps 1e-3 / momentum 0.01")


@register_model(
    "mobilenet_v3_large", family="mobilenet_v3", input_size=(3, 224, 224), min_size=32, params=5_483_032,
    macs=216_589_760, paper=_PAPER, year=2019, reference="torchvision.models.mobilenet_v3_large",
    notes=_NOTES,
)
def mobilenet_v3_large(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV3:
    return MobileNetV3(V3_LARGE, LARGE_HEAD, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(
    "mobilenet_v3_small", family="mobilenet_v3", input_size=(3, 224, 224), min_size=32, params=2_542_856,
    macs=56_510_400, paper=_PAPER, year=2019, reference="torchvision.models.mobilenet_v3_small", notes=_NOTES,
)
def mobilenet_v3_small(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV3:
    return MobileNetV3(V3_SMALL, SMALL_HEAD, num_classes=num_classes, in_chans=in_chans, **kwargs)
