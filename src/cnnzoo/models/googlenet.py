"""GoogLeNet / Inception-v1 (Szegedy et al. 2014, "Going Deeper with Convolutions").

The paper's Table 1 as data: nine Inception modules, each with four parallel branches (1x1; 1x1 reduce ->
3x3; 1x1 reduce -> 5x5; 3x3 max pool -> 1x1 projection) concatenated along channels, with 3x3/2 max pools
between the stages. Two auxiliary classifiers sit on 4a and 4d during training.

- ``googlenet``: torchvision's form, so its weights load: BatchNorm after every conv (eps 1e-3), a 3x3 conv in
  the branch the paper gives a 5x5 (a bug kept for the sake of the published weights,
  pytorch/vision#906), a 2x2 (not 3x3) max pool before stage 5, no LRN, dropout 0.2, adaptive pooling in the
  aux heads, truncated-normal initialisation.
- ``googlenet_paper``: the paper's net, following the authors' Caffe model (bvlc_googlenet): conv + ReLU
  without BN, a real 5x5 branch, local response normalisation after the stem's first pool and after conv3
  (size 5, alpha 1e-4, beta 0.75, k 1: Caffe's LRN already divides alpha by the size, as torch does), 3x3/2
  pools rounding up, dropout 0.4 before the classifier, aux heads with a 5x5/3 average pool, a 1x1 conv of
  128, FC 1024, dropout 0.7 and FC to the classes; Caffe's "xavier" initialisation, biases 0.2.

Both: ``aux_logits=True`` by default. In training mode the forward returns ``GoogLeNetOutputs(logits,
aux_logits2, aux_logits1)`` (torchvision's order; the paper weights the aux losses by 0.3), in eval mode
the logits only. The final 7x7 average pool is an adaptive pool (the same at 224) so that other sizes work.

Features and head (timm has no GoogLeNet; as its Inception-v3): ``forward_features`` ends with inception5b
(1024 channels, stride 32); the head is pool, dropout, ``fc``. The aux heads are training-time classifiers,
not features: ``forward_features`` never runs them, ``reset_classifier(n)`` gives them fresh n-way outputs too
(and removes them for n = 0), and a features-only net drops them. The multi-scale features are the last
layer at each stride: conv1, conv3 (lrn2 in the paper form), inception3b, inception4e, inception5b.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CnnzooError
from .layers import Backbone, LocalResponseNorm
from .registry import register_model

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux", "InceptionRow", "INCEPTION_TABLE"]


@dataclass(frozen=True)
class InceptionRow:
    """One row of Table 1: output channels of each branch ("#3x3 reduce" = the 1x1 before the 3x3)."""

    name: str
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int

    @property
    def out(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


# Table 1 from inception (3a) on; a string is a 3x3/2 max pool between stages. Input: 192@28x28 at 224.
INCEPTION_TABLE: tuple[InceptionRow | str, ...] = (
    InceptionRow("inception3a", 64, 96, 128, 16, 32, 32),  # -> 256@28x28
    InceptionRow("inception3b", 128, 128, 192, 32, 96, 64),  # -> 480
    "maxpool3",  # -> 14x14
    InceptionRow("inception4a", 192, 96, 208, 16, 48, 64),  # -> 512   (aux1 here)
    InceptionRow("inception4b", 160, 112, 224, 24, 64, 64),  # -> 512
    InceptionRow("inception4c", 128, 128, 256, 24, 64, 64),  # -> 512
    InceptionRow("inception4d", 112, 144, 288, 32, 64, 64),  # -> 528   (aux2 here)
    InceptionRow("inception4e", 256, 160, 320, 32, 128, 128),  # -> 832
    "maxpool4",  # -> 7x7
    InceptionRow("inception5a", 256, 160, 320, 32, 128, 128),  # -> 832
    InceptionRow("inception5b", 384, 192, 384, 48, 128, 128),  # -> 1024
)
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output (torchvision's field names and order)."""

    logits: Tensor
    aux_logits2: Tensor | None
    aux_logits1: Tensor | None


class BasicConv2d(nn.Module):
    """torchvision's conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; attribute names ``conv``/``bn``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class ConvReLU(nn.Module):
    """The paper's conv (with bias) -> ReLU; no normalisation (2014, before BatchNorm)."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x), inplace=True)


class Inception(nn.Module):
    """Four branches concatenated: 1x1 | 1x1 -> 3x3 | 1x1 -> ``k5`` x ``k5`` | 3x3/1 max pool -> 1x1."""

    def __init__(self, in_channels: int, row: InceptionRow, conv_block: type[nn.Module], k5: int = 5) -> None:
        super().__init__()
        self.branch1 = conv_block(in_channels, row.ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, row.ch3x3red, kernel_size=1),
            conv_block(row.ch3x3red, row.ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(
            conv_block(in_channels, row.ch5x5red, kernel_size=1),
            # The paper: 5x5. torchvision: 3x3 (k5=3), kept so that its published weights load.
            conv_block(row.ch5x5red, row.ch5x5, kernel_size=k5, padding=k5 // 2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, row.pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


@torch.fx.wrap  # a leaf for torch.fx: the size test below cannot be traced symbolically
def aux_pool(x: Tensor, paper: bool) -> Tensor:
    """The aux heads' pooling to 4x4: the paper's 5x5/3 average pool (maps of at least 5x5) followed by an
    adaptive pool that is an identity at 224 and keeps the FC input at 2048 for other sizes."""
    if paper and min(x.shape[-2:]) >= 5:
        x = F.avg_pool2d(x, kernel_size=5, stride=3, ceil_mode=True)
    return F.adaptive_avg_pool2d(x, (4, 4))


class InceptionAux(nn.Module):
    """Auxiliary classifier: average pool to 4x4 -> 1x1 conv 128 -> FC 1024 + ReLU -> dropout -> FC.

    ``paper_pool=True``: the paper's 5x5/3 average pool (14x14 -> 4x4 at 224), then an adaptive pool to 4x4
    that is an identity at 224 and keeps the FC input at 2048 for other sizes; maps smaller than 5x5 (inputs
    below ~80 px) skip the 5x5 pool (see :func:`aux_pool`). ``False``: torchvision's adaptive 4x4 pool.
    """

    def __init__(self, in_channels: int, num_classes: int, conv_block: type[nn.Module], dropout: float = 0.7,
                 paper_pool: bool = False) -> None:
        super().__init__()
        self.paper_pool = paper_pool
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(aux_pool(x, self.paper_pool)), 1)
        x = F.relu(self.fc1(x), inplace=True)
        return self.fc2(self.dropout(x))


class TransformInput(nn.Module):
    """torchvision's ``transform_input``: re-normalise ImageNet-normalised input to the (x - 0.5) / 0.5 its
    ported weights expect. A module (not a method) so that a features-only net runs it as its first step."""

    def forward(self, x: Tensor) -> Tensor:
        x0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x0, x1, x2), 1)


class GoogLeNet(Backbone):
    """GoogLeNet with torchvision's attribute names (conv1, maxpool1, conv2, conv3, maxpool2, inception3a ...
    inception5b, aux1, aux2, avgpool, dropout, fc); the paper form adds parameter-free ``lrn1``/``lrn2``."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        paper: bool = False,
        dropout: float | None = None,
        dropout_aux: float = 0.7,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        if transform_input and in_chans != 3:
            raise CnnzooError("transform_input re-normalises ImageNet RGB input: use it only with in_chans=3")
        self.aux_logits, self.transform_input, self.paper = aux_logits, transform_input, paper
        conv: type[nn.Module] = ConvReLU if paper else BasicConv2d
        body: list[tuple[str, nn.Module]] = [
            ("conv1", conv(in_chans, 64, kernel_size=7, stride=2, padding=3)),  # -> 112
            ("maxpool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),  # -> 56
            *([("lrn1", LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))] if paper else []),
            ("conv2", conv(64, 64, kernel_size=1)),
            ("conv3", conv(64, 192, kernel_size=3, padding=1)),
            *([("lrn2", LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))] if paper else []),
            ("maxpool2", nn.MaxPool2d(3, stride=2, ceil_mode=True)),  # -> 28
        ]
        ch = 192
        for row in INCEPTION_TABLE:
            if isinstance(row, str):
                # torchvision's pool before stage 5 is 2x2/2 (same 7x7 output at 224); the paper's is 3x3/2.
                k = 2 if (row == "maxpool4" and not paper) else 3
                body.append((row, nn.MaxPool2d(k, stride=2, ceil_mode=True)))
            else:
                body.append((row.name, Inception(ch, row, conv, k5=5 if paper else 3)))
                ch = row.out
        if transform_input:  # first, so that the modules stand in forward order (no weights: keys unchanged)
            self.input_transform = TransformInput()
        for name, module in body:
            self.add_module(name, module)
        self._body = [name for name, _ in body]
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, conv, dropout_aux, paper_pool=paper)
            self.aux2 = InceptionAux(528, num_classes, conv, dropout_aux, paper_pool=paper)
        else:
            self.aux1 = self.aux2 = None  # type: ignore[assignment]
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # the paper's 7x7/1 average pool at 224
        self.dropout = nn.Dropout(p=(0.4 if paper else 0.2) if dropout is None else dropout)
        self.num_features = ch
        self.fc = nn.Linear(ch, num_classes)
        if init_weights:
            self._init_paper() if paper else self._init_torchvision()

    def _init_torchvision(self) -> None:
        """torchvision's ``trunc_normal_(std=0.01, a=-2, b=2)``: its bounds lie 200 standard deviations
        out, so it is N(0, 0.01), drawn with ``normal_`` (trunc_normal_ needs erfinv: seconds on CPU)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _init_paper(self) -> None:
        """bvlc_googlenet: Caffe's "xavier" filler, U(+-sqrt(3 / fan_in)), and biases 0.2 (0 for the class
        outputs), which keeps ReLUs alive in a deep net without normalisation."""
        outputs = {self.fc, *(a.fc2 for a in (self.aux1, self.aux2) if a is not None)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")
                nn.init.constant_(m.bias, 0.0 if m in outputs else 0.2)

    classifier_name, pre_logits_names = "fc", ("dropout",)

    def _body_forward(self, x: Tensor, aux: dict[str, Tensor] | None = None) -> Tensor:
        """Stem and Inception stages; the aux heads' outputs go to ``aux`` when it is given."""
        if self.transform_input:
            x = self.input_transform(x)
        for name in self._body:
            x = getattr(self, name)(x)
            head = AUX_AFTER.get(name)
            if head is not None and aux is not None:
                aux[head] = getattr(self, head)(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        return self._body_forward(x)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        if self.training and self.aux_logits:
            aux: dict[str, Tensor] = {}
            x = self.forward_head(self._body_forward(x, aux))
            return GoogLeNetOutputs(x, aux["aux2"], aux["aux1"])
        return self.forward_head(self._body_forward(x))

    def stage_modules(self) -> list[str]:
        return list(self._body)

    def feature_chain(self) -> list[str]:
        return [*(["input_transform"] if self.transform_input else []), *self._body]

    def head_modules(self) -> list[str]:
        return [*super().head_modules(), *(["aux1", "aux2"] if self.aux_logits else [])]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """As every net's, and the aux heads get fresh ``num_classes``-way outputs (none for 0)."""
        super().reset_classifier(num_classes, global_pool)
        if not self.aux_logits:
            return
        if num_classes == 0:
            self.aux_logits, self.aux1, self.aux2 = False, None, None
            return
        for aux in (self.aux1, self.aux2):
            old = aux.fc2
            aux.fc2 = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)

    def convert_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """torchvision checkpoints carry the aux heads; drop them when this model was built without."""
        if getattr(self, "aux1", None) is not None:  # (a features-only net, which has none, runs this too)
            return sd
        return {k: v for k, v in sd.items() if not k.startswith(("aux1.", "aux2."))}


_PAPER = "Going Deeper with Convolutions (Szegedy et al.)"


@register_model(
    "googlenet", family="googlenet", input_size=(3, 224, 224), min_size=32, params=13_004_888,
    macs=1_498_376_192, paper=_PAPER, year=2014, reference="torchvision.models.googlenet",
    aliases=("inception_v1",),
    notes="torchvision's form: BatchNorm, 3x3 conv in the '5x5' branch, 2x2 pool before stage 5, no LRN; "
          "params with aux heads (6,624,904 with aux_logits=False)")
def googlenet(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> GoogLeNet:
    """torchvision's GoogLeNet (kwargs: ``aux_logits``, ``transform_input``, ``dropout``, ``dropout_aux``)."""
    return GoogLeNet(num_classes=num_classes, in_chans=in_chans, paper=False, **kwargs)


@register_model(
    "googlenet_paper", family="googlenet", input_size=(3, 224, 224), min_size=32, params=13_378_280,
    macs=1_582_671_872, paper=_PAPER, year=2014, aliases=("inception_v1_paper",),
    notes="as the paper / bvlc_googlenet (5x5 branch, LRN, no BN); adaptive final pool; aux 5x5/3 pool "
          "skipped on maps under 5x5")
def googlenet_paper(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> GoogLeNet:
    """The 2014 paper's GoogLeNet (kwargs: ``aux_logits``, ``dropout``, ``dropout_aux``)."""
    return GoogLeNet(num_classes=num_classes, in_chans=in_chans, paper=True, **kwargs)
