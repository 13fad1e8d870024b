"""``evaluate``: top-1/top-5, loss, per-class precision/recall and the confusion matrix of a checkpoint."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..data import ImageSet, canonical_name, load_dataset
from ..data.batches import BatchPrep
from ..errors import CnnzooError
from .checkpoint import find_checkpoint, load_checkpoint
from .distributed import resolve_device
from .loop import evaluate_tensors
from .resolved import module_in_chans
from .tta import effective_tta


def evaluate(
    checkpoint_or_model: str | os.PathLike | nn.Module,
    dataset: str | ImageSet | None = None,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    img_size: int | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    tta: str | None = None,
) -> dict:
    """Evaluate a checkpoint (run folder, ``best``/``last`` folder or ``model.safetensors``) or a model.

    ``dataset`` defaults to the one the checkpoint was trained on; preprocessing (size, mean, std) comes
    from the checkpoint. Returns a JSON-ready dict: ``top1``, ``top5`` (``None`` with 5 classes or fewer),
    ``loss``, ``n``, ``classes``, ``per_class`` (precision, recall, f1, support), ``confusion`` (rows: true
    class), ``images_per_s``. With ``out`` it also writes ``eval.json`` and ``confusion.png`` there (checked
    before any work; files there that this process did not write are replaced only with ``overwrite``).

    ``tta`` (``off``, ``flip``, ``flip-translate``; default: the run's own ``--tta``, else ``off``) adds
    ``top1_tta``, the top-1 of test-time-augmented logits, beside the plain ``top1``; ``tta`` in the result
    says which views were used (mirrors only where the run trained with flips: ``flip-translate`` becomes
    ``translate`` and ``flip`` ``off`` without them). ``weights`` says whether the checkpoint holds the trained
    weights (``plain``) or their moving average (``ema``).
    """
    from ..utils.ranges import POSITIVE_INT

    batch_size = POSITIVE_INT.check("batch_size (--batch-size)", batch_size)
    if img_size is not None:
        img_size = POSITIVE_INT.check("img_size", img_size)
    if out is not None:
        eval_output_paths(out, overwrite)
    dev = resolve_device(device)
    model, meta, source = _load_target(checkpoint_or_model, dev)
    data = _eval_data(dataset, meta, split, data_dir, img_size)
    num_classes = int(meta.get("num_classes") or data.num_classes)
    if num_classes != data.num_classes:
        raise CnnzooError(f"the model predicts {num_classes} classes but {data.name} has {data.num_classes}: "
                          f"evaluate it on the data set it was trained for ({meta.get('dataset', '?')})")
    size = int(img_size or meta.get("img_size") or data.img_size)
    prep = _eval_prep(model, meta, data, size, dev)
    # a memory-mapped folder stays where it is: BatchPrep sends one batch at a time to the device
    x, y = (data.images if data.mapped else data.images.to(dev)), data.labels.to(dev)
    views = effective_tta(tta if tta is not None else meta.get("tta", "off"), bool(meta.get("hflip", data.hflip)))
    t = time.perf_counter()
    r = evaluate_tensors(model, x, y, prep, batch_size, num_classes, confusion=True, tta=views)
    dt = time.perf_counter() - t
    result = _result(r, meta, data, source, views, num_classes, size, dev, dt)
    if out is not None:
        write_eval_outputs(result, out, overwrite=overwrite)
    return result


def _result(r: dict, meta: dict, data: ImageSet, source: str, views: str, num_classes: int, size: int,
            dev: torch.device, dt: float) -> dict:
    """The JSON-ready result of :func:`evaluate` from :func:`evaluate_tensors`' sums."""
    n = int(r["n"].item())
    d = max(n, 1)
    summary = {"n": n, "loss": float(r["loss"].item()) / d, "top1": int(r["top1"].item()) / d,
               "top1_tta": int(r["top1_tta"].item()) / d if "top1_tta" in r else None,
               "top5": int(r["top5"].item()) / d if num_classes > 5 else None, "confusion": r["confusion"].cpu()}
    return eval_result(summary, model=meta.get("model"), data=data, classes=list(meta.get("classes") or data.classes),
                       checkpoint=source, tta=views, weights=meta.get("weights", "plain"), img_size=size,
                       device=str(dev), images_per_s=round(n / max(dt, 1e-9), 1))


def eval_result(summary: dict, *, model: str | None, data: ImageSet, classes: list, checkpoint: str, tta: str,
                weights: str, img_size: int, device: str, images_per_s: float | None = None) -> dict:
    """What :func:`evaluate` returns (and ``eval.json`` holds) from a held-out summary: ``n``, ``loss``,
    ``top1``, ``top1_tta``, ``top5`` and ``confusion`` (rows: true class), as the training engine's evaluations
    also give them (:func:`cnnzoo.training.engine.held_out_summary`); per-class metrics from the matrix."""
    cm = torch.as_tensor(summary["confusion"])
    return {
        "checkpoint": checkpoint, "model": model, "dataset": data.name, "split": data.split, "n": summary["n"],
        "top1": summary["top1"], "tta": tta, "top1_tta": summary["top1_tta"], "weights": weights,
        "top5": summary["top5"], "loss": summary["loss"], "classes": classes,
        "per_class": per_class_metrics(cm, classes), "confusion": cm.tolist(), "images_per_s": images_per_s,
        "img_size": img_size, "device": device, "skipped_images": len(data.skipped),
    }


def _load_target(checkpoint_or_model: str | os.PathLike | nn.Module,
                 dev: torch.device) -> tuple[nn.Module, dict, str]:
    """The model to evaluate, its metadata and a name for it: a module as given, or a checkpoint's model."""
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model.to(dev).eval()
        return model, dict(getattr(model, "cnnzoo_meta", {}) or {}), type(model).__name__
    source = str(find_checkpoint(checkpoint_or_model))
    model, meta = load_checkpoint(checkpoint_or_model, device=dev)
    return model, meta, source


def _eval_data(dataset: str | ImageSet | None, meta: dict, split: str, data_dir: str | os.PathLike | None,
               img_size: int | None) -> ImageSet:
    """The held-out images, by default of the data set the model was trained on, labelled in its classes."""
    if dataset is None:
        dataset = meta.get("dataset")
        if not dataset:
            raise CnnzooError(
                "no data set given and the model does not say what it was trained on: pass --dataset")
    if isinstance(dataset, ImageSet):
        data = dataset
    else:
        name = canonical_name(dataset)
        size = img_size or meta.get("img_size")
        data = load_dataset(name, split, data_dir, img_size=size if name.startswith("folder:") else None)
    return match_classes(data, [str(c) for c in meta.get("classes") or []])


def _eval_prep(model: nn.Module, meta: dict, data: ImageSet, size: int, dev: torch.device) -> BatchPrep:
    """The evaluation preprocessing the checkpoint stores (size, channels, mean/std), no augmentation."""
    in_chans = int(meta.get("in_chans") or module_in_chans(model) or data.in_chans)
    mean = tuple(meta.get("mean") or data.mean)
    std = tuple(meta.get("std") or data.std)
    if data.in_chans == 3 and len(mean) == 1:
        mean, std = mean * 3, std * 3
    return BatchPrep(data, size, in_chans, dev, pad=0, hflip=False, channels_last=False, mean=mean, std=std)


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def match_classes(data: ImageSet, model_classes: list[str]) -> ImageSet:
    """``data`` with its labels renumbered to the model's classes, matched by name (matched by position, a
    folder with other class names would score 0 % and exit 0).

    The same names in another order, or a subset of the model's classes (a test folder lacking one), are
    matched by name and said in a one-line warning; a class name the model does not know is an error that
    lists both sets. Without class names in the checkpoint, nothing is changed (the count is checked later).
    """
    import warnings

    from ..errors import CnnzooWarning

    have = [str(c) for c in data.classes]
    if not model_classes or have == model_classes:
        return data
    index = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in have if c not in index]
    if unknown:
        raise CnnzooError(f"{data.name} has classes the model does not know ({len(unknown)} of {len(have)}, e.g. "
                          f"{unknown[0]!r}): its classes are {_few(have)}; the model's are {_few(model_classes)}. "
                          f"Evaluate on a data set with the model's class names (folder names are matched by name)")
    remap = torch.tensor([index[c] for c in have], dtype=torch.long)
    how = "in another order" if len(have) == len(model_classes) else \
        f"{len(have)} of the model's {len(model_classes)}"
    warnings.warn(f"{data.name}'s class folders are {how}: matched to the model's classes by name",
                  CnnzooWarning, stacklevel=3)
    return replace(data, labels=remap[data.labels], classes=list(model_classes))


def per_class_metrics(cm: torch.Tensor, classes: list) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows: true class)."""
    tp = cm.diag().double()
    predicted, actual = cm.sum(0).double(), cm.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    return [{"class": c, "precision": round(float(p), 6), "recall": round(float(rc), 6), "f1": round(float(f), 6),
             "support": int(s)} for c, p, rc, f, s in zip(classes, precision, recall, f1, actual, strict=True)]


def eval_output_paths(out: str | os.PathLike, overwrite: bool) -> tuple[Path, Path]:
    """``OUT/eval.json`` and ``OUT/confusion.png``, the folder made and both checked (before any work)."""
    from ..utils.files import check_output_path

    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnzooError(
            f"cannot create output directory {str(out)!r} ({e.strerror or e}): pass a writable --out") from e
    return (check_output_path(out / "eval.json", overwrite=overwrite, what="--out"),
            check_output_path(out / "confusion.png", overwrite=overwrite, what="--out"))


def write_eval_outputs(result: dict, out: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Path]:
    """``eval.json`` and ``confusion.png`` for an :func:`evaluate` result; returns their paths."""
    from ..utils.files import atomic_write_text
    from .plots import plot_confusion

    js, png = eval_output_paths(out, overwrite)
    title = (f"{result.get('model') or 'model'} on {result['dataset']} {result['split']}: "
             f"top-1 {100 * result['top1']:.2f}%")
    try:  # a full disk or no permission: one line, no half-written eval.json left
        js = atomic_write_text(js, json.dumps(result, indent=1), overwrite=overwrite, what="--out")
        png = plot_confusion(result["confusion"], result["classes"], png, title=title, overwrite=overwrite)
    except OSError as e:
        from ..utils.oserr import os_error_line

        raise CnnzooError(f"cannot write the evaluation to --out: {os_error_line(e)}") from e
    return {"json": js, "png": png}
