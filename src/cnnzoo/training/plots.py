"""Training-curve and confusion-matrix PNGs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, overwrite: bool) -> Path:
    from ..utils.files import atomic_write

    # a full disk mid-write leaves no half-written PNG, and the previous one stays
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), overwrite=overwrite,
                        what="plot")


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "", *,
                overwrite: bool = False) -> Path:
    """Loss and accuracy per epoch, train and held-out, side by side (an existing file not written by this
    process is replaced only with ``overwrite``)."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a1.plot(ep, [h["test_loss"] for h in history], "s-", label="held-out")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    a2.plot(ep, [100 * h["test_acc"] for h in history], "s-", label="held-out")
    a2.set_xlabel("epoch")
    a2.set_ylabel("top-1 accuracy (%)")
    a2.legend()
    from matplotlib.ticker import MaxNLocator

    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = _save(fig, path, overwrite)
    plt.close(fig)
    return out


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike,
                   title: str = "", *, overwrite: bool = False) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted); counts written in the cells
    when there are at most 20 classes."""
    import numpy as np

    plt = _plt()
    cm = np.asarray(confusion, dtype=np.float64)
    k = len(classes)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(14.0, max(4.0, 0.45 * k + 2))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if k <= 40:
        ax.set_xticks(range(k), [str(c) for c in classes], rotation=90 if k > 10 else 45, ha="right"
                      if k <= 10 else "center", fontsize=8)
        ax.set_yticks(range(k), [str(c) for c in classes], fontsize=8)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    out = _save(fig, path, overwrite)
    plt.close(fig)
    return out
