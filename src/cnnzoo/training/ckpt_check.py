"""A checkpoint validated as a whole before use: every metadata field, and the weights against the fields.

Checkpoint folders are handed from person to person and edited. Unchecked, a wrong field surfaces far from
its cause: an ``IndexError`` in ``predict`` (class names fewer than the head's outputs), a conv's ``RuntimeError``
(``img_size`` 0), a size-mismatch traceback (``in_chans``), a ``TypeError`` (unknown ``model_kwargs``), or
NaN probabilities printed as results (non-finite weights). The loaders in :mod:`.checkpoint` call the three
checks here, so ``predict``, ``eval``, ``export``, ``erf`` and the Python API refuse such a checkpoint with
one line that names the field and the fix:

- :func:`validate_meta` (metadata alone, no tensors read: ``read_meta``);
- :func:`build_error` (``model_kwargs`` the model does not take: ``build_model``);
- :func:`validate_weights` (the weights against the fields and the model built from them: ``load_checkpoint``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CnnzooError
from ..utils.ranges import POSITIVE_INT

_FIX = "restore the file from its run folder, or correct the field in its metadata (cnnzoo.training.read_meta)"


def _bad(where: object, field: str, problem: str, fix: str = _FIX) -> CnnzooError:
    return CnnzooError(f"{where}: checkpoint field {field!r} {problem}: {fix}")


def _short(v: object, n: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."


def _whole(meta: dict, where: object, field: str, required: bool = True) -> int | None:
    if meta.get(field) is None:
        if required:
            raise _bad(where, field, "is missing")
        return None
    v = meta[field]
    if isinstance(v, bool) or not isinstance(v, int | float) or not POSITIVE_INT.ok(v):
        raise _bad(where, field, f"must be {POSITIVE_INT.describe()} (got {_short(v)})")
    return int(v)


def _numbers(meta: dict, where: object, field: str, lengths: set[int], positive: bool) -> None:
    v = meta.get(field)
    if v is None:
        return
    ok = isinstance(v, list | tuple) and len(v) in lengths and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and (x > 0 or not positive)
        for x in v)
    if not ok:
        want = " or ".join(map(str, sorted(lengths)))
        kind = "positive finite numbers" if positive else "finite numbers"
        raise _bad(where, field, f"must be a list of {want} {kind}, one per channel (got {_short(v)})")


def _fill_normalisation(meta: dict) -> None:
    """A checkpoint without ``mean``/``std`` (written by hand or by an older tool) gets its named data set's,
    so ``predict``, ``eval`` and ``export`` read the same values, not a ``KeyError`` in one of them."""
    if meta.get("mean") is not None and meta.get("std") is not None:
        return
    from ..data import DATASETS, canonical_name

    try:
        info = DATASETS.get(canonical_name(str(meta.get("dataset") or "")))
    except CnnzooError:
        info = None
    if info is not None:
        meta["mean"], meta["std"] = list(info.mean), list(info.std)


def validate_meta(meta: dict, where: str | Path = "checkpoint") -> dict:
    """Check every field ``predict``/``eval``/``export`` use; returns ``meta`` unchanged, or raises a one-line
    :class:`CnnzooError` naming the field. ``where`` names the file in the message."""
    from ..models.registry import model_info, resolve_name

    name = meta.get("model")
    if name not in (None, ""):
        if not isinstance(name, str):
            raise _bad(where, "model", f"must be a model name (got {_short(name)})")
        try:
            name = resolve_name(name)
        except CnnzooError as e:
            raise _bad(where, "model", f"names no registered model ({e})", "restore the file from its run "
                       "folder, or load the weights into your own model: load_checkpoint(path, model=...)") from e
    num_classes = _whole(meta, where, "num_classes")
    in_chans = _whole(meta, where, "in_chans")
    img_size = _whole(meta, where, "img_size")
    data_size = _whole(meta, where, "data_img_size", required=False)
    data_chans = meta.get("data_in_chans")
    if data_chans is not None and data_chans not in (1, 3):
        raise _bad(where, "data_in_chans", f"must be 1 (grey) or 3 (colour) (got {_short(data_chans)})")
    lengths = {1, int(in_chans)} | ({int(data_chans)} if data_chans else set())
    _numbers(meta, where, "mean", lengths, positive=False)
    _numbers(meta, where, "std", lengths, positive=True)
    for a, b in (("mean", "std"),):
        if meta.get(a) is not None and meta.get(b) is not None and len(meta[a]) != len(meta[b]):
            raise _bad(where, b, f"has {len(meta[b])} value(s) but {a} has {len(meta[a])}")
    _fill_normalisation(meta)
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list | tuple) or not all(isinstance(c, str | int) for c in classes):
            raise _bad(where, "classes", f"must be a list of class names (got {_short(classes)})")
        if len(classes) != num_classes:
            raise _bad(where, "classes", f"lists {len(classes)} names but num_classes is {num_classes}",
                       "give one name per output of the net (or restore the file from its run folder)")
        if len({str(c) for c in classes}) != len(classes):
            dup = next(str(c) for i, c in enumerate(classes) if str(c) in map(str, classes[:i]))
            raise _bad(where, "classes", f"names {dup!r} twice", "give each class its own name")
    kwargs = meta.get("model_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise _bad(where, "model_kwargs", f"must be a mapping of constructor arguments (got {_short(kwargs)})")
    for reserved in ("num_classes", "in_chans"):
        if reserved in (kwargs or {}):
            raise _bad(where, "model_kwargs", f"must not hold {reserved!r} (it is a field of its own)")
    if meta.get("dataset") is not None and not isinstance(meta["dataset"], str):
        raise _bad(where, "dataset", f"must be text (got {_short(meta['dataset'])})")
    # resize: the policy's name, or with crop the shorter side before the centre crop (published weights)
    if meta.get("resize") is not None and not isinstance(meta["resize"], str):
        _whole(meta, where, "resize")
    _whole(meta, where, "crop", required=False)
    if isinstance(name, str) and name:
        info = model_info(name)
        for field, size in (("img_size", img_size), ("data_img_size", data_size)):
            if field == "img_size" and size is not None and size < info.min_size:
                raise _bad(where, field, f"is {size}, below {name}'s minimum input {info.min_size}",
                           f"set it to the size the net was trained at (>= {info.min_size})")
        if info.max_size is not None and img_size is not None and img_size > info.max_size:
            raise _bad(where, "img_size", f"is {img_size}, above {name}'s maximum input {info.max_size}",
                       f"set it to the size the net was trained at (<= {info.max_size})")
    return meta


def build_error(meta: dict, where: object, e: Exception) -> CnnzooError:
    """The one line for the model's constructor refusing the checkpoint's ``model_kwargs``: an argument it does
    not take, or a value of the wrong kind."""
    kwargs = meta.get("model_kwargs") or {}
    return _bad(where, "model_kwargs", f"{_short(kwargs, 80)} does not fit {meta.get('model')} ({e})",
                "remove the arguments the model does not take (see its constructor), or restore the file")


def first_conv(net: nn.Module) -> tuple[str, int] | None:
    """The weight name and group count of the net's first conv, in the order its modules are defined."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            return (f"{name}.weight" if name else "weight"), m.groups
    return None


def _head(net: nn.Module) -> str | None:
    """The classifier's weight name: the last Linear (or, for all-conv nets like NiN, the last Conv)."""
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            last = f"{name}.weight" if name else "weight"
    return last


def validate_weights(meta: dict, weights: dict[str, Tensor], model: nn.Module | None = None,
                     where: str | Path = "checkpoint") -> None:
    """The weights against the metadata (and ``model``, built from it or passed): finite, the first conv's
    input channels equal ``in_chans``, the head's outputs equal ``num_classes``, every tensor the model's shape.
    Raises a one-line :class:`CnnzooError` naming the field or tensor and the fix."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} other tensor(s)" if len(bad) > 1 else ""
        raise CnnzooError(f"{where}: the weights are not finite (NaN or inf in {bad[0]}{more}): the run diverged "
                          f"or the file is damaged; use another checkpoint of the run (best/ or last/) or retrain")
    if model is None:
        return
    own = model.state_dict()
    first = first_conv(model)
    in_chans = meta.get("in_chans")
    if first is not None and first[0] in weights and in_chans is not None:
        key, groups = first
        got = int(weights[key].shape[1]) * groups
        if weights[key].dim() == 4 and got != int(own[key].shape[1]) * groups:
            raise _bad(where, "in_chans", f"is {in_chans} but the first conv's weights ({key}) take {got} "
                       f"channel(s)", f"set in_chans to {got}")
    head = _head(model)
    num_classes = meta.get("num_classes")
    if head is not None and head in weights and num_classes is not None:
        outs = int(weights[head].shape[0])
        if outs != int(num_classes):
            n_names = len(meta.get("classes") or [])
            hint = f" (and {n_names} class names)" if n_names else ""
            raise _bad(where, "num_classes", f"is {num_classes}{hint} but the head's weights ({head}) have "
                       f"{outs} outputs", f"set num_classes to {outs} and give {outs} class names")
    for k, v in weights.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise CnnzooError(f"{where}: weight {k} has shape {tuple(v.shape)} but {meta.get('model') or 'the model'}"
                              f" built from the metadata expects {tuple(own[k].shape)}: the metadata (model, "
                              f"model_kwargs) does not describe these weights; restore the file from its run folder")

