"""EfficientNet-B0..B7 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", arXiv:1905.11946).

B0 is the paper's Table 1: seven stages of MBConv blocks (MobileNetV2's inverted residual with
squeeze-and-excitation and SiLU/swish). B1..B7 are the same table scaled by compound coefficients: width
(channels, rounded to multiples of 8), depth (layers per stage, rounded up) and input resolution, plus a
larger dropout before the classifier. Stochastic depth drops residual branches with a probability that
grows linearly from 0 at the first block to 0.2 (just below it) at the last.

Keys are torchvision's (``features.{stage}.{block}.block.{M}``); checked equal to torchvision's nets.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

from torch import Tensor, nn

from ..layers import Conv2dNormActivation, InvertedResidual, make_divisible
from ..registry import register_model

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


class EfficientNet(nn.Module):
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
    ) -> None:
        super().__init__()
        p_max = stochastic_depth_prob if drop_path_rate is None else drop_path_rate
        norm = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)

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
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(head, num_classes))
        self._init_weights()

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

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.classifier(x)


_PAPER = "Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"

# name -> (params, MACs at the default resolution: FlopCounterMode / 2)
_FIGURES: dict[str, tuple[int, int]] = {
    "b0": (5_288_548, 385_814_752),
    "b1": (7_794_184, 686_802_832),
    "b2": (9_109_994, 1_087_529_456),
    "b3": (12_233_232, 1_827_141_392),
    "b4": (19_341_616, 4_393_771_024),
    "b5": (30_389_784, 10_266_384_752),
    "b6": (43_040_704, 19_067_593_536),
    "b7": (66_347_960, 37_745_884_192),
}


def _register(v: str) -> None:
    s = SCALING[v]
    name = f"efficientnet_{v}"
    # B5..B7: torchvision ported these weights from TensorFlow and keeps TF's BN settings.
    tf_bn = v in ("b5", "b6", "b7")
    notes = "as the paper; torchvision's input sizes"
    if tf_bn:
        notes += " and TF BN eps 1e-3 / momentum 0.01"
    if v == "b2":
        notes = "as the paper, but default input 288 (torchvision's; paper 260)"
    params, macs = _FIGURES[v]

    @register_model(name, family="efficientnet", input_size=(3, s.resolution, s.resolution), min_size=32,
                    params=params, macs=macs, paper=_PAPER, year=2019,
                    reference=f"torchvision.models.{name}", notes=notes)
    def factory(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> EfficientNet:
        kwargs.setdefault("dropout", s.dropout)
        if tf_bn:
            kwargs.setdefault("bn_eps", 1e-3)
            kwargs.setdefault("bn_momentum", 0.01)
        return EfficientNet(s.width, s.depth, num_classes=num_classes, in_chans=in_chans, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    globals()[name] = factory


for _v in SCALING:
    _register(_v)
