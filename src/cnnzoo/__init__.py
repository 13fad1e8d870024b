"""cnnzoo: classic CNN backbones, exact to their papers, with tools to look inside them and to train and
compare them on your own data.

The API mirrors timm: ``create_model``, ``list_models``, ``model_info``. Heavier parts (analysis,
training, comparison) are imported on first use so that ``import cnnzoo`` and the CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CnnzooError, InputSizeError, UnknownModelError
from .registry import ModelInfo, create_model, list_models, model_info, register_model

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily)
_LAZY = {
    "load_pretrained": "cnnzoo.pretrained",
    "summary": "cnnzoo.analysis",
    "receptive_field": "cnnzoo.analysis",
    "count_macs": "cnnzoo.analysis",
    "effective_receptive_field": "cnnzoo.analysis",
    "train": "cnnzoo.training",
    "evaluate": "cnnzoo.training",
    "load_dataset": "cnnzoo.data",
    "compare": "cnnzoo.comparison",
    "predict": "cnnzoo.inference",
    "export": "cnnzoo.exporting",
    "fuse": "cnnzoo.fusion",
    "fuse_activations": "cnnzoo.fusion",
    "benchmark": "cnnzoo.benchmarking",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")


__all__ = [
    "CnnzooError", "InputSizeError", "UnknownModelError", "ModelInfo", "create_model", "list_models",
    "model_info", "register_model", *_LAZY,
]
