"""AlexNet: torchvision's single-tower form and the 2012 paper's two-tower net, from one conv table each.

- ``alexnet``: torchvision's net (64/192/384/256/256), which follows Krizhevsky's 2014 "One weird trick"
  single-GPU variant: no LRN, no tower split, padding 2 on conv1 so that 224x224 works. Module names and
  indices are torchvision's, so its ``state_dict`` files load directly.
- ``alexnet_paper``: Krizhevsky, Sutskever & Hinton 2012, for 227x227 input (the paper says 224, but only
  227 gives its 55x55 conv1 maps): 96/256/384/384/256 kernels, ReLU, local response normalisation after
  conv1 and conv2, overlapping 3x3/2 max pooling, dropout 0.5 in the first two FC layers. The paper trained
  on two GPUs, each holding half of every layer; conv2, conv4 and conv5 only see the half on their own GPU,
  which is exactly a grouped convolution with ``groups=2`` (conv3 and the FC layers see both halves).
- ``alexnet_cifar``: the "small AlexNet" that Zhang et al. 2017 ("Understanding deep learning requires
  rethinking generalization", appendix A) train on 28x28 CIFAR-10 crops, from the cuda-convnet /
  TensorFlow CIFAR-10 tutorial lineage: two modules of 5x5 conv (64) -> ReLU -> 3x3/2 max pool ->
  local response normalisation, then FC 384, FC 192 and the classifier; 1,387,786 parameters (their
  Table 1). The pools pad 1 on each side where TensorFlow's SAME pads 0/1, so windows sit one pixel
  earlier; the map sizes (28 -> 14 -> 7) and parameters are the paper's.

Features and head (timm has no AlexNet; this follows its VGG, the same design): ``forward_features`` is the
conv stack up to and including the last max pool; the head is the adaptive pool and the FC layers, whose
last hidden layer (4096, or 192 for the small net) is the pre-logits feature and the output after
``reset_classifier(0)``. The multi-scale features are the last layer at each stride of the conv stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .layers import Backbone, LocalResponseNorm
from .registry import register_model

__all__ = ["AlexNet", "AlexNetCifar", "ConvRow", "ALEXNET", "ALEXNET_2012", "paper_lrn"]


@dataclass(frozen=True)
class ConvRow:
    """One conv layer with what follows it: ReLU always, then optional LRN, then optional 3x3/2 max pool."""

    out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1  # 2 = the paper's two-GPU split
    lrn: bool = False
    pool: bool = False


ALEXNET: tuple[ConvRow, ...] = (  # torchvision / "One weird trick" (2014)
    ConvRow(64, 11, stride=4, padding=2, pool=True),
    ConvRow(192, 5, padding=2, pool=True),
    ConvRow(384, 3, padding=1),
    ConvRow(256, 3, padding=1),
    ConvRow(256, 3, padding=1, pool=True),
)

ALEXNET_2012: tuple[ConvRow, ...] = (  # Krizhevsky et al. 2012, Section 3.5 and Figure 2
    ConvRow(96, 11, stride=4, padding=0, lrn=True, pool=True),  # 227 -> 55 -> 27
    ConvRow(256, 5, padding=2, groups=2, lrn=True, pool=True),  # 27 -> 13
    ConvRow(384, 3, padding=1),  # sees both towers
    ConvRow(384, 3, padding=1, groups=2),
    ConvRow(256, 3, padding=1, groups=2, pool=True),  # 13 -> 6
)


def paper_lrn(n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> LocalResponseNorm:
    """The paper's response normalisation b = a / (k + alpha * sum_n a^2)^beta as a torch module.

    ``nn.LocalResponseNorm`` divides ``alpha`` by the window size n (as Caffe does), the paper does not:
    the paper's alpha=1e-4 is torch's alpha = n * 1e-4.
    """
    return LocalResponseNorm(size=n, alpha=n * alpha, beta=beta, k=k)


class AlexNet(Backbone):
    """``features`` (convs walked from a table) -> 6x6 adaptive average pool -> ``classifier`` (3 FC layers).

    The adaptive pool is torchvision's: an identity at the default size (the maps are already 6x6) that
    lets other sizes reach the fixed-size FC layers. The paper has no such layer.
    """

    def __init__(
        self,
        table: tuple[ConvRow, ...] = ALEXNET,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        paper_init: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_chans
        for row in table:
            layers += [nn.Conv2d(ch, row.out, row.kernel, row.stride, row.padding, groups=row.groups),
                       nn.ReLU(inplace=True)]
            if row.lrn:  # the paper: normalisation after the ReLU, pooling after the normalisation
                layers.append(paper_lrn())
            if row.pool:  # overlapping pooling: 3x3 windows, stride 2
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            ch = row.out
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(ch * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        if paper_init:
            self._init_paper()
        # else: PyTorch's default initialisation, as torchvision's AlexNet

    def _init_paper(self) -> None:
        """Section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers (to give
        the ReLUs positive inputs early on), 0 elsewhere."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for m in convs + fcs:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        for m in [convs[1], convs[3], convs[4], *fcs[:-1]]:
            nn.init.ones_(m.bias)

    classifier_name = "classifier.6"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_model(
    "alexnet", family="alexnet", input_size=(3, 224, 224), min_size=63, params=61_100_840, macs=714_188_480,
    paper="One weird trick for parallelizing convolutional neural networks (Krizhevsky)", year=2014,
    reference="torchvision.models.alexnet",
    notes="torchvision's single-tower 64/192/384/256/256 net: no LRN, no group split, conv1 padding 2")
def alexnet(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AlexNet:
    """torchvision's AlexNet (``dropout`` kwarg as torchvision)."""
    return AlexNet(ALEXNET, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(
    "alexnet_paper", family="alexnet", input_size=(3, 227, 227), min_size=67, params=60_965_224,
    macs=724_406_816,
    paper="ImageNet Classification with Deep Convolutional Neural Networks (Krizhevsky et al.)", year=2012,
    aliases=("alexnet_2012",),
    notes="as the paper (LRN, two-tower split as groups=2) on one device; a 6x6 adaptive pool "
          "(identity at 227) lets other sizes reach the FC layers")
def alexnet_paper(num_classes: int = 1000, in_chans: int = 3, **kwargs) -> AlexNet:
    """The 2012 paper's AlexNet with its initialisation (``paper_init=False`` for PyTorch's default)."""
    kwargs.setdefault("paper_init", True)
    return AlexNet(ALEXNET_2012, num_classes=num_classes, in_chans=in_chans, **kwargs)


class AlexNetCifar(Backbone):
    """Zhang et al. 2017's small AlexNet: 2 x (conv 5x5 -> ReLU -> max pool 3x3/2 -> LRN), FC 384-192-classes.

    A 7x7 adaptive average pool (an identity at the paper's 28x28) lets other sizes reach the FC layers, as
    torchvision's AlexNet does at 6x6. LRN as the TensorFlow tutorial: radius 4, bias 1, alpha 0.001/9.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_chans
        for _ in range(2):
            layers += [nn.Conv2d(ch, width, 5, padding=2), nn.ReLU(inplace=True),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1), paper_lrn(n=9, k=1.0, alpha=0.001 / 9)]
            ch = width
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(ch * 7 * 7, 384), nn.ReLU(inplace=True),
            nn.Linear(384, 192), nn.ReLU(inplace=True),
            nn.Linear(192, num_classes),
        )

    classifier_name = "classifier.4"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_model(
    "alexnet_cifar", family="alexnet", input_size=(3, 28, 28), min_size=4, num_classes=10, params=1_387_786,
    macs=25_113_472,
    paper="Understanding deep learning requires rethinking generalization (Zhang et al.)", year=2017,
    notes="the paper's small AlexNet for 28x28 CIFAR-10 crops (two 5x5 conv + pool + LRN modules, FC 384-192);"
          " a 7x7 adaptive pool (identity at 28) lets other sizes reach the FC layers")
def alexnet_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs) -> AlexNetCifar:
    """The small AlexNet of Zhang et al. 2017 for 28x28 input."""
    return AlexNetCifar(num_classes=num_classes, in_chans=in_chans, **kwargs)
