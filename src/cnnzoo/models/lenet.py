"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document Recognition").

Two variants from one layer table:

- ``lenet5``: the paper's net. Scaled tanh ``1.7159 * tanh(2/3 * a)`` after every layer up to F6 (eq. 6 and
  appendix A), S2/S4 subsampling with a trainable coefficient and bias per map, the sparse C3 connection
  table (Table I), C5 as a 5x5 convolution, F6 with 84 units, and the paper's initialisation
  (uniform in +-2.4 / fan-in). 60,000 trainable parameters up to F6, exactly the paper's figure.
- ``lenet5_relu``: the modern textbook form (d2l and most tutorials): ReLU, 2x2 max pooling, C3 fully
  connected to S2, PyTorch's default initialisation.

Both take 32x32 input, the paper's field. Inputs from 28x28 up to 32x32 are zero-padded to 32x32, centred:
the paper placed the 20x20 MNIST digits (28x28 with their margin) in the centre of a 32x32 field, so that
stroke endings reach the centre of the C5 receptive fields. Hence ``min_size=28`` and ``max_size=32``: C5 and
F6 are fully connected, so the net has one input size. (After normalisation, zero is the mean grey level,
not the paper's -0.1 background; the difference does not matter for training.)

Departure shared by both: the output layer is a linear classifier, not the paper's Euclidean RBF units with
fixed hand-designed 7x12 codes; it lets ``num_classes`` vary and trains with cross-entropy.

Features and head (timm has no LeNet): ``forward_features`` is ``features``, up to C5 (120 maps of 1x1 at
32x32); the head is ``classifier``: flatten, F6 (84 units, the pre-logits features: the paper's RBF units
read F6) and the output layer. The multi-scale features are C1 (stride 1), C3 (stride 2) and C5 (stride 4),
each after its activation: the last layer at each stride.

The sparse C3 keeps exactly the paper's 1,516 parameters but runs as one dense convolution with zeros where
Table I has no connection (grouped convolutions over gathered maps are ~10x slower on CPUs), so the
registered MACs (416,520, as counted by torch's FLOP counter) are those of a dense C3; the sparse
connections alone would need 326,520.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Backbone
from .registry import register_model

__all__ = ["LeNet5", "LENET5", "C3_TABLE", "ScaledTanh", "Subsampling", "SparseConv2d", "CenterPad"]


@dataclass(frozen=True)
class Layer:
    """One row of the paper's Fig. 2: layer name, kind, number of maps/units, kernel size."""

    name: str
    kind: str  # "conv" | "subsample" | "fc"
    out: int
    kernel: int = 0


LENET5: tuple[Layer, ...] = (
    Layer("c1", "conv", 6, 5),  # 1@32x32 -> 6@28x28
    Layer("s2", "subsample", 6, 2),  # -> 6@14x14
    Layer("c3", "conv", 16, 5),  # -> 16@10x10 (sparse in the paper: C3_TABLE)
    Layer("s4", "subsample", 16, 2),  # -> 16@5x5
    Layer("c5", "conv", 120, 5),  # -> 120@1x1: a convolution that happens to be fully connected at 32x32
    Layer("f6", "fc", 84),  # -> 84 (the size of the paper's 7x12 output codes)
)

# Table I: which S2 maps (inputs) each of the 16 C3 maps sees. Six maps see 3 contiguous inputs, six see 4
# contiguous, three see 4 non-contiguous, one sees all six: 1,516 parameters instead of 2,416.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

FIELD = 32  # the paper's input field


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (so f(1) = 1, f(-1) = -1)."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> None:
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x: Tensor) -> Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.4f}"


class Subsampling(nn.AvgPool2d):
    """The paper's S layer: the sum of each 2x2 block times a trainable coefficient, plus a trainable bias
    (one pair per map). A subclass of ``AvgPool2d`` so that tools reading kernel/stride see a pooling layer.
    """

    def __init__(self, channels: int, kernel_size: int = 2) -> None:
        super().__init__(kernel_size, stride=kernel_size)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size * self.kernel_size  # average * k = the paper's sum
        return super().forward(x) * (k * self.weight).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SparseConv2d(nn.Module):
    """A convolution in which output map ``j`` sees only the input maps ``table[j]`` (the paper's C3).

    The parameters are exactly the paper's: one ``k x k`` kernel per connection (``weight``: connections
    x k x k, listed map by map) and one bias per map. The forward scatters them into a dense kernel with
    zeros for the absent connections and runs one ordinary convolution: on CPUs this is ~10x faster than
    grouped convolutions over gathered maps. FLOP counters therefore see the dense convolution (the 900
    absent connections of Table I are multiplied by zero). ``mask`` (out x in, bool) is a buffer so it
    follows the module across devices and travels in the ``state_dict``.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.table, self.in_channels, self.out_channels = table, in_channels, len(table)
        self.kernel_size = kernel_size
        mask = torch.zeros(len(table), in_channels, dtype=torch.bool)
        for j, inputs in enumerate(table):
            mask[j, list(inputs)] = True
        self.register_buffer("mask", mask)
        self.weight = nn.Parameter(torch.empty(sum(map(len, table)), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(table)))
        self.reset_parameters()

    def reset_parameters(self, scale: float | None = None) -> None:
        """Weights uniform in +-scale/F and zero biases (the paper: scale=2.4), or without ``scale`` PyTorch's
        conv default, weights and biases uniform in +-1/sqrt(F); F = fan-in of the map a weight feeds."""
        k2 = self.kernel_size ** 2
        per_map = torch.tensor([len(t) * k2 for t in self.table], dtype=torch.float)
        per_connection = torch.tensor([len(t) * k2 for t in self.table for _ in t], dtype=torch.float)
        bound = scale / per_connection if scale is not None else per_connection.rsqrt()
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(bound.to(self.weight.device).view(-1, 1, 1))
            if scale is not None:
                self.bias.zero_()
            else:
                self.bias.uniform_(-1.0, 1.0).mul_(per_map.rsqrt().to(self.bias.device))

    def dense_weight(self) -> Tensor:
        """The (out, in, k, k) kernel with zeros where Table I has no connection."""
        k = self.kernel_size
        shape = (self.out_channels, self.in_channels, k, k)
        where = self.mask[:, :, None, None].expand(shape)
        return self.weight.new_zeros(shape).masked_scatter(where, self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={self.weight.shape[0]}")


class CenterPad(nn.Module):
    """Zero-pad smaller images to ``size`` x ``size``, centred (28x28 MNIST -> the paper's 32x32 field).

    No Python branching on the shape, so ``torch.fx`` can trace it; a no-op at ``size``.
    """

    def __init__(self, size: int = FIELD) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        dh, dw = self.size - x.shape[-2], self.size - x.shape[-1]
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))

    def extra_repr(self) -> str:
        return f"size={self.size}"


class LeNet5(Backbone):
    """LeNet-5 built from :data:`LENET5`: ``features`` (pad, C1..C5) and ``classifier`` (F6, output).

    ``paper=True``: scaled tanh after every layer up to F6 (also after S2/S4, whose trainable coefficients
    make them layers of their own), trainable subsampling, sparse C3, the paper's uniform +-2.4/fan-in init.
    ``paper=False``: ReLU after C1/C3/C5/F6, 2x2 max pooling, dense C3, PyTorch's default init.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, paper: bool = True) -> None:
        super().__init__()
        self.paper = paper
        act = ScaledTanh if paper else nn.ReLU
        features: OrderedDict[str, nn.Module] = OrderedDict(pad=CenterPad(FIELD))
        classifier: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten(1))
        ch, size = in_chans, FIELD
        for layer in LENET5:
            if layer.kind == "conv":
                if layer.name == "c3" and paper:
                    assert ch == len(set().union(*C3_TABLE)) and layer.out == len(C3_TABLE)
                    features[layer.name] = SparseConv2d(C3_TABLE, ch, layer.kernel)
                else:
                    features[layer.name] = nn.Conv2d(ch, layer.out, layer.kernel)
                features[f"act_{layer.name}"] = act()
                size = size - layer.kernel + 1
            elif layer.kind == "subsample":
                if paper:
                    features[layer.name] = Subsampling(ch, layer.kernel)
                    features[f"act_{layer.name}"] = act()
                else:
                    features[layer.name] = nn.MaxPool2d(layer.kernel)
                size //= layer.kernel
            else:  # "fc"
                classifier[layer.name] = nn.Linear(ch * size * size, layer.out)
                classifier[f"act_{layer.name}"] = act()
                size = 1
            ch = layer.out
        # Departure: a linear output layer instead of the paper's RBF units with fixed codes.
        classifier["output"] = nn.Linear(ch, num_classes)
        self.features = nn.Sequential(features)
        self.classifier = nn.Sequential(classifier)
        self.num_features = self.features.c5.out_channels
        if paper:
            self._init_paper()

    def _init_paper(self) -> None:
        """Weights uniform in [-2.4/F, 2.4/F], F = the unit's fan-in (Appendix A); biases zero (the paper
        does not say). S-layer coefficients are per map with fan-in 4 (one coefficient on a 2x2 sum)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                nn.init.uniform_(m.weight, -2.4 / fan_in, 2.4 / fan_in)
                nn.init.zeros_(m.bias)
            elif isinstance(m, SparseConv2d):
                m.reset_parameters(scale=2.4)
            elif isinstance(m, Subsampling):
                fan_in = m.kernel_size * m.kernel_size
                nn.init.uniform_(m.weight, -2.4 / fan_in, 2.4 / fan_in)
                nn.init.zeros_(m.bias)

    pool_name, classifier_name = None, "classifier.output"  # C5 is 1x1: the classifier flattens it

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def stage_modules(self) -> list[str]:
        return super().stage_modules()[1:]  # not the input padding


_PAPER = "Gradient-Based Learning Applied to Document Recognition (LeCun et al.)"


@register_model(
    "lenet5", family="lenet", input_size=(1, 32, 32), min_size=28, max_size=32, num_classes=10,
    params=60_850, macs=416_520, paper=_PAPER, year=1998, aliases=("lenet",),
    notes="as the paper (scaled tanh, trainable subsampling, sparse C3) but a linear output layer instead "
          "of RBF units; 28..31 px input is zero-padded to 32 centred")
def lenet5(num_classes: int = 10, in_chans: int = 1, **kwargs) -> LeNet5:
    """The 1998 paper's LeNet-5 (see module docstring). Sparse C3 needs the six S2 maps, so any ``in_chans``
    works (only C1 changes)."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans, paper=True, **kwargs)


@register_model(
    "lenet5_relu", family="lenet", input_size=(1, 32, 32), min_size=28, max_size=32, num_classes=10,
    params=61_706, macs=416_520, paper=_PAPER, year=1998, aliases=("lenet_relu",),
    notes="modern form: ReLU, 2x2 max pooling, dense C3, linear output; 28..31 px input is zero-padded to 32")
def lenet5_relu(num_classes: int = 10, in_chans: int = 1, **kwargs) -> LeNet5:
    """LeNet-5 as taught today: ReLU and max pooling, C3 connected to all S2 maps."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans, paper=False, **kwargs)
