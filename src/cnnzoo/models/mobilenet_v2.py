"""MobileNet V2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
arXiv:1801.04381).

Each block expands a thin tensor t-fold with a 1x1 conv, filters it with a 3x3 depthwise conv, and projects
it back to a thin tensor with a 1x1 conv that has *no* activation (the linear bottleneck); the shortcut
joins the thin ends (the inverted residual). The paper's Table 2 is the ``(t, c, n, s)`` table below.

Keys are torchvision's (``features.N.conv.M``), so torchvision ``mobilenet_v2`` weights load as they are;
the net is checked equal to torchvision's. ``mobilenet_v2_cifar`` is the usual 32x32 adaptation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

from .layers import Backbone, Conv2dNormActivation, make_divisible
from .registry import register_model

__all__ = ["MobileNetV2", "InvertedResidualV2", "V2_ROWS", "init_mobilenet"]


class IRRow(NamedTuple):
    """One row of the paper's Table 2: expansion t, output channels c, repeats n, first stride s."""

    t: int
    c: int
    n: int
    s: int


STEM, HEAD = 32, 1280  # Table 2: conv2d 3x3 stride 2 -> 32; conv2d 1x1 -> 1280 before the pooling

V2_ROWS: tuple[IRRow, ...] = (
    IRRow(1, 16, 1, 1),
    IRRow(6, 24, 2, 2),
    IRRow(6, 32, 3, 2),
    IRRow(6, 64, 4, 2),
    IRRow(6, 96, 3, 1),
    IRRow(6, 160, 3, 2),
    IRRow(6, 320, 1, 1),
)


class InvertedResidualV2(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, + input when shapes agree.

    With t = 1 there is no expansion conv (Table 2's first row), so ``conv`` starts with the depthwise
    conv. The projection is a bare ``Conv2d`` + ``BatchNorm2d`` (keys ``conv.{-2,-1}``), as torchvision.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, 1, act="relu6", norm_layer=norm_layer))
        layers += [
            Conv2dNormActivation(hidden, hidden, 3, stride, groups=hidden, act="relu6", norm_layer=norm_layer),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            norm_layer(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.stride, self.out_channels = stride, out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(Backbone):
    """MobileNet V2 from the ``(t, c, n, s)`` rows; ``width_mult`` scales every layer but the last 1x1
    conv, which only grows (``1280 * max(1, width_mult)``), as the paper says for multipliers < 1.

    ``stem_stride`` and ``strides`` (one per row) override the paper's strides: the CIFAR form uses them.
    Departure from the paper: dropout 0.2 before the classifier (torchvision's training recipe).
    Features and head as timm's: ``forward_features`` ends with the 1x1 conv to 1280, the head is pool,
    dropout, linear; the multi-scale features are the last block at each stride, without that 1x1 conv.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        rows: tuple[IRRow, ...] = V2_ROWS,
        stem_stride: int = 2,
        strides: tuple[int, ...] | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm = norm_layer or nn.BatchNorm2d
        strides = tuple(r.s for r in rows) if strides is None else tuple(strides)
        if len(strides) != len(rows):
            raise ValueError(f"need one stride per row ({len(rows)}), got {len(strides)}")
        ch = make_divisible(STEM * width_mult)
        layers: list[nn.Module] = [Conv2dNormActivation(in_chans, ch, 3, stem_stride, act="relu6", norm_layer=norm)]
        for row, s in zip(rows, strides, strict=True):
            out = make_divisible(row.c * width_mult)
            for i in range(row.n):
                layers.append(InvertedResidualV2(ch, out, s if i == 0 else 1, row.t, norm_layer=norm))
                ch = out
        self.last_channel = make_divisible(HEAD * max(1.0, width_mult))
        layers.append(Conv2dNormActivation(ch, self.last_channel, 1, act="relu6", norm_layer=norm))
        self.features = nn.Sequential(*layers)
        self.num_features = self.last_channel
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # torchvision calls the functional form; no weights either way
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_mobilenet(self)

    classifier_name = "classifier.1"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def stage_modules(self) -> list[str]:
        return super().stage_modules()[:-1]  # not the last 1x1 conv (timm's conv_head)


def init_mobilenet(model: nn.Module) -> None:
    """torchvision's MobileNet init: Kaiming-normal (fan-out) convs, BN = identity, Linear N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks"


@register_model(
    "mobilenet_v2", family="mobilenet_v2", input_size=(3, 224, 224), min_size=32, params=3_504_872,
    macs=300_774_272, paper=_PAPER, year=2018, reference="torchvision.models.mobilenet_v2",
    notes="as the paper, plus torchvision's dropout 0.2 before the classifier",
)
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, **kwargs)


# The common CIFAR adaptation (e.g. kuangliu/pytorch-cifar): a 32x32 image would be 1x1 after the
# ImageNet net's five stride-2 steps, so the stem and the first stride-2 row (c=24) use stride 1. The net
# then downsamples 8x (32 -> 4 before the pooling) and keeps every weight shape of mobilenet_v2 (so the
# ImageNet weights still load); on a 32x32 image it costs 88M MACs, 14x mobilenet_v2's 6.1M.
_CIFAR_STRIDES = (1, 1, 2, 2, 1, 2, 1)


@register_model(
    "mobilenet_v2_cifar", family="mobilenet_v2", input_size=(3, 32, 32), min_size=8, params=2_236_682,
    macs=87_976_448, paper=_PAPER, year=2018, num_classes=10,
    notes="32x32 form: stride 1 in the stem and in the first stride-2 row (c=24); total stride 8",
)
def mobilenet_v2_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> MobileNetV2:
    kwargs.setdefault("stem_stride", 1)
    kwargs.setdefault("strides", _CIFAR_STRIDES)
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, **kwargs)
