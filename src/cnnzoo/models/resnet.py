"""ResNet (He et al. 2016) and its descendants: ResNeXt, Wide-ResNet, and the Bag of Tricks B/C/D forms.

The stage table below is the paper's Table 1. One ``BasicBlock`` (two 3x3 convs, ResNet-18/34) and one
``Bottleneck`` (1x1 -> 3x3 -> 1x1, ResNet-50/101/152) serve every variant through explicit arguments:

- ResNeXt (Xie et al. 2017): ``groups`` = cardinality and ``base_width`` widen the grouped 3x3.
- Wide-ResNet-50-2 (Zagoruyko & Komodakis 2016, torchvision's bottleneck form): ``base_width=128``.
- Where the stride sits in a downsampling bottleneck (He et al. 2019, "Bag of Tricks", fig. 2):
  ResNet-B (torchvision's default, a.k.a. v1.5) puts it on the 3x3; the 2016 paper (``resnet50_v1``)
  put it on the first 1x1, which then skips 3/4 of its input.
- ResNet-C replaces the 7x7 stem with three 3x3 convs (32-32-64); ResNet-D additionally does the
  shortcut's downsampling with a 2x2 average pool before a stride-1 1x1 conv.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``, ``fc``) and,
for the C/D stems and average-pool shortcuts, timm's (``conv1`` is a ``Sequential(conv, bn, relu,
conv, bn, relu, conv)``, ``downsample`` a ``Sequential(pool, conv, bn)``), so state_dicts from both
load without a key map. Every net here is tested to be the same function as torchvision's or timm's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from .layers import Backbone, StochasticDepth
from .registry import register_model


@dataclass(frozen=True)
class Stage:
    """One row of the paper's Table 1: a stage of residual blocks."""

    name: str  # torchvision's attribute name, hence the state_dict prefix
    paper: str  # the paper's name for the stage and its output map size at 224x224 input
    planes: int  # width of the block's 3x3 conv; a bottleneck block outputs 4 * planes channels
    stride: int  # stride of the stage's first block (the others keep the map size)


# He et al. 2016, Table 1. The stem (conv1 + max pool, output stride 4) comes before these rows.
STAGES: tuple[Stage, ...] = (
    Stage("layer1", "conv2_x 56x56", 64, 1),
    Stage("layer2", "conv3_x 28x28", 128, 2),
    Stage("layer3", "conv4_x 14x14", 256, 2),
    Stage("layer4", "conv5_x 7x7", 512, 2),
)

# Table 1's columns: block type and blocks per stage for each depth.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

PAPER = "He et al., Deep Residual Learning for Image Recognition (CVPR 2016)"
PAPER_TRICKS = ("He et al., Bag of Tricks for Image Classification with Convolutional Neural Networks "
                "(CVPR 2019)")
PAPER_RESNEXT = "Xie et al., Aggregated Residual Transformations for Deep Neural Networks (CVPR 2017)"
PAPER_WRN = "Zagoruyko & Komodakis, Wide Residual Networks (BMVC 2016)"


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3x3 convolution with "same" padding and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut: the block of ResNet-18/34 (paper fig. 5 left)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("dilation > 1 is not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)  # the stride sits here and in the shortcut
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.drop_path(self.bn2(self.conv2(out)))
        out += identity  # in place, as torchvision: BatchNorm's backward needs its input, not its output
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 -> 1x1 (expand x4) with a shortcut: ResNet-50/101/152, ResNeXt, Wide-ResNet.

    ``groups`` (ResNeXt's cardinality) and ``base_width`` set the 3x3's width:
    ``planes * base_width / 64 * groups`` (= ``planes`` for plain ResNet).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        # Departure from the 2016 paper (ResNet-B, torchvision's "v1.5", hence `resnet50b` = `resnet50`):
        # the stride sits on the 3x3 conv. The paper put it on the first 1x1, which reads only one pixel in
        # four; moving it keeps all the information and is worth ~0.5 % top-1 for ~5 % more MACs.
        # `stride_in_1x1=True` restores the paper's placement (`resnet50_v1`).
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.drop_path(self.bn3(self.conv3(out)))
        out += identity  # in place, as torchvision
        return self.relu(out)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(Backbone):
    """Stem -> the four stages of ``STAGES`` -> global average pool -> linear classifier.

    Features and head as timm's ResNet: ``forward_features`` ends with layer4, the head is pool, dropout,
    ``fc``; the multi-scale features are the stem's ReLU (stride 2) and the four stages.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage (a column of ``DEPTHS``).
        zero_init_residual: start every block's last BN at gamma=0, so each residual block begins as the
            identity (Goyal et al. 2017; the "zero gamma" trick of Bag of Tricks).
        groups, width_per_group: ResNeXt cardinality and per-group width; ``width_per_group=128`` is
            Wide-ResNet-50-2.
        replace_stride_with_dilation: three flags (layer2..4) that trade a stage's stride for dilation,
            as in torchvision (dense features for segmentation).
        stem_type: ``"7x7"`` (paper) or ``"deep"`` (ResNet-C/D: three 3x3 convs of widths
            ``stem_width, stem_width, 2 * stem_width``).
        avg_down: ResNet-D shortcut: 2x2 average pool, then a stride-1 1x1 conv.
        stride_in_1x1: the 2016 paper's stride placement in bottlenecks (see ``Bottleneck``).
        dropout: dropout before the classifier (0 as in the paper).
        drop_path_rate: stochastic depth, growing linearly from 0 to this over the blocks (0: off).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
        stem_type: str = "7x7",
        stem_width: int = 32,
        avg_down: bool = False,
        stride_in_1x1: bool = False,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self._norm_layer = norm_layer = norm_layer or nn.BatchNorm2d
        dilate = list(replace_stride_with_dilation or (False, False, False))
        if len(dilate) != 3:
            raise ValueError(f"replace_stride_with_dilation needs 3 flags (layer2..4), got {dilate}")
        if stride_in_1x1 and block is not Bottleneck:
            raise ValueError("stride_in_1x1 only means something for Bottleneck blocks")
        self.groups, self.base_width, self.avg_down = groups, width_per_group, avg_down
        self.dilation = 1
        self._block_kwargs = {"stride_in_1x1": True} if stride_in_1x1 else {}
        self._drop_path_rates = [drop_path_rate * i / max(1, sum(layers) - 1) for i in range(sum(layers))]

        # Stem: output stride 4 (conv1 stride 2, max pool stride 2).
        if stem_type == "7x7":
            self.inplanes = 64
            self.conv1: nn.Module = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        elif stem_type == "deep":
            # ResNet-C (Bag of Tricks fig. 2b): three 3x3 convs cost about the same as one 7x7 and add depth.
            # The last conv has no BN/ReLU of its own: `bn1`/`relu` below follow it, as in timm.
            self.inplanes = 2 * stem_width
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, stem_width, stride=2), norm_layer(stem_width), nn.ReLU(inplace=True),
                conv3x3(stem_width, stem_width), norm_layer(stem_width), nn.ReLU(inplace=True),
                conv3x3(stem_width, self.inplanes),
            )
        else:
            raise ValueError(f"stem_type must be '7x7' or 'deep', got {stem_type!r}")
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        for stage, n, dil in zip(STAGES, layers, [False, *dilate], strict=True):
            self.add_module(stage.name, self._make_layer(block, stage.planes, n, stage.stride, dil))

        self.num_features = STAGES[-1].planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)

        # torchvision's initialisation (He et al. 2015, fan_out); fc keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            self.zero_init_last_bn()

    def zero_init_last_bn(self) -> None:
        """Set gamma=0 in each block's last BN, so every residual block starts as the identity."""
        for m in self.modules():
            last = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
            if last is not None and last.weight is not None:
                nn.init.zeros_(last.weight)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        """A stage: its first block changes stride/width (and gets a projection shortcut), the rest repeat."""
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        out = planes * block.expansion
        if stride != 1 or self.inplanes != out:  # the shortcut follows from the shapes, no stage is special
            if self.avg_down:
                # ResNet-D (Bag of Tricks fig. 2c): average 2x2 windows instead of reading 1 pixel in 4.
                # ceil_mode/count_include_pad as timm, so odd maps keep their last row; index 0 stays an
                # Identity when the stage keeps its size, so the keys are timm's (downsample.1/.2).
                # (Dilated stages: timm pools 2x2 at stride 1 with "same" padding; here there is no pool.)
                pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1
                        else nn.Identity())
                downsample = nn.Sequential(pool, conv1x1(self.inplanes, out), self._norm_layer(out))
            else:  # the paper's option B: a strided 1x1 projection
                downsample = nn.Sequential(conv1x1(self.inplanes, out, stride), self._norm_layer(out))

        layers = []
        for i in range(blocks):
            layers.append(block(
                self.inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None,
                groups=self.groups, base_width=self.base_width,
                dilation=previous_dilation if i == 0 else self.dilation,  # torchvision's dilation schedule
                norm_layer=self._norm_layer, drop_path=self._drop_path_rates.pop(0), **self._block_kwargs,
            ))
            self.inplanes = out
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map (N, num_features, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    classifier_name, pre_logits_names = "fc", ("dropout",)

    def stage_modules(self) -> list[str]:
        return ["relu", "maxpool", *(s.name for s in STAGES)]

    def feature_chain(self) -> list[str]:
        return ["conv1", "bn1", "relu", "maxpool", *(s.name for s in STAGES)]

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's ResNet groups: the stem, then each stage (``coarse``) or each block."""
        return {"stem": r"^conv1|bn1|maxpool", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}


def _resnet(depth: int, num_classes: int, in_chans: int, **kwargs) -> ResNet:
    kind, layers = DEPTHS[depth]
    return ResNet(BLOCKS[kind], layers, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _tricks(depth: int, num_classes: int, in_chans: int, avg_down: bool, **kwargs) -> ResNet:
    # The Bag of Tricks nets train with "zero gamma" (sec. 3.1), as timm's init does: on by default here.
    kwargs.setdefault("zero_init_residual", True)
    return _resnet(depth, num_classes, in_chans, stem_type="deep", stem_width=32, avg_down=avg_down, **kwargs)


# ---- registry: (C, H, W) = (3, 224, 224); min_size 32 = total stride (the net itself runs on 1x1) ----
_COMMON = dict(family="resnet", input_size=(3, 224, 224), min_size=32)
_B_NOTE = "stride on the 3x3 of downsampling bottlenecks (ResNet-B / v1.5), as torchvision"


@register_model("resnet18", params=11_689_512, macs=1_814_073_344, paper=PAPER, year=2016,
                reference="torchvision.models.resnet18", notes="as the paper", **_COMMON)
def resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2)."""
    return _resnet(18, num_classes, in_chans, **kwargs)


@register_model("resnet34", params=21_797_672, macs=3_663_761_408, paper=PAPER, year=2016,
                reference="torchvision.models.resnet34", notes="as the paper", **_COMMON)
def resnet34(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3)."""
    return _resnet(34, num_classes, in_chans, **kwargs)


@register_model("resnet50", params=25_557_032, macs=4_089_184_256, paper=PAPER, year=2016,
                reference="torchvision.models.resnet50", notes=_B_NOTE, aliases=("resnet50b",), **_COMMON)
def resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3), torchvision's ResNet-B striding."""
    return _resnet(50, num_classes, in_chans, **kwargs)


@register_model("resnet101", params=44_549_160, macs=7_801_405_440, paper=PAPER, year=2016,
                reference="torchvision.models.resnet101", notes=_B_NOTE, **_COMMON)
def resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-101 (bottlenecks 3-4-23-3)."""
    return _resnet(101, num_classes, in_chans, **kwargs)


@register_model("resnet152", params=60_192_808, macs=11_513_626_624, paper=PAPER, year=2016,
                reference="torchvision.models.resnet152", notes=_B_NOTE, **_COMMON)
def resnet152(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-152 (bottlenecks 3-8-36-3)."""
    return _resnet(152, num_classes, in_chans, **kwargs)


@register_model("resnet50_v1", params=25_557_032, macs=3_857_973_248, paper=PAPER, year=2016,
                reference="", notes="as the paper (stride on the first 1x1 of downsampling bottlenecks)",
                **_COMMON)
def resnet50_v1(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-50 exactly as the 2016 paper places the stride (on the first 1x1)."""
    return _resnet(50, num_classes, in_chans, stride_in_1x1=True, **kwargs)


@register_model("resnet50c", params=25_576_264, macs=4_328_824_832, paper=PAPER_TRICKS, year=2019,
                reference="timm resnet50c", notes="as the paper (ResNet-C: deep 3x3 stem 32-32-64)",
                **_COMMON)
def resnet50c(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-50-C: the 7x7 stem replaced by three 3x3 convs."""
    return _tricks(50, num_classes, in_chans, avg_down=False, **kwargs)


_D_NOTE = "as the paper (ResNet-D: deep stem + 2x2 avg-pool shortcut); pool ceil_mode as timm"
_D_NOTE_SMALL = _D_NOTE + "; the paper shows D on ResNet-50 only"


@register_model("resnet18d", params=11_708_744, macs=2_053_713_920, paper=PAPER_TRICKS, year=2019,
                reference="timm resnet18d", notes=_D_NOTE_SMALL, **_COMMON)
def resnet18d(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-18-D (the D tweaks on basic blocks, as timm)."""
    return _tricks(18, num_classes, in_chans, avg_down=True, **kwargs)


@register_model("resnet34d", params=21_816_904, macs=3_903_401_984, paper=PAPER_TRICKS, year=2019,
                reference="timm resnet34d", notes=_D_NOTE_SMALL, **_COMMON)
def resnet34d(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-34-D."""
    return _tricks(34, num_classes, in_chans, avg_down=True, **kwargs)


@register_model("resnet50d", params=25_576_264, macs=4_328_824_832, paper=PAPER_TRICKS, year=2019,
                reference="timm resnet50d", notes=_D_NOTE, **_COMMON)
def resnet50d(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-50-D: deep stem and average-pool shortcuts (Bag of Tricks' best tweak)."""
    return _tricks(50, num_classes, in_chans, avg_down=True, **kwargs)


@register_model("resnet101d", params=44_568_392, macs=8_041_046_016, paper=PAPER_TRICKS, year=2019,
                reference="timm resnet101d", notes=_D_NOTE, **_COMMON)
def resnet101d(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNet-101-D."""
    return _tricks(101, num_classes, in_chans, avg_down=True, **kwargs)


@register_model("resnext50_32x4d", params=25_028_904, macs=4_230_479_872, paper=PAPER_RESNEXT, year=2017,
                reference="torchvision.models.resnext50_32x4d",
                notes="ResNet-B striding as torchvision; otherwise as the paper (form c, grouped 3x3)",
                **_COMMON)
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """ResNeXt-50 (32x4d): cardinality 32, 4 channels per group in the first stage."""
    return _resnet(50, num_classes, in_chans, groups=32, width_per_group=4, **kwargs)


@register_model("wide_resnet50_2", params=68_883_240, macs=11_398_021_120, paper=PAPER_WRN, year=2016,
                reference="torchvision.models.wide_resnet50_2",
                notes="torchvision's form: a ResNet-50 bottleneck with a 2x wider 3x3 (the paper's WRN-50-2 "
                      "ImageNet net); not the paper's CIFAR WRN-d-k basic blocks", **_COMMON)
def wide_resnet50_2(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> ResNet:
    """Wide-ResNet-50-2: bottleneck 3x3 (and 1x1s around it) twice as wide; outputs unchanged."""
    return _resnet(50, num_classes, in_chans, width_per_group=128, **kwargs)
