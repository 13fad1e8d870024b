"""Network in Network (Lin, Chen & Yan 2014): mlpconv blocks and global average pooling, no FC layers.

An mlpconv block is a spatial convolution followed by two 1x1 convolutions (the paper's "cascaded cross
channel parametric pooling", ``cccp`` in the authors' Caffe files), each with ReLU: a small MLP slid over the
image. The last block outputs one map per class and a global average pool turns the maps into logits.

- ``nin_cifar``: the paper's CIFAR-10 net (Section 4.2 and the authors' Caffe model): blocks 192-160-96,
  192-192-192, 192-192-classes with 5x5, 5x5 and 3x3 spatial kernels; 3x3/2 max pool then dropout after the
  first block, 3x3/2 average pool then dropout after the second; global average pool (8x8 at 32x32). Pools
  round up as Caffe's do (``ceil_mode=True``: 32 -> 16 -> 8).
- ``nin``: the ImageNet NiN as in "Dive into Deep Learning" (d2l): blocks 11x11/4-96, 5x5-256, 3x3-384 with
  3x3/2 max pools, dropout, then a 3x3 block with one map per class. The authors' own ImageNet model differs
  in its fourth block (3x3-1024, 1x1-1024, 1x1-classes) and rounds its pools up; we follow d2l's widely used
  form, whose parameter count does not grow a 1024-wide block.

Both keep the ReLU after the last (class-map) convolution before the global pool, as the authors' Caffe
models and d2l do. Initialisation: Kaiming normal (the authors' fixed Gaussian standard deviations were tuned
to their learning-rate schedule).

Features and head (timm has no NiN): the paper's classifier is the last mlpconv block, which makes one map
per class, and the global average pool. So ``forward_features`` is every block before it (384 channels at
stride 32 for ``nin``, 192 at stride 4 for ``nin_cifar``); ``get_classifier()`` is that last block
(``features.block4`` / ``features.block3``, keys unchanged); ``forward_head(x, pre_logits=True)`` and the net
after ``reset_classifier(0)`` return the global average of the features; ``reset_classifier(n)`` builds a
fresh last block for n classes. The multi-scale features are the last block or pool at each stride.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import Backbone
from .registry import register_model

__all__ = ["NiN", "MlpConv", "Block", "NIN_IMAGENET", "NIN_CIFAR"]

C = -1  # "as many channels as classes" in the tables below


@dataclass(frozen=True)
class Block:
    """One mlpconv block and what follows it."""

    widths: tuple[int, int, int]  # spatial conv, then the two 1x1 convs (C = num_classes)
    kernel: int
    stride: int = 1
    padding: int = 0
    pool: str = ""  # "max" | "avg" | "" (3x3, stride 2)
    dropout: bool = False


NIN_IMAGENET: tuple[Block, ...] = (  # d2l's ImageNet NiN, 224x224
    Block((96, 96, 96), 11, stride=4, padding=0, pool="max"),  # 224 -> 54 -> 26
    Block((256, 256, 256), 5, padding=2, pool="max"),  # -> 12
    Block((384, 384, 384), 3, padding=1, pool="max", dropout=True),  # -> 5
    Block((C, C, C), 3, padding=1),
)

NIN_CIFAR: tuple[Block, ...] = (  # the paper's CIFAR-10 net, 32x32
    Block((192, 160, 96), 5, padding=2, pool="max", dropout=True),  # 32 -> 16
    Block((192, 192, 192), 5, padding=2, pool="avg", dropout=True),  # -> 8
    Block((192, 192, C), 3, padding=1),
)


class MlpConv(nn.Sequential):
    """conv(k) -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv -> ReLU."""

    def __init__(self, in_chans: int, widths: tuple[int, int, int], kernel: int, stride: int, padding: int):
        a, b, c = widths
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_chans, a, kernel, stride, padding), relu=nn.ReLU(inplace=True),
            cccp1=nn.Conv2d(a, b, 1), relu1=nn.ReLU(inplace=True),
            cccp2=nn.Conv2d(b, c, 1), relu2=nn.ReLU(inplace=True),
        ))


class NiN(Backbone):
    """``features`` (mlpconv blocks with pools/dropout, walked from a table) -> global average pool."""

    def __init__(
        self,
        table: tuple[Block, ...],
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        ch = in_chans
        for i, blk in enumerate(table, start=1):
            widths = tuple(num_classes if w == C else w for w in blk.widths)
            layers[f"block{i}"] = MlpConv(ch, widths, blk.kernel, blk.stride, blk.padding)  # type: ignore[arg-type]
            if blk.pool == "max":
                layers[f"pool{i}"] = nn.MaxPool2d(3, stride=2, ceil_mode=ceil_mode)
            elif blk.pool == "avg":
                layers[f"pool{i}"] = nn.AvgPool2d(3, stride=2, ceil_mode=ceil_mode)
            if blk.dropout:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            ch = widths[-1]
        assert ch == num_classes, "the last block must output one map per class"
        self.features = nn.Sequential(layers)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self._last, self._last_row = f"block{len(table)}", table[-1]
        self.classifier_name = f"features.{self._last}"
        self.num_features = self.features[-1].conv.in_channels
        _init_convs(self)

    pool_name = "global_pool"

    def forward_features(self, x: Tensor) -> Tensor:
        for name, layer in self.features.named_children():
            if name == self._last:
                break
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        # = forward_head(forward_features(x)), with ``features`` run as one module, as it always was
        return torch.flatten(self.global_pool(self.features(x)), 1)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The class-map block (unless ``pre_logits``), then the global average pool."""
        if not pre_logits:
            x = self.get_classifier()(x)
        return torch.flatten(self.global_pool(x), 1)

    def head_modules(self) -> list[str]:
        return ["global_pool"]  # the class-map block sits in ``features``: reset_classifier(0) removes it

    def stage_modules(self) -> list[str]:
        return [f"features.{n}" for n, m in self.features.named_children()
                if n != self._last and not isinstance(m, nn.Dropout)]

    def new_classifier(self, in_features: int, num_classes: int) -> nn.Module:
        row = self._last_row
        widths = tuple(num_classes if w == C else w for w in row.widths)
        block = MlpConv(in_features, widths, row.kernel, row.stride, row.padding)  # type: ignore[arg-type]
        _init_convs(block)
        return block


def _init_convs(model: nn.Module) -> None:
    """Kaiming-normal (fan-out) convs, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


_PAPER = "Network In Network (Lin, Chen & Yan)"


@register_model(
    "nin", family="nin", input_size=(3, 224, 224), min_size=67, params=7_439_608, macs=965_572_864,
    paper=_PAPER, year=2014, aliases=("network_in_network",),
    notes="d2l's ImageNet form (last block 3x3 conv to one map per class, floor pools); the authors' "
          "ImageNet model has a 1024-wide fourth block")
def nin(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> NiN:
    """ImageNet NiN as in d2l (``dropout`` kwarg)."""
    return NiN(NIN_IMAGENET, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(
    "nin_cifar", family="nin", input_size=(3, 32, 32), min_size=4, num_classes=10, params=966_986,
    macs=222_486_528, paper=_PAPER, year=2014, aliases=("nin_cifar10",),
    notes="as the paper's CIFAR-10 Caffe model (pools round up); Kaiming init instead of fixed Gaussians")
def nin_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> NiN:
    """The paper's CIFAR-10 NiN (``dropout`` kwarg)."""
    kwargs.setdefault("ceil_mode", True)
    return NiN(NIN_CIFAR, num_classes=num_classes, in_chans=in_chans, **kwargs)
