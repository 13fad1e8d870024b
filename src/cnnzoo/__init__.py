"""cnnzoo: classic CNN backbones, exact to their papers, with tools to look inside them and to train and
compare them on your own data.

The API mirrors timm: ``create_model``, ``list_models``, ``model_info``. Everything that needs torch
(the registry, analysis, training, comparison) is imported on first use (PEP 562), so ``import cnnzoo``
and the CLI's ``--help``, argument errors and cached ``cnnzoo list`` answer without loading torch.
"""

from __future__ import annotations

import importlib
import importlib.util

from .errors import CnnzooError, InputSizeError, UnknownModelError

TYPE_CHECKING = False  # (not typing's: importing typing slows the CLI's start)
if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from .models.factory import create_model
    from .models.registry import ModelInfo, list_models, model_info, register_model

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily)
_LAZY = {
    "ModelInfo": "cnnzoo.models.registry",
    "create_model": "cnnzoo.models.factory",
    "feature_info": "cnnzoo.models.features",
    "published_weights": "cnnzoo.models.hub",
    "list_models": "cnnzoo.models.registry",
    "model_info": "cnnzoo.models.registry",
    "register_model": "cnnzoo.models.registry",
    "load_pretrained": "cnnzoo.models.pretrained",
    "summary": "cnnzoo.analysis",
    "receptive_field": "cnnzoo.analysis",
    "count_macs": "cnnzoo.analysis",
    "effective_receptive_field": "cnnzoo.analysis",
    "train": "cnnzoo.training",
    "evaluate": "cnnzoo.training",
    "load_dataset": "cnnzoo.data",
    "compare": "cnnzoo.comparing.run",
    "predict": "cnnzoo.deploy.inference",
    "export": "cnnzoo.deploy.exporting",
    "fuse": "cnnzoo.deploy.fusion",
    "fuse_activations": "cnnzoo.deploy.fusion",
    "benchmark": "cnnzoo.benchmarking",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    # a submodule not imported yet (``import cnnzoo; cnnzoo.analysis.summary(...)`` as when registry's
    # import pulled it in eagerly)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CnnzooError", "InputSizeError", "UnknownModelError", "ModelInfo", "create_model", "list_models",
    "model_info", "register_model", "load_pretrained", "summary", "receptive_field", "count_macs",
    "effective_receptive_field", "train", "evaluate", "load_dataset", "compare", "predict", "export", "fuse",
    "fuse_activations", "benchmark", "feature_info", "published_weights",
]
