"""Weight-initialisation schemes applied to any ``nn.Module`` after it is built (training from scratch).

The zoo's nets keep their own initialisation (torchvision's, or the paper's, or PyTorch's per-layer default
where torchvision has none, as in AlexNet). A scheme here overwrites it, without touching the structure:

- ``default``: leave the model's own initialisation.
- ``paddle`` (alias ``course``): what PaddlePaddle's layers do when given no initializer, i.e. what the course
  this project follows trained with: ``Conv2D`` weights ``N(0, sqrt(2 / (k_h * k_w * in_channels)))``
  (Paddle counts every input channel, also in grouped convs), ``Linear`` weights Xavier/Glorot uniform
  ``U(+-sqrt(6 / (fan_in + fan_out)))``, every bias 0, norm layers weight 1 and bias 0.
- ``xavier``: Xavier/Glorot uniform for every conv and linear weight (PyTorch's fan counting), biases 0.
- ``kaiming``: He et al. 2015 normal, ``N(0, sqrt(2 / fan_in))``, for every conv and linear weight, biases 0.

PyTorch's own per-layer default (``kaiming_uniform_(a=sqrt(5))``, std ``1 / sqrt(3 * fan_in)``, and biases
``U(+-1 / sqrt(fan_in))``) is sqrt(6) times smaller than He's: through AlexNet's eight un-normalised layers
the logits start near zero, which is why AlexNet does not learn under the course's recipe without a scheme
(BENCHMARKS.md, iChallenge-PM). Paddle's defaults are those of its ``_ConvNd`` and ``LayerHelperBase``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import CnnzooError

__all__ = ["INIT_SCHEMES", "INIT_ALIASES", "apply_init", "init_names", "resolve_init"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _zero_bias(m: nn.Module) -> None:
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)


def _reset_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, _NORM) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            _zero_bias(m)


@torch.no_grad()
def _paddle(model: nn.Module) -> None:
    """PaddlePaddle's defaults: He-normal convs over all input channels, Xavier-uniform linears, zero biases."""
    for m in model.modules():
        if isinstance(m, _CONV):
            fan_in = m.in_channels * math.prod(m.kernel_size)  # Paddle: in_channels, not in_channels / groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
            _zero_bias(m)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            _zero_bias(m)
    _reset_norms(model)


@torch.no_grad()
def _xavier(model: nn.Module) -> None:
    """Glorot & Bengio 2010 uniform on every conv and linear weight, zero biases."""
    for m in model.modules():
        if isinstance(m, (*_CONV, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            _zero_bias(m)
    _reset_norms(model)


@torch.no_grad()
def _kaiming(model: nn.Module) -> None:
    """He et al. 2015 normal (fan-in, ReLU gain) on every conv and linear weight, zero biases."""
    for m in model.modules():
        if isinstance(m, (*_CONV, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            _zero_bias(m)
    _reset_norms(model)


def _default(model: nn.Module) -> None:
    """The model's own initialisation, untouched."""


# name -> (function, one-line description for --help and docs)
INIT_SCHEMES: dict[str, tuple[Callable[[nn.Module], None], str]] = {
    "default": (_default, "the model's own initialisation (torchvision's or PyTorch's per-layer default)"),
    "paddle": (_paddle, "PaddlePaddle's defaults, as the course: conv N(0, sqrt(2/fan_in)), linear Xavier "
                        "uniform, biases 0"),
    "xavier": (_xavier, "Xavier/Glorot uniform conv and linear weights, biases 0"),
    "kaiming": (_kaiming, "He normal (fan-in) conv and linear weights, biases 0"),
}
INIT_ALIASES: dict[str, str] = {"course": "paddle"}


def init_names() -> list[str]:
    """Every accepted name: the schemes, then the aliases."""
    return [*INIT_SCHEMES, *INIT_ALIASES]


def resolve_init(scheme: str | None) -> str:
    """The canonical scheme name for ``scheme`` (case-insensitive; None -> ``default``)."""
    key = "default" if scheme is None else str(scheme).strip().lower()
    key = INIT_ALIASES.get(key, key)
    if key not in INIT_SCHEMES:
        raise CnnzooError(f"unknown init scheme {scheme!r}: use one of {', '.join(init_names())}")
    return key


def apply_init(model: nn.Module, scheme: str | None) -> None:
    """Re-initialise ``model``'s conv, linear and norm parameters in place with ``scheme`` (for training from
    scratch: applied after the model is built, never over pretrained weights)."""
    INIT_SCHEMES[resolve_init(scheme)][0](model)
