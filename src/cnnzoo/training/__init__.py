"""Training and evaluation: ``train`` (the engine), ``evaluate``, checkpoints, DDP.

``cnnzoo.train(model, dataset, ...) -> TrainResult`` and ``cnnzoo.evaluate(checkpoint, dataset) -> dict``
are the API the CLI (``cnnzoo train``, ``cnnzoo eval``) and ``compare``/``predict``/``export`` use;
``load_checkpoint(path) -> (model, meta)`` rebuilds a trained model from its checkpoint alone.
"""

from __future__ import annotations

from .checkpoint import find_checkpoint, load_checkpoint, read_meta
from .config import RECIPES, TrainConfig
from .engine import NonFiniteLossError, TrainResult, lr_factor, train
from .evaluate import evaluate, write_eval_outputs
from .plots import plot_confusion, plot_curves

__all__ = [
    "NonFiniteLossError", "RECIPES", "TrainConfig", "TrainResult", "evaluate", "find_checkpoint",
    "load_checkpoint", "lr_factor", "plot_confusion", "plot_curves", "read_meta", "train",
    "write_eval_outputs",
]
