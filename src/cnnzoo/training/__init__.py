"""Training and evaluation: ``train``, ``evaluate``, checkpoints, DDP.

``cnnzoo.train(model, dataset, ...) -> TrainResult`` and ``cnnzoo.evaluate(checkpoint, dataset) -> dict``
are the API the CLI (``cnnzoo train``, ``cnnzoo eval``) and ``compare``/``predict``/``export`` use;
``load_checkpoint(path) -> (model, meta)`` rebuilds a trained model from its checkpoint alone. The options
are declared once in :mod:`.config` (torch-free). The names below are imported on first use (PEP 562), so
``cnnzoo.training.config`` can be read without importing torch.

Modules: ``config`` (options, recipes), ``resolved`` (the run's resolved config), ``setup`` (``Data``,
``Model``, ``Plan`` -> ``Job``), ``loop`` (step, an epoch's batches, evaluation), ``engine`` (``train()``:
setup, the one loop, the result), ``state`` (``RunState``),
``budget`` (time budgets), ``checkpoint``, ``distributed``, ``evaluate``, ``plots``, ``tta`` (test-time
augmentation), ``ema`` (the weight average).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .checkpoint import find_checkpoint, load_checkpoint, read_meta
    from .config import RECIPES, RunOptions, TrainConfig
    from .engine import TrainResult, train
    from .evaluate import evaluate, write_eval_outputs
    from .loop import NonFiniteLossError, lr_factor
    from .plots import plot_confusion, plot_curves

_LAZY = {
    "find_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "read_meta": "checkpoint",
    "RECIPES": "config", "RunOptions": "config", "TrainConfig": "config",
    "TrainResult": "engine", "train": "engine",
    "evaluate": "evaluate", "write_eval_outputs": "evaluate",
    "NonFiniteLossError": "loop", "lr_factor": "loop",
    "plot_confusion": "plots", "plot_curves": "plots",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "NonFiniteLossError", "RECIPES", "RunOptions", "TrainConfig", "TrainResult", "evaluate", "find_checkpoint",
    "load_checkpoint", "lr_factor", "plot_confusion", "plot_curves", "read_meta", "train", "write_eval_outputs",
]
