"""``create_model``: a registered net built with everything it can be asked for: published or given weights
(:mod:`.hub`), multi-scale features (:mod:`.features`), the input check (:mod:`.registry`).

It sits above the registry, the hub and the feature tools, so none of them needs to import it back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import CnnzooError
from .features import FeatureNet
from .hub import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    attach_weights,
    build_kwargs,
    load_weights,
    published_weights,
    weights_source,
)
from .registry import build_net, finish_model, model_info, model_sizes


def create_model(
    name: str, num_classes: int | None = None, in_chans: int | None = None, features_only: bool = False,
    out_indices: int | Sequence[int] | None = None, pretrained: bool | str | os.PathLike | None = False,
    **kwargs
) -> nn.Module:
    """Build a registered model with fresh (random) weights, or published/given ones with ``pretrained``.

    ``num_classes`` and ``in_chans`` default to the model's own (1000 classes and 3 channels for the
    ImageNet nets, 10 and 1 for LeNet-5). Extra keyword arguments go to the family's constructor
    (``dropout``, ``aux_logits``, ``zero_init_residual``, ``drop_path_rate``, ...). The returned model
    checks its input size in a forward pre-hook and names the minimum when an image is too small.

    ``pretrained=True`` (or ``"imagenet"``, or a library's tag such as ``"IMAGENET1K_V1"``) loads the
    ImageNet weights torchvision or timm publish for the net (downloaded once into torch hub's or Hugging
    Face's cache; see :mod:`cnnzoo.models.hub`), ``pretrained=PATH`` a weights file. With another
    ``num_classes`` the classifier stays fresh (fine-tuning). The weights' preprocessing is then in
    ``model.pretrained_cfg`` (timm's keys; ``default_cfg`` is the same dict) and ``model.pretrained_weights``.

    ``features_only=True`` returns a :class:`cnnzoo.models.features.FeatureNet` instead: its forward gives the
    feature maps at the end of the stages ``out_indices`` (default all; see ``feature_info``), as timm's.
    """
    info = model_info(name)
    head_only = sorted(k for k in ("dropout", "aux_logits", "dropout_aux", "drop_rate", "global_pool")
                       if k in kwargs) + (["num_classes"] if num_classes is not None else [])
    if features_only and head_only:
        raise CnnzooError(f"features_only=True builds no classifier: leave out {', '.join(head_only)}")
    if out_indices is not None and not features_only:
        raise CnnzooError("out_indices selects feature maps: pass features_only=True with it")
    num_classes, in_chans = model_sizes(info, num_classes, in_chans)
    if pretrained:
        kwargs = {**build_kwargs(info.name, pretrained), **kwargs}  # GoogLeNet's transform_input
    model = build_net(info, num_classes, in_chans, **kwargs)
    weights = None
    if pretrained:  # into the classifier net, before any features_only wrapper
        weights = load_weights(model, info.name, pretrained)["weights"]
    if features_only:
        model = FeatureNet(model, out_indices, input_size=(in_chans, *info.input_size[1:]), name=info.name)
    finish_model(model, info, in_chans, num_classes)
    if weights is not None:
        attach_weights(model, weights)
    return model


def pretrained_model(name: str, pretrained: bool | str | os.PathLike = True,
                     device: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """``name`` with ``pretrained`` weights, in eval mode, and the checkpoint-style ``meta`` that
    :func:`cnnzoo.predict` and :func:`cnnzoo.evaluate` read (also set as ``model.cnnzoo_meta``): the
    weights' categories as ``classes``, ``img_size`` = ``crop``, ``data_img_size`` = ``resize``, ``mean``,
    ``std``, ``interpolation``. A weights file for a net with published weights takes their preprocessing."""
    info = model_info(name)
    model = create_model(info.name, pretrained=pretrained)
    pw = getattr(model, "pretrained_weights", None)
    if pw is None and weights_source(info.name) is not None:
        with contextlib.suppress(CnnzooError):
            pw = published_weights(info.name)
    n = int(model.default_cfg["num_classes"])  # type: ignore[index]
    classes = list(pw.categories) if pw is not None and len(pw.categories) == n else [str(i) for i in range(n)]
    size = pw.crop if pw is not None else info.input_size[-1]
    meta: dict[str, Any] = {
        "model": info.name, "num_classes": n, "in_chans": 3, "classes": classes, "img_size": size,
        "data_img_size": pw.resize if pw is not None else size, "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD), "pretrained": str(pretrained),
        **(pw.preprocessing() if pw is not None else {})}
    model.cnnzoo_meta = meta  # type: ignore[attr-defined]
    return model.to(device).eval(), meta
