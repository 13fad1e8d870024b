"""A run's config resolved once: the recipe with every value the run derives from its data and its weights.

:func:`resolve_run` turns the recipe asked for (a :class:`~.config.TrainConfig`) and the loaded data into a
:class:`RunConfig`: input channels, the model's constructor arguments, the image size, crop padding, flips,
the input normalisation, where the starting weights come from and the test-time augmentation the evaluations
use. It is frozen and built once, before the model; it is what every checkpoint's ``state.json`` saves as
``config`` (a resumed run reads it back as a recipe, :meth:`~.config.TrainConfig.from_dict` keeping the
recipe's fields).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from ..data import ImageSet
from .config import TrainConfig
from .tta import effective_tta


@dataclass(frozen=True)
class RunConfig(TrainConfig):
    """The recipe with every derived value filled in: ``in_chans``, ``model_kwargs``, ``img_size``, ``pad``
    and ``hflip`` are never ``None`` here, and the fields below are the run's own."""

    mean: tuple[float, ...] = ()  # input normalisation: the published weights' own, else the training split's
    std: tuple[float, ...] = ()
    weights_source: tuple[str, str] | None = None  # --pretrained read once: ("tag", TAG), ("path", FILE) or None
    tta_views: str = "off"  # the test-time augmentation evaluations use (tta.effective_tta of tta and hflip)

    def recipe(self) -> TrainConfig:
        """The recipe fields alone (what a resumed run starts from)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


def fitted_size(model_name: str | None, size: int) -> int:
    """``size`` moved into the model's accepted input range [min_size, max_size]: the one image-size rule of
    ``train`` and ``compare``."""
    if not model_name:
        return size
    from ..models.registry import model_info  # deferred: the registry imports every model file

    info = model_info(model_name)
    size = max(size, info.min_size)
    return min(size, info.max_size) if info.max_size else size


def choose_img_size(cfg: TrainConfig, model_name: str | None, native: int) -> int:
    """``--img-size``, else the data's size moved into the model's accepted range (:func:`fitted_size`)."""
    return int(cfg.img_size) if cfg.img_size else fitted_size(model_name, native)


def resolve_run(cfg: TrainConfig, train_set: ImageSet, img_size: int, module: nn.Module | None,
                stored: dict | None) -> RunConfig:
    """The :class:`RunConfig` of a run on ``train_set`` at ``img_size`` (``module``: the user's net, else the
    registered ``cfg.model``; ``stored``: a resumed run's ``state.json``, whose channel count it keeps)."""
    from ..models.hub import build_kwargs, parse_pretrained  # deferred: the hub reads the libraries' tables

    source = parse_pretrained(cfg.pretrained)
    model_kwargs = dict(cfg.model_kwargs)
    if module is None:
        model_kwargs = {**build_kwargs(cfg.model, cfg.pretrained), **model_kwargs}  # e.g. GoogLeNet's
    in_chans = cfg.in_chans or _weights_in_chans(cfg, source, model_kwargs, module, stored) or train_set.in_chans
    if stored is not None and module is None:
        in_chans = int(stored.get("in_chans", in_chans))
    hflip = train_set.hflip if cfg.hflip is None else bool(cfg.hflip)
    mean, std = input_normalisation(cfg.model or None, source, train_set)
    return RunConfig(**{**cfg.to_dict(), "in_chans": in_chans, "model_kwargs": model_kwargs,
                        "img_size": img_size, "hflip": hflip,
                        "pad": cfg.pad if cfg.pad is not None else max(0, train_set.img_size // 8)},
                     mean=mean, std=std, weights_source=source, tta_views=effective_tta(cfg.tta, hflip))


def _weights_in_chans(cfg: TrainConfig, source: tuple[str, str] | None, model_kwargs: dict,
                      module: nn.Module | None, stored: dict | None) -> int | None:
    """Input channels the starting weights fix: the user's module's first conv, 3 for published weights, a
    weights file's first conv (not read again for a resumed run, which keeps its own)."""
    if module is not None:
        return module_in_chans(module)
    if source is None:
        return None
    if source[0] == "tag":
        return 3
    if stored is not None:
        return None
    from ..models.pretrained import read_state_dict

    return first_conv_in_chans(read_state_dict(source[1]), cfg.model, model_kwargs)


def first_conv_in_chans(sd: dict[str, Tensor], model_name: str, model_kwargs: dict) -> int | None:
    """Input channels the weights' first conv takes: found under the key of the registered net's first conv
    in module order (a safetensors file sorts its keys, so GoogLeNet's ``aux1.conv`` comes before ``conv1``);
    a file with other key names falls back to its first 4-D weight, and loading it then says what differs."""
    from ..models.factory import create_model
    from .ckpt_check import first_conv

    with torch.device("meta"):
        first = first_conv(create_model(model_name, **model_kwargs))
    w = sd.get(first[0]) if first else None
    if w is not None and w.dim() == 4:
        return int(w.shape[1]) * first[1]
    return next((int(v.shape[1]) for v in sd.values() if v.dim() == 4), None)


def module_in_chans(net: nn.Module) -> int | None:
    """Input channels of a net's first conv (None when a Linear comes first)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            return m.in_channels if isinstance(m, nn.Conv2d) else None
    return None


def input_normalisation(model_name: str | None, source: tuple[str, str] | None,
                        data: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the inputs: published weights' own (what they were trained with), else the training
    split's. Decided from the config alone, so a resumed run normalises as it began."""
    if model_name and source is not None and source[0] == "tag":
        from ..models.hub import published_weights

        pw = published_weights(model_name, source[1])
        return tuple(pw.mean), tuple(pw.std)
    return tuple(data.mean), tuple(data.std)


__all__ = ["RunConfig", "choose_img_size", "first_conv_in_chans", "fitted_size", "input_normalisation",
           "module_in_chans", "resolve_run"]
