"""Shared building blocks, each written once and imported by every family.

Module names inside the blocks follow torchvision (``Conv2dNormActivation`` is a ``Sequential`` of conv,
norm, activation -> keys ``0.weight``, ``1.running_mean``; ``SqueezeExcitation`` has ``fc1``/``fc2``) so
that torchvision ``state_dict`` files load without a key map.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CnnzooError


def conv2d_out_hw(conv: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    """The output map size of a 2-d conv (numeric padding) on an ``h`` x ``w`` input."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without going more than 10 % below ``v``.

    From the MobileNet/TensorFlow reference code; used by MobileNetV2/V3 and EfficientNet width scaling.
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


_ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "hardswish": nn.Hardswish,
    "hard_swish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def get_act(name: str | Callable[..., nn.Module] | None, inplace: bool = True) -> nn.Module | None:
    """An activation module from a name (``"relu"``, ``"hardswish"``, ...) or a module class."""
    if name is None:
        return None
    if isinstance(name, str) and name.lower() not in _ACTIVATIONS:
        raise CnnzooError(f"unknown activation {name!r}: use one of {', '.join(sorted(_ACTIVATIONS))}")
    cls = _ACTIVATIONS[name.lower()] if isinstance(name, str) else name
    try:
        return cls(inplace=inplace)
    except TypeError:  # Sigmoid, Tanh, GELU take no ``inplace``
        return cls()


class Conv2dNormActivation(nn.Sequential):
    """Conv -> BatchNorm -> activation, with "same" padding for odd kernels.

    A ``Sequential`` so that its keys (``0.weight``, ``1.weight``, ``1.running_mean`` ...) are
    torchvision's. ``act=None`` leaves the activation out (the linear bottleneck of MobileNetV2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        act: str | Callable[..., nn.Module] | None = "relu",
        norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        dilation: int = 1,
        bias: bool | None = None,
    ) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                      groups=groups, bias=bias)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        act_layer = get_act(act)
        if act_layer is not None:
            layers.append(act_layer)
        super().__init__(*layers)
        self.out_channels = out_channels


ConvNormAct = Conv2dNormActivation  # timm's name for the same block


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global average pool -> 1x1 conv -> act -> 1x1 conv -> gate.

    ``fc1``/``fc2`` are 1x1 convolutions (torchvision's names). MobileNetV3 uses ReLU + hard-sigmoid,
    EfficientNet SiLU + sigmoid. The gate sees the whole image: receptive-field tools flag it as global.
    """

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        act: str | Callable[..., nn.Module] = "relu",
        gate: str | Callable[..., nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = get_act(act)
        self.scale_activation = get_act(gate, inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


SqueezeExcite = SqueezeExcitation


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth (Huang et al. 2016), per sample: zero whole residual branches with probability p.

    Survivors are scaled by 1/(1-p) so the expected value is unchanged; identity at eval time.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    if keep > 0.0:  # p == 1 drops every branch: nothing to rescale (and no division by zero)
        mask.div_(keep)
    return x * mask


class StochasticDepth(nn.Module):
    """Module form of :func:`drop_path` (torchvision's name; timm calls it ``DropPath``)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        if mode != "row":
            raise ValueError("only per-sample ('row') stochastic depth is implemented")
        self.p, self.mode = p, mode

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


DropPath = StochasticDepth


class InvertedResidual(nn.Module):
    """MBConv (MobileNetV3, EfficientNet): 1x1 expand -> kxk depthwise -> SE -> 1x1 linear projection.

    The residual is added when the block keeps shape (stride 1, ``in == out``); stochastic depth, when
    ``drop_path > 0``, drops only that residual branch. The projection has no activation: the "linear
    bottleneck" of MobileNetV2. Keys follow torchvision (``block.0`` expand, ``block.1`` depthwise,
    ``block.2`` SE, ``block.3`` project; the expand conv is left out when ``expanded == in``, which
    shifts the indices down by one, as in torchvision).

    ``se_channels=None`` leaves the SE out. MobileNetV3 passes ReLU + hard-sigmoid for the SE,
    EfficientNet SiLU + sigmoid.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        act: str | Callable[..., nn.Module] = "relu",
        se_channels: int | None = None,
        se_act: str | Callable[..., nn.Module] = "relu",
        se_gate: str | Callable[..., nn.Module] = "sigmoid",
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(Conv2dNormActivation(in_channels, expanded_channels, 1, act=act,
                                               norm_layer=norm_layer))
        layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel_size, stride,
                                           groups=expanded_channels, act=act, norm_layer=norm_layer))
        if se_channels is not None:
            layers.append(SqueezeExcitation(expanded_channels, se_channels, act=se_act, gate=se_gate))
        layers.append(Conv2dNormActivation(expanded_channels, out_channels, 1, act=None,
                                           norm_layer=norm_layer))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_path)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out)
            out += x  # in place, as torchvision's MBConv: the projection's BatchNorm does not need its output
        return out


MBConv = InvertedResidual  # the EfficientNet paper's name for the same block


def local_response_norm(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """``F.local_response_norm`` with the same numbers, but for an odd window over an (N, C, H, W) batch the
    channel padding is the pooling's own (``avg_pool3d(padding=...)``, zeros counted, as the explicit pad)
    instead of a 5-d ``F.pad``, after which the TorchScript-based ONNX exporter loses the map sizes (and then
    cannot export an adaptive pooling further on). Half precision on the CPU has no kernel: under autocast
    (``--amp bf16``) it runs in float32, a net converted to half says so in one line."""
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        if torch.is_autocast_enabled("cpu"):  # under autocast as its float32 ops: computed and returned in float32
            return local_response_norm(x.float(), size, alpha, beta, k)
        raise CnnzooError(f"local response normalisation has no {str(x.dtype).removeprefix('torch.')} kernel on "
                          f"the CPU in PyTorch: run this net in float32 on the CPU, or in half precision on a GPU")
    if x.dim() != 4 or size % 2 == 0 or x.shape[1] < size:
        return F.local_response_norm(x, size, alpha, beta, k)
    div = F.avg_pool3d(x.mul(x).unsqueeze(1), (size, 1, 1), stride=1, padding=(size // 2, 0, 0)).squeeze(1)
    return x / div.mul(alpha).add(k).pow(beta)


torch.fx.wrap("local_response_norm")  # one opaque call for torch.fx (create_feature_extractor, FX passes)


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (same arguments, same numbers) through :func:`local_response_norm` for
    4-d input, so that every exporter takes it and half precision on the CPU is one line."""

    def forward(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class Backbone(nn.Module):
    """timm's classifier API, written once for every family.

    ``forward(x) = forward_head(forward_features(x))``. ``forward_features`` (each family's) returns the last
    feature map before the head, ``num_features`` channels wide. The head is ``pool_name`` (its output
    flattened; ``None`` when the classifier flattens itself), then the pre-logits layers (the modules named in
    ``pre_logits_names``, then the layers before the classifier in its own ``Sequential``, of which it is the
    last layer), then the final layer at the dotted path ``classifier_name``. ``forward_head(x,
    pre_logits=True)`` stops before that final layer; ``reset_classifier(n)`` swaps it for a fresh ``n``-way
    one (``n=0``: an identity, so the net returns its pre-logits features). ``stage_modules`` lists, in
    forward order, the modules whose outputs may serve as multi-scale features (``cnnzoo.models.features`` keeps
    the last one at each stride).
    """

    pool_name: str | None = "avgpool"
    classifier_name: str = "classifier"
    pre_logits_names: tuple[str, ...] = ()
    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool, flatten, hidden layers; then the classifier unless ``pre_logits``."""
        if self.pool_name is not None:
            x = torch.flatten(self.get_submodule(self.pool_name)(x), 1)
        for name in self.pre_logits_names:
            x = self.get_submodule(name)(x)
        parent, _, last = self.classifier_name.rpartition(".")
        if not parent:
            return x if pre_logits else self.get_classifier()(x)
        head = self.get_submodule(parent)
        if not pre_logits:
            return head(x)  # one call of the whole head, as the nets always ran it (module hooks see it)
        for name, layer in head.named_children():
            if name == last:
                break
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer (a ``Linear``, or an ``Identity`` after ``reset_classifier(0)``)."""
        return self.get_submodule(self.classifier_name)

    @property
    def head_hidden_size(self) -> int:
        """Width of the pre-logits features, the final layer's input (timm's name)."""
        clf = self.get_classifier()
        if isinstance(clf, nn.Linear):
            return clf.in_features
        return getattr(self, "_head_width", self.num_features)

    @property
    def num_classes(self) -> int:
        """Classes the head predicts, 0 after ``reset_classifier(0)`` (timm's attribute)."""
        layers = [m for m in self.get_classifier().modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        if not layers:
            return 0
        return layers[-1].out_features if isinstance(layers[-1], nn.Linear) else layers[-1].out_channels

    def head_modules(self) -> list[str]:
        """Top-level modules that only the head uses (a features-only net drops them)."""
        names = [self.pool_name, *self.pre_logits_names, self.classifier_name.split(".")[0]]
        return [n for n in dict.fromkeys(names) if n is not None]

    def stage_modules(self) -> list[str]:
        """Modules, in forward order, whose outputs may be taken as feature maps (no dropout, no head).

        Default: the children of a ``features`` Sequential, dropout left out.
        """
        features = getattr(self, "features", None)
        if not isinstance(features, nn.Sequential):
            raise NotImplementedError(f"{type(self).__name__} must list its stage modules")
        return [f"features.{n}" for n, m in features.named_children() if not isinstance(m, nn.Dropout)]

    def feature_chain(self) -> list[str]:
        """The top-level modules that ``forward_features`` runs one after the other, in order; a features-only
        net (``cnnzoo.models.features.FeatureNet``) takes them over and runs them itself. Default: ``features``."""
        if not isinstance(getattr(self, "features", None), nn.Sequential):
            raise NotImplementedError(f"{type(self).__name__} must list its feature chain")
        return ["features"]

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups, in forward order, for layer-wise LR decay (``timm.optim.create_optimizer_v2(
        model, "adamw", layer_decay=0.75)``): one group per module of ``feature_chain()`` or, for a plain
        ``Sequential`` there, per child, and unless ``coarse`` per grandchild of a plain ``Sequential`` child
        (the blocks of a stage). Parameters no group matches (the head) form timm's last group."""
        units: list[str] = []
        for name in self.feature_chain():
            module = self.get_submodule(name)
            if type(module) is not nn.Sequential:
                units.append(name)
                continue
            for c, child in module.named_children():
                if not coarse and type(child) is nn.Sequential:
                    units += [f"{name}.{c}.{g}" for g, _ in child.named_children()]
                else:
                    units.append(f"{name}.{c}")
        return {"blocks": [(rf"^{re.escape(u)}\.", (i,)) for i, u in enumerate(units)]}

    def new_classifier(self, in_features: int, num_classes: int) -> nn.Module:
        """A fresh final layer (PyTorch's default initialisation, as timm's ``reset_classifier``)."""
        return nn.Linear(in_features, num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the final layer by a fresh ``num_classes``-way one, or by an identity when 0 (timm's API).

        The hidden layers of an FC head (VGG, AlexNet, MobileNetV3, LeNet's F6) stay, as in timm.
        ``global_pool`` is accepted for timm's signature; only ``None`` / ``"avg"`` (the nets' own) are valid.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise CnnzooError(f"reset_classifier needs a class count >= 0 (0 removes the classifier), "
                              f"got {num_classes!r}")
        if global_pool not in (None, "avg"):
            raise CnnzooError(f"global_pool={global_pool!r} is not supported: leave it out (the net keeps its "
                              f"own average pooling)")
        width = self.head_hidden_size
        ref = next(self.get_classifier().parameters(), None)  # the old head's device and dtype,
        ref = next(self.parameters(), None) if ref is None else ref  # or the net's after a reset to 0
        dev = ref.device if ref is not None else torch.device("cpu")
        if num_classes and dev.type != "meta":  # refused before allocating, not by the OOM killer
            from ..utils.memory import check_fits

            itemsize = ref.element_size() if ref is not None else 4
            check_fits((width + 1) * num_classes * itemsize, dev,
                       f"reset_classifier({num_classes}): a {width} x {num_classes} classifier's weights",
                       "use a smaller class count")
        new = self.new_classifier(width, num_classes) if num_classes else nn.Identity()
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        parent, _, last = self.classifier_name.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, last, new)
        self._head_width = width
