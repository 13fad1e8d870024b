"""Model registry: ``create_model``, ``list_models``, ``model_info`` in the style of timm.

Each family file under ``cnnzoo.models`` decorates its factory functions with :func:`register_model`,
giving the facts a user (and the test suite) needs: default input size, the smallest input the net takes,
the reference parameter count and MACs at the default size, the paper and its year, and where the
implementation departs from the paper.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CnnzooError, InputSizeError, UnknownModelError


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a registered model, at its defaults (num_classes, in_chans, input size).

    ``min_size`` convention: the larger of (a) the smallest square input at which the forward pass runs
    and (b) the net's total stride (the product of all strides up to its last feature map). (a) alone would
    admit inputs that reach the last stages only through padding and rounded-up pools (torchvision's
    GoogLeNet runs at 15x15 although its stride is 32); (b) guarantees that the last feature map holds at
    least one unit computed from real pixels. Examples: AlexNet 63 (a), VGG 32 (a = b), GoogLeNet 32 (b).
    Inputs below ``min_size`` raise :class:`~cnnzoo.errors.InputSizeError` from the check that
    ``create_model`` attaches. ``max_size`` is set only for nets that take one input size because their
    classifier has a fixed input (LeNet-5: C5/F6); smaller inputs there are padded up to it (documented per
    family), larger ones are refused.
    """

    name: str
    family: str
    input_size: tuple[int, int, int]  # default (C, H, W)
    min_size: int  # smallest H (= W) the net runs on; see ``cnnzoo.models.registry.check_input``
    params: int  # reference parameter count at the defaults
    macs: int  # reference multiply-accumulates (conv + linear) at ``input_size``
    paper: str
    year: int
    num_classes: int = 1000
    max_size: int | None = None  # nets with a fixed-size classifier input (LeNet-5)
    reference: str = ""  # the torchvision/timm net it is checked against, if any
    notes: str = ""  # departures from the paper, said where they happen
    aliases: tuple[str, ...] = ()
    fn: Callable[..., nn.Module] = field(default=lambda **_: nn.Identity(), repr=False, compare=False)

    @property
    def in_chans(self) -> int:
        return self.input_size[0]

    def as_dict(self) -> dict:
        """Plain, JSON-serialisable view (without the factory)."""
        return {
            "name": self.name,
            "family": self.family,
            "input_size": list(self.input_size),
            "min_size": self.min_size,
            "max_size": self.max_size,
            "num_classes": self.num_classes,
            "params": self.params,
            "macs": self.macs,
            "paper": self.paper,
            "year": self.year,
            "reference": self.reference,
            "notes": self.notes,
            "aliases": list(self.aliases),
        }


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def register_model(
    name: str,
    *,
    family: str,
    input_size: tuple[int, int, int],
    min_size: int,
    params: int,
    macs: int,
    paper: str,
    year: int,
    num_classes: int = 1000,
    max_size: int | None = None,
    reference: str = "",
    notes: str = "",
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory ``fn(num_classes=..., in_chans=..., **kwargs) -> nn.Module`` under ``name``."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(
            name=name, family=family, input_size=tuple(input_size), min_size=min_size, params=params,
            macs=macs, paper=paper, year=year, num_classes=num_classes, max_size=max_size,
            reference=reference, notes=notes, aliases=tuple(aliases), fn=fn,
        )
        for alias in aliases:
            if alias in _REGISTRY or alias in _ALIASES:
                raise ValueError(f"alias {alias!r} registered twice")
            _ALIASES[alias] = name
        return fn

    return decorator


def _ensure_loaded() -> None:
    from .. import models  # noqa: F401  (importing the package registers every family)


def resolve_name(name: str) -> str:
    """Canonical name for ``name`` or an alias; unknown names raise with the nearest names suggested."""
    _ensure_loaded()
    if not isinstance(name, str):
        raise UnknownModelError(f"a model name must be text, got {name!r} ({type(name).__name__}): e.g. "
                                f"'resnet18'; run `cnnzoo list` to see all {len(_REGISTRY)} models")
    key = name.strip().lower()
    for cand in (key, key.replace("-", "_"), key.replace("-", "")):  # "ResNet-50", "efficientnet-b0"
        if cand in _REGISTRY:
            return cand
        if cand in _ALIASES:
            return _ALIASES[cand]
    key = key.replace("-", "_")
    known = sorted([*_REGISTRY, *_ALIASES])
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise UnknownModelError(f"unknown model {name!r}: {hint}run `cnnzoo list` to see all {len(_REGISTRY)} models")


def model_info(name: str) -> ModelInfo:
    """Facts about a registered model (default input size, reference params/MACs, paper, year)."""
    return _REGISTRY[resolve_name(name)]


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"resnet*"``), sorted."""
    _ensure_loaded()
    if not isinstance(pattern, str):
        raise CnnzooError(f"list_models takes a shell-style pattern such as 'resnet*', got {pattern!r}")
    names = list(_REGISTRY) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern.lower()))


class InputCheck:
    """Forward pre-hook that turns a too-small or wrongly shaped input into a one-line error.

    Without it a too-small image fails deep inside the net with a shape error ("Output size is too
    small", "mat1 and mat2 shapes cannot be multiplied"). The hook only reads ``x.shape``; it is a no-op
    for the numbers and is picklable (a class, not a closure) so models still deep-copy and pickle.
    """

    def __init__(self, name: str, in_chans: int, min_size: int, max_size: int | None = None) -> None:
        self.name, self.in_chans, self.min_size, self.max_size = name, in_chans, min_size, max_size

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        if x.dim() != 4:
            raise InputSizeError(f"{self.name} expects a batch of images (N, C, H, W); got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        if c != self.in_chans:
            raise InputSizeError(
                f"{self.name} was built for {self.in_chans}-channel input but got {c} channels: "
                f"create it with in_chans={c} (CLI: the data set sets it)")
        if min(h, w) < self.min_size:
            raise InputSizeError(
                f"input {h}x{w} is too small for {self.name}: the minimum is {self.min_size}x{self.min_size}; "
                f"resize the images (e.g. --img-size {self.min_size}) or pick a small-image model")
        if self.max_size is not None and max(h, w) > self.max_size:
            raise InputSizeError(
                f"input {h}x{w} is too large for {self.name}: it takes at most {self.max_size}x{self.max_size} "
                f"(its classifier has a fixed input); resize the images (e.g. --img-size {self.max_size})")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # timm's default evaluation crop (224 of 256)


def data_cfg(model: nn.Module, info: ModelInfo, in_chans: int, num_classes: int) -> dict:
    """timm's ``pretrained_cfg`` for a net with fresh weights: its own input size, ImageNet's mean and std
    (their channel average for other channel counts), timm's default crop, and where the classifier and the
    first conv sit (timm reads them to adapt a head or ``in_chans``)."""
    if in_chans == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (round(sum(IMAGENET_MEAN) / 3, 4),) * in_chans, (round(sum(IMAGENET_STD) / 3, 4),) * in_chans
    first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), "")
    return {
        "architecture": info.name, "input_size": (in_chans, *info.input_size[1:]), "interpolation": "bilinear",
        "mean": mean, "std": std, "crop_pct": DEFAULT_CROP_PCT, "crop_mode": "center", "num_classes": num_classes,
        "classifier": getattr(model, "classifier_name", ""), "first_conv": first_conv, "min_size": info.min_size,
    }


def finish_model(model: nn.Module, info: ModelInfo, in_chans: int, num_classes: int) -> nn.Module:
    """Attach what every built model carries: the input-size check (a forward pre-hook that names the minimum),
    ``cnnzoo_name`` and timm's ``pretrained_cfg`` (:func:`data_cfg`; ``default_cfg`` is the same dict, timm's
    older name), which ``timm.data.resolve_data_config({}, model=model)`` reads."""
    model.register_forward_pre_hook(InputCheck(info.name, in_chans, info.min_size, info.max_size))
    model.cnnzoo_name = info.name  # type: ignore[attr-defined]
    model.pretrained_cfg = model.default_cfg = data_cfg(model, info, in_chans, num_classes)  # type: ignore
    return model


def model_sizes(info: ModelInfo, num_classes: int | None, in_chans: int | None) -> tuple[int, int]:
    """``num_classes`` and ``in_chans`` with the model's own defaults filled in, checked."""
    from ..utils.ranges import POSITIVE_INT

    # True is not 1 class and 10.5 is not 10: the same check as the CLI's flags
    num_classes = info.num_classes if num_classes is None else POSITIVE_INT.check("num_classes", num_classes)
    in_chans = info.in_chans if in_chans is None else POSITIVE_INT.check("in_chans", in_chans)
    return num_classes, in_chans


# sizes beyond any real use: above them a net is first built on the meta device to weigh it before allocating
_LARGE_IN_CHANS, _LARGE_NUM_CLASSES = 64, 100_000


def build_net(info: ModelInfo, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    """``info.fn(num_classes, in_chans, **kwargs)`` with its arguments checked first: an argument the factory
    does not take, or a value it rejects, is one line naming its arguments (not a TypeError from inside); a
    net too large for the memory free here is refused before anything is allocated."""
    args = _arguments(info.fn)
    own = ", ".join(f"{k}={v!r}" for k, v in args.items()) if args else "num_classes and in_chans only"
    unknown = [k for k in kwargs if args is not None and k not in args]
    if unknown:
        raise CnnzooError(f"{info.name} takes no argument {', '.join(unknown)}: its arguments are {own}")
    if in_chans > _LARGE_IN_CHANS or num_classes > _LARGE_NUM_CLASSES:
        _check_size(info, num_classes, in_chans, kwargs)
    try:
        return info.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (TypeError, ValueError, KeyError, IndexError, AssertionError) as e:
        if not kwargs:
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CnnzooError(f"{info.name} cannot be built with {given} ({first}): its arguments are {own}") from e


def _arguments(fn: Callable[..., nn.Module]) -> dict[str, object] | None:
    """The keyword arguments (with defaults) a factory takes besides num_classes and in_chans: its own, and,
    where it passes ``**kwargs`` on, those of the class it returns; None when that class is unknown."""
    import inspect
    import typing

    params = dict(inspect.signature(fn).parameters)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        try:
            cls = typing.get_type_hints(fn).get("return")
        except Exception:  # an annotation that does not resolve: no list to check against
            return None
        if not isinstance(cls, type):
            return None
        for klass in cls.__mro__:  # a subclass that passes **kwargs on takes its base class's arguments too
            if "__init__" not in vars(klass) or klass is nn.Module:
                continue
            own = inspect.signature(klass.__init__).parameters
            params.update({k: p for k, p in own.items() if k not in params})
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values()):
                break
    empty = inspect.Parameter.empty
    return {k: p.default for k, p in params.items() if k not in ("self", "num_classes", "in_chans")
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.default is not empty}


def _check_size(info: ModelInfo, num_classes: int, in_chans: int, kwargs: dict) -> None:
    """Weigh the net on the meta device (no memory) and refuse it when its weights exceed the memory free."""
    from ..utils.memory import available_memory

    with torch.device("meta"):
        net = info.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    need = sum(p.numel() * p.element_size() for p in net.parameters())
    free = available_memory(torch.device("cpu"))
    if free and need > free:
        raise CnnzooError(f"{info.name} with num_classes={num_classes}, in_chans={in_chans} has "
                          f"{need / (1 << 30):.1f} GiB of weights, more than the {free / (1 << 30):.1f} GiB free: "
                          f"use smaller values")


def build_model(name: str, num_classes: int | None = None, in_chans: int | None = None, **kwargs) -> nn.Module:
    """A registered model with fresh weights and its input check: :func:`cnnzoo.create_model` without the
    options that need other modules (published weights, ``features_only``), for the analysis tools."""
    info = model_info(name)
    num_classes, in_chans = model_sizes(info, num_classes, in_chans)
    return finish_model(build_net(info, num_classes, in_chans, **kwargs), info, in_chans, num_classes)
