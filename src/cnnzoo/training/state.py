"""The state of a run that a checkpoint carries besides weights and optimizer: where it is and what it did.

:class:`RunState` is saved as ``state.json`` (with the config and the optimizer's scalars) by
:func:`cnnzoo.training.checkpoint.save_run` and read back by :func:`~cnnzoo.training.checkpoint.load_run`;
a resumed run continues from it exactly, even mid-epoch (``epoch_step`` and the partial-epoch totals).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class EpochTotals:
    """Training loss and hits summed over the images seen so far in an epoch (kept across a mid-epoch save)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


@dataclass
class RunState:
    """Epoch, step, best result, history, timers and the partial-epoch totals of a run."""

    epoch: int = 0  # epochs finished
    epoch_step: int = 0  # steps done in epoch ``epoch`` when saved mid-epoch, else 0
    step: int = 0  # optimizer steps so far
    best_acc: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)  # one record per finished epoch (metrics.jsonl)
    elapsed_s: float = 0.0  # wall-clock of the earlier segments of a resumed run (see elapsed())
    train_images: int = 0  # images through forward + backward, all segments (throughput)
    train_s: float = 0.0  # time spent in training steps, all segments
    accum: EpochTotals | None = None  # totals of the partial epoch a mid-epoch checkpoint stopped in
    budget: dict | None = None  # a budgeted run's plan (training/budget.py's BudgetPlan as JSON)
    best: dict | None = None  # the accuracies of best/'s evaluation (plain, TTA, EMA; which weights it holds)
    started: float = field(default_factory=time.perf_counter, repr=False, compare=False)  # this segment

    def elapsed(self) -> float:
        """Wall-clock of the whole run so far, earlier segments included."""
        return self.elapsed_s + time.perf_counter() - self.started

    def to_json(self) -> dict:
        """The ``state.json`` keys (the run's wall-clock up to now as ``elapsed_s``)."""
        return {"epoch": self.epoch, "epoch_step": self.epoch_step, "step": self.step, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "history": self.history, "elapsed_s": self.elapsed(),
                "train_images": self.train_images, "train_s": self.train_s,
                "accum": None if self.accum is None else vars(self.accum).copy(), "budget": self.budget,
                "best": self.best}

    @classmethod
    def from_json(cls, d: dict) -> RunState:
        acc = d.get("accum")
        return cls(epoch=int(d.get("epoch", 0)), epoch_step=int(d.get("epoch_step", 0)), step=int(d.get("step", 0)),
                   best_acc=float(d.get("best_acc", -1.0)), best_epoch=int(d.get("best_epoch", 0)),
                   history=list(d.get("history", [])), elapsed_s=float(d.get("elapsed_s", 0.0)),
                   train_images=int(d.get("train_images", 0)), train_s=float(d.get("train_s", 0.0)),
                   accum=EpochTotals(float(acc["loss_sum"]), int(acc["correct"]), int(acc["seen"])) if acc else None,
                   budget=d.get("budget"), best=d.get("best"))
