"""MobileNet V1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", arXiv:1704.04861).

A 3x3 stem convolution, then 13 depthwise-separable convolutions (a 3x3 depthwise conv that filters each
channel alone, then a 1x1 pointwise conv that mixes channels; BN + activation after each), global average
pooling and one fully connected layer. The width multiplier alpha thins every layer uniformly.

Checked equal to timm ``mobilenetv1_100`` (and ``mobilenetv1_125``); timm's keys load through
:meth:`MobileNetV1.convert_state_dict`. Features and head as timm's: ``forward_features`` ends with the last
pointwise conv (1024 channels at alpha 1), the head is pool, dropout, linear; the multi-scale features are the
last block at each stride (64, 128, 256, 512, 1024 channels at alpha 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

from .layers import Backbone, Conv2dNormActivation, make_divisible
from .registry import register_model

__all__ = ["MobileNetV1", "DepthwiseSeparable", "V1_ROWS"]


class DSRow(NamedTuple):
    """One depthwise-separable row of the paper's Table 1: depthwise stride, pointwise output channels."""

    stride: int
    out: int


STEM = 32  # Table 1, first row: Conv 3x3, stride 2, 32 filters

# Table 1 of the paper, the 13 "Conv dw / Conv 1x1" pairs. The paper prints stride 2 for the 13th
# depthwise conv (7x7 -> 7x7), a known typo: its own output size stays 7x7, so stride 1 it is (as in the
# TF-slim reference and timm).
V1_ROWS: tuple[DSRow, ...] = (
    DSRow(1, 64),
    DSRow(2, 128),
    DSRow(1, 128),
    DSRow(2, 256),
    DSRow(1, 256),
    DSRow(2, 512),
    DSRow(1, 512),
    DSRow(1, 512),
    DSRow(1, 512),
    DSRow(1, 512),
    DSRow(1, 512),
    DSRow(2, 1024),
    DSRow(1, 1024),
)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv -> BN -> act, then 1x1 pointwise conv -> BN -> act (the paper's Figure 3)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.dw = Conv2dNormActivation(in_channels, in_channels, 3, stride, groups=in_channels, act=act,
                                       norm_layer=norm_layer)
        self.pw = Conv2dNormActivation(in_channels, out_channels, 1, act=act, norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(Backbone):
    """MobileNet V1 with width multiplier ``width_mult`` (the paper's alpha).

    Departures from the paper, both as in timm and the TF-slim reference: ReLU6 instead of ReLU (pass
    ``act="relu"`` for the paper's), and channel counts rounded to multiples of 8 (``make_divisible``),
    which only matters for alpha values whose products are not already multiples of 8.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.0,
        act: str = "relu6",
        rows: tuple[DSRow, ...] = V1_ROWS,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm = norm_layer or nn.BatchNorm2d
        ch = make_divisible(STEM * width_mult)
        layers: list[nn.Module] = [Conv2dNormActivation(in_chans, ch, 3, stride=2, act=act, norm_layer=norm)]
        for row in rows:
            out = make_divisible(row.out * width_mult)
            layers.append(DepthwiseSeparable(ch, out, row.stride, act, norm_layer=norm))
            ch = out
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the paper's "Avg Pool 7x7", for any input size
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch, num_classes))
        self._init_weights()

    classifier_name = "classifier.1"

    def _init_weights(self) -> None:
        # No torchvision MobileNetV1: timm's TF-style init (normal, std sqrt(2 / fan_out), with a depthwise
        # conv's fan-out counted per group; Linear uniform +-1/sqrt(out_features)).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    @staticmethod
    def convert_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map timm ``mobilenetv1_*`` keys to ours; keys already in our form pass through unchanged.

        timm groups the 13 blocks by output stride (``blocks.{stage}.{i}``, stages of 1, 2, 2, 6, 2);
        we number them in the paper's order after the stem:

        ========================================  ===========================
        timm                                      cnnzoo
        ========================================  ===========================
        ``conv_stem.weight``                      ``features.0.0.weight``
        ``bn1.*``                                 ``features.0.1.*``
        ``blocks.{s}.{i}.conv_dw.weight``         ``features.{k}.dw.0.weight``
        ``blocks.{s}.{i}.bn1.*``                  ``features.{k}.dw.1.*``
        ``blocks.{s}.{i}.conv_pw.weight``         ``features.{k}.pw.0.weight``
        ``blocks.{s}.{i}.bn2.*``                  ``features.{k}.pw.1.*``
        ``classifier.{weight,bias}``              ``classifier.1.{weight,bias}``
        ========================================  ===========================

        with ``k`` = 1 + the block's position when (s, i) are walked in order.
        """
        pat = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(.+)$")
        blocks = sorted({(int(m[1]), int(m[2])) for k in sd if (m := pat.match(k))})
        index = {b: k + 1 for k, b in enumerate(blocks)}
        part = {"conv_dw": "dw.0", "bn1": "dw.1", "conv_pw": "pw.0", "bn2": "pw.1"}
        out: dict[str, Tensor] = {}
        for key, v in sd.items():
            if m := pat.match(key):
                key = f"features.{index[(int(m[1]), int(m[2]))]}.{part[m[3]]}.{m[4]}"
            elif key.startswith("conv_stem."):
                key = "features.0.0." + key[len("conv_stem."):]
            elif key.startswith("bn1."):
                key = "features.0.1." + key[len("bn1."):]
            elif key in ("classifier.weight", "classifier.bias"):
                key = "classifier.1." + key.split(".")[-1]
            out[key] = v
        return out


_PAPER = "Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
_NOTES = ("ReLU6 as timm/TF-slim (paper: ReLU; act='relu'); 13th depthwise stride 1 (paper's table typo); "
          "channels rounded to multiples of 8")
_COMMON = dict(family="mobilenet_v1", input_size=(3, 224, 224), min_size=32, paper=_PAPER, year=2017, notes=_NOTES)

# MACs at 224 (FlopCounterMode / 2; the paper's Table 6 says 569M, 325M, 149M, 41M for alpha 1, 0.75, 0.5, 0.25)


@register_model("mobilenet_v1", params=4_231_976, macs=568_740_352, reference="timm mobilenetv1_100",
                aliases=("mobilenet_v1_100", "mobilenetv1_100"), **_COMMON)
def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNet V1, alpha 1."""
    kwargs.setdefault("width_mult", 1.0)
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("mobilenet_v1_075", params=2_585_560, macs=325_400_448, reference="timm _gen_mobilenet_v1(0.75)",
                **_COMMON)
def mobilenet_v1_075(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNet V1, alpha 0.75."""
    kwargs.setdefault("width_mult", 0.75)
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("mobilenet_v1_050", params=1_331_592, macs=149_497_088, reference="timm _gen_mobilenet_v1(0.5)",
                **_COMMON)
def mobilenet_v1_050(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNet V1, alpha 0.5."""
    kwargs.setdefault("width_mult", 0.5)
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("mobilenet_v1_025", params=470_072, macs=41_030_272, reference="timm _gen_mobilenet_v1(0.25)",
                **_COMMON)
def mobilenet_v1_025(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNet V1, alpha 0.25."""
    kwargs.setdefault("width_mult", 0.25)
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("mobilenet_v1_125", params=6_270_840, macs=879_516_800, reference="timm mobilenetv1_125",
                aliases=("mobilenetv1_125",), **_COMMON)
def mobilenet_v1_125(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV1:
    """MobileNet V1, alpha 1.25."""
    kwargs.setdefault("width_mult", 1.25)
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, **kwargs)
