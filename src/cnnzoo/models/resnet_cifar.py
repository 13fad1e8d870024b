"""ResNets for small (32x32) images, where the ImageNet stem would throw the image away.

An ImageNet ResNet shrinks its input 4x before the first residual block (7x7 stride-2 conv, stride-2 max
pool): a 32x32 CIFAR image reaches layer1 as 8x8 and layer4 as 1x1. Two small-image forms are common, and
cnnzoo has both, because they answer different questions:

- ``resnet18_cifar`` / ``resnet34_cifar``: the ImageNet ResNet-18/34 stages with a 3x3 stride-1 stem of 64
  channels and no max pool (the adaptation used by most CIFAR training code, e.g. kuangliu/pytorch-cifar,
  which reports 93 % on CIFAR-10). The map is 32x32 in layer1 and 4x4 in layer4. It is the strong, heavy
  baseline (11M parameters, 0.56 GMACs) and keeps torchvision's keys for layer1..4 and fc, so an ImageNet
  ResNet-18 checkpoint loads into everything but the stem (``load_pretrained(..., strict=False)``).
- ``resnet20_cifar`` ... ``resnet110_cifar``: the paper's own CIFAR-10 nets (He et al. 2016, sec. 4.2),
  6n+2 layers: a 3x3 conv of 16, then three stages of n basic blocks with 16, 32, 64 channels on 32x32,
  16x16, 8x8 maps, global average pool, a 10-way linear layer. Shortcuts are the paper's option A
  (identity; where a stage halves the map and doubles the width, the shortcut subsamples by 2 and pads
  the new channels with zeros), so these nets have exactly the paper's parameter counts (Table 6:
  0.27M ... 1.7M; test errors 8.75 % for ResNet-20, 7.51 % (32), 7.17 % (44), 6.97 % (56), 6.43 % (110)).
  They are tiny and fast (ResNet-20: 41M MACs), which is what one wants to compare depth on small data.
  ``shortcut="B"`` gives the common variant with 1x1-conv projection shortcuts (a few more parameters).

Both take (3, 32, 32) input and default to 10 classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Backbone
from .registry import register_model
from .resnet import DEPTHS, PAPER, BasicBlock, ResNet, Stage, conv1x1, conv3x3

# He et al. 2016, sec. 4.2: "The numbers of filters are {16, 32, 64} respectively", on maps of
# {32, 16, 8}; each stage has 2n 3x3 layers (n basic blocks). Depth = 6n + 2.
CIFAR_STAGES: tuple[Stage, ...] = (
    Stage("layer1", "32x32, 2n layers", 16, 1),
    Stage("layer2", "16x16, 2n layers", 32, 2),
    Stage("layer3", "8x8, 2n layers", 64, 2),
)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # registered depths of the paper's Table 6 (1202: CifarResNet(1202))


class ShortcutA(nn.Module):
    """The paper's option A shortcut: identity, subsampled by ``stride`` and zero-padded to the new width.

    It has no parameters, so a residual net has exactly the parameters of its plain counterpart. The new
    channels are split evenly before and after the old ones (as akamaster/pytorch_resnet_cifar10, whose
    checkpoints then load); the paper does not say where the zeros go, and either gives the same family
    of functions.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # pixels 0, 2, 4...: where the 3x3 stride-2 conv centres
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class CifarResNet(Backbone):
    """The paper's CIFAR-10 ResNet with 6n+2 layers (sec. 4.2).

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, 1202 in the paper).
        shortcut: ``"A"`` (paper: parameter-free, zero-padded identity) or ``"B"`` (1x1 conv + BN
            projection where the shape changes, keys ``downsample.0/1`` as torchvision).
        zero_init_residual: start every block's last BN at gamma=0 (not in the paper; off by default).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "A",
        zero_init_residual: bool = False,
        norm_layer: Callable[..., nn.Module] | None = None,
        stages: Sequence[Stage] = CIFAR_STAGES,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes = stages[0].planes
        self.conv1 = conv3x3(in_chans, self.inplanes)  # the paper's "first layer is 3x3 convolutions"
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        for stage in stages:
            blocks = []
            for i in range(n):
                stride = stage.stride if i == 0 else 1
                downsample: nn.Module | None = None
                if stride != 1 or self.inplanes != stage.planes:
                    downsample = (ShortcutA(self.inplanes, stage.planes, stride) if shortcut == "A" else
                                  nn.Sequential(conv1x1(self.inplanes, stage.planes, stride),
                                                norm_layer(stage.planes)))
                blocks.append(BasicBlock(self.inplanes, stage.planes, stride, downsample,
                                         norm_layer=norm_layer))
                self.inplanes = stage.planes
            self.add_module(stage.name, nn.Sequential(*blocks))
        self.num_features = self.inplanes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.num_features, num_classes)
        self._stage_names = [s.name for s in stages]

        # The paper initialises "as in [13]" (He et al. 2015): N(0, 2/n) with n = k*k*c_in (fan_in).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def convert_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map akamaster/pytorch_resnet_cifar10 keys (its classifier is ``linear``) to ours (``fc``)."""
        return {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v for k, v in sd.items()}

    classifier_name = "fc"

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return x

    def stage_modules(self) -> list[str]:
        return ["relu", *self._stage_names]

    def feature_chain(self) -> list[str]:
        return ["conv1", "bn1", "relu", *self._stage_names]

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's ResNet groups: the stem, then each stage (``coarse``) or each block."""
        return {"stem": r"^conv1|bn1|maxpool", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}


class ResNetCifarStem(ResNet):
    """An ImageNet ResNet (torchvision's stages and keys) with a 3x3 stride-1 stem and no max pool."""

    def __init__(self, depth: int = 18, num_classes: int = 10, in_chans: int = 3, **kwargs) -> None:
        kind, layers = DEPTHS[depth]
        if kind != "basic":
            raise ValueError("the CIFAR-stem form is registered for ResNet-18/34 (basic blocks)")
        super().__init__(BasicBlock, layers, num_classes=num_classes, in_chans=in_chans, **kwargs)
        # Departure from the ImageNet net: a 3x3 stride-1 conv replaces the 7x7 stride-2 one and the max
        # pool goes, so a 32x32 image keeps its resolution through layer1 (total stride 8 instead of 32).
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

    def convert_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """Drop an ImageNet checkpoint's 7x7 ``conv1.weight``: it does not fit the 3x3 stem, which stays
        freshly initialised (load with ``strict=False``; it is then listed as missing)."""
        w = sd.get("conv1.weight")
        if w is not None and w.shape[-2:] != self.conv1.weight.shape[-2:]:
            sd = {k: v for k, v in sd.items() if k != "conv1.weight"}
        return sd


# ---- registry: (3, 32, 32), 10 classes; min_size = total stride (the nets themselves run on 1x1) ----
_COMMON = dict(family="resnet", input_size=(3, 32, 32), num_classes=10)
_STEM_NOTE = "ImageNet ResNet stages with a 3x3 stride-1 stem and no max pool (common CIFAR adaptation)"


@register_model("resnet18_cifar", min_size=8, params=11_173_962, macs=555_422_720, paper=PAPER, year=2016,
                notes=_STEM_NOTE, **_COMMON)
def resnet18_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNetCifarStem:
    """ResNet-18 for 32x32 input: 3x3 stem, no max pool."""
    return ResNetCifarStem(18, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("resnet34_cifar", min_size=8, params=21_282_122, macs=1_159_402_496, paper=PAPER, year=2016,
                notes=_STEM_NOTE, **_COMMON)
def resnet34_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNetCifarStem:
    """ResNet-34 for 32x32 input: 3x3 stem, no max pool."""
    return ResNetCifarStem(34, num_classes=num_classes, in_chans=in_chans, **kwargs)


_PAPER_NOTE = "as the paper (sec. 4.2, option A shortcuts)"


@register_model("resnet20_cifar", min_size=4, params=269_722, macs=40_551_040, paper=PAPER, year=2016,
                notes=_PAPER_NOTE, **_COMMON)
def resnet20_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """The paper's CIFAR-10 ResNet-20 (n=3: 18 conv layers in blocks, plus the stem conv and fc)."""
    return CifarResNet(20, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("resnet32_cifar", min_size=4, params=464_154, macs=68_862_592, paper=PAPER, year=2016,
                notes=_PAPER_NOTE, **_COMMON)
def resnet32_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """The paper's CIFAR-10 ResNet-32 (n=5: 30 conv layers in blocks, plus the stem conv and fc)."""
    return CifarResNet(32, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("resnet44_cifar", min_size=4, params=658_586, macs=97_174_144, paper=PAPER, year=2016,
                notes=_PAPER_NOTE, **_COMMON)
def resnet44_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """The paper's CIFAR-10 ResNet-44 (n=7: 42 conv layers in blocks, plus the stem conv and fc)."""
    return CifarResNet(44, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("resnet56_cifar", min_size=4, params=853_018, macs=125_485_696, paper=PAPER, year=2016,
                notes=_PAPER_NOTE, **_COMMON)
def resnet56_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """The paper's CIFAR-10 ResNet-56 (n=9: 54 conv layers in blocks, plus the stem conv and fc)."""
    return CifarResNet(56, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model("resnet110_cifar", min_size=4, params=1_727_962, macs=252_887_680, paper=PAPER, year=2016,
                notes=_PAPER_NOTE, **_COMMON)
def resnet110_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> CifarResNet:
    """The paper's CIFAR-10 ResNet-110 (n=18: 108 conv layers in blocks, plus the stem conv and fc)."""
    return CifarResNet(110, num_classes=num_classes, in_chans=in_chans, **kwargs)
