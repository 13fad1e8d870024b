"""Test-time augmentation: a net's logits averaged over a few label-preserving views of each image.

The views are airbench's (Jordan 2024, ``cifar10-airbench``): ``flip`` averages an image and its mirror;
``flip-translate`` averages that with the same pair shifted by a pixel or two (reflect-padded) up-left and
down-right, weighted half and half. Mirrors are used only where the run itself trained with flips (a
mirrored digit is another glyph): without them, ``flip`` is no augmentation and ``flip-translate`` keeps only
the shifts (``translate``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TTA_MODES

__all__ = ["TTA_MODES", "TTA_VIEWS", "effective_tta", "shift_pixels", "tta_logits"]

TTA_VIEWS = {"off": 1, "flip": 2, "translate": 3, "flip-translate": 6}  # forward passes per image


def effective_tta(mode: str | None, hflip: bool) -> str:
    """The views ``mode`` means for a run that does (``hflip``) or does not flip: ``off``, ``flip``,
    ``translate`` or ``flip-translate``."""
    mode = (mode or "off").lower()
    if mode not in TTA_MODES:
        from ..errors import CnnzooError

        raise CnnzooError(f"unknown tta {mode!r}: use one of {', '.join(TTA_MODES)}")
    if hflip or mode == "off":
        return mode
    return "translate" if mode == "flip-translate" else "off"


def shift_pixels(size: int) -> int:
    """The translation of ``flip-translate``: 1 px up to 32 px images (airbench's), 2 px above."""
    return 1 if size <= 32 else 2


def _mean_logits(net: Callable[[Tensor], Tensor], x: Tensor, mirror: bool) -> Tensor:
    out = net(x).float()
    if mirror:
        out = 0.5 * out + 0.5 * net(x.flip(-1)).float()
    return out


def tta_logits(net: nn.Module | Callable[[Tensor], Tensor], x: Tensor, mode: str,
               plain: Tensor | None = None) -> Tensor:
    """The mean logits of ``x``'s views under an *effective* ``mode`` (:func:`effective_tta`), in float32;
    ``plain``: ``net(x)`` already computed (saves one forward pass)."""
    if mode == "off":
        return net(x).float() if plain is None else plain.float()
    mirror = mode in ("flip", "flip-translate")
    base = plain.float() if plain is not None else net(x).float()
    if mirror:
        base = 0.5 * base + 0.5 * net(x.flip(-1)).float()
    if mode == "flip":
        return base
    h, w = x.shape[-2:]
    p = min(shift_pixels(max(h, w)), h - 1, w - 1)
    if p <= 0:
        return base
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    shifted = [padded[..., :h, :w], padded[..., 2 * p:2 * p + h, 2 * p:2 * p + w]]
    moved = torch.stack([_mean_logits(net, s.contiguous(memory_format=_format_of(x)), mirror)
                         for s in shifted]).mean(0)
    return 0.5 * base + 0.5 * moved


def _format_of(x: Tensor) -> torch.memory_format:
    """channels_last stays channels_last (the net was laid out for it)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
