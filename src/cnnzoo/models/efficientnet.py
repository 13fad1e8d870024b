"""EfficientNet-B0..B7 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", arXiv:1905.11946).

B0 is the paper's Table 1: seven stages of MBConv blocks (MobileNetV2's inverted residual with
squeeze-and-excitation and SiLU/swish). B1..B7 are the same table scaled by compound coefficients: width
(channels, rounded to multiples of 8), depth (layers per stage, rounded up) and input resolution, plus a
larger dropout before the classifier. Stochastic depth drops residual branches with a probability that
grows linearly from 0 at the first block to 0.2 (just below it) at the last.

Keys are torchvision's (``features.{stage}.{block}.block.{M}``); checked equal to torchvision's nets.

Features and head as timm's EfficientNet: ``forward_features`` ends with the 1x1 head conv (1280 channels
for B0), the head is pool, dropout, linear; the multi-scale features are the last stage at each stride
(stages 1, 2, 3, 5, 7 of the table: 16, 24, 40, 112, 320 channels for B0), without the head conv.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from torch import Tensor, nn

from .layers import Backbone, Conv2dNormActivation, InvertedResidual, make_divisible
from .registry import register_model

__all__ = ["EfficientNet", "MBConvRow", "B0_ROWS", "SCALING"]


class MBConvRow(NamedTuple):
    """One stage of the paper's Table 1 (B0): MBConv{expand}, k{kernel}, first stride, channels, layers."""

    expand: int
    kernel: int
    stride: int
    in_ch: int
    out_ch: int
    layers: int


# Table 1: stage 1 is the 3x3 stem conv (32 channels), stage 9 the 1x1 conv to 1280 + pooling + FC.
B0_ROWS: tuple[MBConvRow, ...] = (
    MBConvRow(1, 3, 1, 32, 16, 1),
    MBConvRow(6, 3, 2, 16, 24, 2),
    MBConvRow(6, 5, 2, 24, 40, 2),
    MBConvRow(6, 3, 2, 40, 80, 3),
    MBConvRow(6, 5, 1, 80, 112, 3),
    MBConvRow(6, 5, 2, 112, 192, 4),
    MBConvRow(6, 3, 1, 192, 320, 1),
)


class Scaling(NamedTuple):
    """Compound scaling coefficients of one variant (from the reference code; the paper's Section 3.3)."""

    width: float
    depth: float
    resolution: int
    dropout: float


# ``resolution`` is the default input size, torchvision's evaluation crop; it equals the paper's for all
# but B2, which torchvision evaluates at 288 (paper: 260).
SCALING: dict[str, Scaling] = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 288, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
}


class EfficientNet(Backbone):
    """EfficientNet from stage rows and width/depth multipliers.

    Per block, SE squeezes to a quarter of the block's *input* channels (not of the expanded ones), and
    stochastic depth for block i of N is ``stochastic_depth_prob * i / N`` (torchvision's schedule; timm
    and the TF reference use the same linear rule). ``drop_path_rate`` is accepted as timm's name for it.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        dropout: float = 0.2,
        num_classes: int = 1000,
        in_chans: int = 3,
        stochastic_depth_prob: float = 0.2,
        drop_path_rate: float | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        rows: tuple[MBConvRow, ...] = B0_ROWS,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        p_max = stochastic_depth_prob if drop_path_rate is None else drop_path_rate
        norm = norm_layer or partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)  # (as torchvision's)

        def width(c: int) -> int:
            return make_divisible(c * width_mult)

        def depth(n: int) -> int:
            return int(math.ceil(n * depth_mult))

        layers: list[nn.Module] = [Conv2dNormActivation(in_chans, width(rows[0].in_ch), 3, 2, act="silu",
                                                        norm_layer=norm)]
        total = sum(depth(r.layers) for r in rows)
        k = 0
        for r in rows:
            stage: list[nn.Module] = []
            ch, out = width(r.in_ch), width(r.out_ch)
            for i in range(depth(r.layers)):
                stage.append(InvertedResidual(
                    ch, make_divisible(ch * r.expand), out, r.kernel, r.stride if i == 0 else 1,
                    act="silu", se_channels=max(1, ch // 4), se_act="silu", se_gate="sigmoid",
                    norm_layer=norm, drop_path=p_max * k / total,
                ))
                ch, k = out, k + 1
            layers.append(nn.Sequential(*stage))
        head = 4 * ch  # 1280 for B0
        layers.append(Conv2dNormActivation(ch, head, 1, act="silu", norm_layer=norm))
        self.features = nn.Sequential(*layers)
        self.num_features = head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(head, num_classes))
        self._init_weights()

    classifier_name = "classifier.1"

    def _init_weights(self) -> None:
        """torchvision's: Kaiming-normal (fan-out) convs, BN = identity, Linear uniform +-1/sqrt(out)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
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

    def stage_modules(self) -> list[str]:
        return super().stage_modules()[:-1]  # not the 1x1 head conv (timm's conv_head)


_PAPER = "Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"
_COMMON = dict(family="efficientnet", min_size=32, paper=_PAPER, year=2019)
_NOTES = "as the paper; torchvision's input sizes"
# B5..B7: torchvision ported these weights from TensorFlow and keeps TF's BN settings.
_TF_NOTES = _NOTES + " and TF BN eps 1e-3 / momentum 0.01"
_B2_NOTES = "as the paper, but default input 288 (torchvision's; paper 260)"


def _efficientnet(variant: str, num_classes: int, in_chans: int, tf_bn: bool = False, **kwargs) -> EfficientNet:
    """One variant of ``SCALING`` with its dropout (and TF's BN settings for the TF-ported B5..B7)."""
    s = SCALING[variant]
    kwargs.setdefault("dropout", s.dropout)
    if tf_bn:
        kwargs.setdefault("bn_eps", 1e-3)
        kwargs.setdefault("bn_momentum", 0.01)
    return EfficientNet(s.width, s.depth, num_classes=num_classes, in_chans=in_chans, **kwargs)


# params, MACs at the default resolution (FlopCounterMode / 2)
@register_model("efficientnet_b0", input_size=(3, 224, 224), params=5_288_548, macs=385_814_752,
                reference="torchvision.models.efficientnet_b0", notes=_NOTES, **_COMMON)
def efficientnet_b0(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B0 (``SCALING["b0"]``)."""
    return _efficientnet("b0", num_classes, in_chans, **kwargs)


@register_model("efficientnet_b1", input_size=(3, 240, 240), params=7_794_184, macs=686_802_832,
                reference="torchvision.models.efficientnet_b1", notes=_NOTES, **_COMMON)
def efficientnet_b1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B1 (``SCALING["b1"]``)."""
    return _efficientnet("b1", num_classes, in_chans, **kwargs)


@register_model("efficientnet_b2", input_size=(3, 288, 288), params=9_109_994, macs=1_087_529_456,
                reference="torchvision.models.efficientnet_b2", notes=_B2_NOTES, **_COMMON)
def efficientnet_b2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B2 (``SCALING["b2"]``)."""
    return _efficientnet("b2", num_classes, in_chans, **kwargs)


@register_model("efficientnet_b3", input_size=(3, 300, 300), params=12_233_232, macs=1_827_141_392,
                reference="torchvision.models.efficientnet_b3", notes=_NOTES, **_COMMON)
def efficientnet_b3(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B3 (``SCALING["b3"]``)."""
    return _efficientnet("b3", num_classes, in_chans, **kwargs)


@register_model("efficientnet_b4", input_size=(3, 380, 380), params=19_341_616, macs=4_393_771_024,
                reference="torchvision.models.efficientnet_b4", notes=_NOTES, **_COMMON)
def efficientnet_b4(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B4 (``SCALING["b4"]``)."""
    return _efficientnet("b4", num_classes, in_chans, **kwargs)


@register_model("efficientnet_b5", input_size=(3, 456, 456), params=30_389_784, macs=10_266_384_752,
                reference="torchvision.models.efficientnet_b5", notes=_TF_NOTES, **_COMMON)
def efficientnet_b5(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B5 (``SCALING["b5"]``)."""
    return _efficientnet("b5", num_classes, in_chans, tf_bn=True, **kwargs)


@register_model("efficientnet_b6", input_size=(3, 528, 528), params=43_040_704, macs=19_067_593_536,
                reference="torchvision.models.efficientnet_b6", notes=_TF_NOTES, **_COMMON)
def efficientnet_b6(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B6 (``SCALING["b6"]``)."""
    return _efficientnet("b6", num_classes, in_chans, tf_bn=True, **kwargs)


@register_model("efficientnet_b7", input_size=(3, 600, 600), params=66_347_960, macs=37_745_884_192,
                reference="torchvision.models.efficientnet_b7", notes=_TF_NOTES, **_COMMON)
def efficientnet_b7(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
    """EfficientNet-B7 (``SCALING["b7"]``)."""
    return _efficientnet("b7", num_classes, in_chans, tf_bn=True, **kwargs)
