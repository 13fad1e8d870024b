"""``predict``: class names and probabilities for image files, from a checkpoint alone.

A checkpoint written by ``cnnzoo train`` carries everything needed (model name, class names, the
training preprocessing: data size and channels, model input size, mean, std), so nothing else is asked.
Each file goes through the same steps as a held-out image in training: decoded and resized to the data
set's stored size by :func:`cnnzoo.data.images.decode_file` (shorter side + centre crop), channels
matched (grey <-> RGB), then the engine's :class:`~cnnzoo.training.engine.BatchPrep` normalises and
resizes the batch to the model's input. Unreadable files are skipped with a one-line warning each.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnzooError


@dataclass
class Prediction:
    """One image's result: ``label`` is the top class, ``topk`` the ``k`` best ``(class, probability)``."""

    path: str
    id: str  # the Kaggle submission id: the file stem, or the relative path where stems repeat (image_ids)
    label: str
    prob: float
    topk: list[tuple[str, float]]


@dataclass
class PredictResult:
    predictions: list[Prediction]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    classes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    tta: str = "off"  # the views each image's probabilities were averaged over (training.tta.effective_tta)

    def write_csv(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """A Kaggle-style ``id,label`` file, rows sorted by id (the file stem)."""
        return write_submission(self.predictions, path, overwrite=overwrite)


def collect_images(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files named directly (any extension; the decoder decides) and image files found under folders
    (recursively, by extension, sorted). A path that does not exist is an error. FIFOs, sockets and devices
    are kept, so the decoder reports them as "not a regular file" (without opening them) and they are skipped."""
    from ..data.images import is_image_name

    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if not f.is_dir() and is_image_name(f.name))
        elif os.path.lexists(p) and p.exists():  # a file, or a FIFO/socket/device the decoder skips
            files.append(p)
        elif os.path.lexists(p):
            raise CnnzooError(f"{str(p)!r} is a broken symbolic link: give image files or folders of images")
        else:
            raise CnnzooError(f"{str(p)!r} does not exist: give image files or folders of images")
    return list(dict.fromkeys(files))


def image_ids(files: list[Path]) -> dict[Path, str]:
    """Submission ids: the file stem (Kaggle's convention) when every stem is unique; otherwise each file's
    path relative to the folder all the images share (``cat/1.png``, ``dog/1.png``), so no two rows of
    ``--csv`` carry the same id (``cat/1.png`` and ``dog/1.png`` share the stem ``1``)."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return dict(zip(files, stems, strict=True))
    absolute = [f.absolute() for f in files]
    common = Path(os.path.commonpath(absolute))
    if len(files) == 1 or common in absolute:
        common = common.parent
    return {f: a.relative_to(common).as_posix() for f, a in zip(files, absolute, strict=True)}


def _stderr_warn(msg: str) -> None:
    print(msg, file=sys.stderr)


def predict(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike | Iterable[str | os.PathLike],
    topk: int = 5,
    batch_size: int = 64,
    device: str | None = None,
    warn: Callable[[str], None] | None = _stderr_warn,
    pretrained: bool | str | os.PathLike | None = None,
    tta: str | None = None,
) -> PredictResult:
    """Classify image files (or folders of them) with a trained checkpoint.

    ``checkpoint`` is a run folder (its ``best`` is used), a ``best``/``last`` folder or a
    ``model.safetensors`` written by ``cnnzoo train``. Unreadable images are skipped: listed in
    ``result.skipped`` and reported through ``warn`` (default: one line each on stderr). Raises
    :class:`CnnzooError` when no image at all could be read.

    With ``pretrained`` (``True``/``"imagenet"``, a library's tag, or a weights file) ``checkpoint`` is a
    model name instead: published ImageNet weights (:func:`cnnzoo.models.hub.pretrained_model`), their categories
    as classes and their evaluation transform (shorter side to ``resize``, centre ``crop``, mean, std).

    ``tta`` (``off``, ``flip``, ``flip-translate``; default: the run's own ``--tta``, as ``cnnzoo eval``):
    probabilities of the mean logits over each image's views, mirrors only where the run trained with flips.
    """
    from ..data.images import DECODE_CHUNK, iter_decoded, match_channels
    from ..training import load_checkpoint
    from ..training.distributed import resolve_device
    from ..training.tta import effective_tta
    from ..utils.ranges import POSITIVE_INT

    topk = POSITIVE_INT.check("topk (--topk)", topk)
    batch_size = POSITIVE_INT.check("batch_size (--batch-size)", batch_size)
    files = collect_images(images)
    if not files:
        raise CnnzooError("no image files found: give image files or folders holding .png/.jpg/... files")
    dev = resolve_device(device)
    from ..training.config import pretrained_value

    if pretrained_value(pretrained) is not None:
        from ..models.factory import pretrained_model

        model, meta = pretrained_model(str(checkpoint), pretrained, device=dev)
    else:
        model, meta = load_checkpoint(checkpoint, device=dev)
    classes = [str(c) for c in (meta.get("classes") or range(int(meta["num_classes"])))]
    size, in_chans = int(meta["img_size"]), int(meta["in_chans"])
    # the data set's stored size and channels: files are read as training read its data, then resized
    data_size = int(meta.get("data_img_size") or size)
    data_chans = int(meta.get("data_in_chans") or in_chans)
    if meta.get("mean") is None or meta.get("std") is None:  # the reader fills a named data set's in
        raise CnnzooError(f"{checkpoint}: the checkpoint has no 'mean'/'std' (the input normalisation) and its "
                          f"data set {meta.get('dataset')!r} is not a named one: add both fields to its metadata")
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    # published weights' evaluation transform (also stored in checkpoints fine-tuned from them): shorter side
    # to ``resize``, then the centre ``crop``
    crop = int(meta["crop"]) if meta.get("crop") and meta.get("resize") else None
    if crop is not None:
        data_size = int(meta["resize"])

    views = effective_tta(tta if tta is not None else meta.get("tta", "off"), bool(meta.get("hflip", False)))
    ids = image_ids(files)
    k = min(topk, len(classes))
    preds: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    # decoded a chunk at a time (on every core), so a folder of any size is predicted in bounded memory
    chunk = max(batch_size, DECODE_CHUNK)
    decoded = iter_decoded([str(f) for f in files], data_size, chunk=chunk)
    with torch.inference_mode():
        for start, results in zip(range(0, len(files), chunk), decoded, strict=True):
            good = []
            for f, (arr, _, why) in zip(files[start:start + chunk], results, strict=True):
                if arr is None:
                    skipped.append((str(f), why))
                else:
                    good.append((f, match_channels(arr, data_chans)))
            for i in range(0, len(good), batch_size):
                part = good[i:i + batch_size]
                probs, idx = _classify(model, np.stack([a for _, a in part]), size, in_chans, dev, mean, std,
                                       crop, classes, k, views)
                for (f, _), pr, ix in zip(part, probs, idx, strict=True):
                    top = [(classes[j], float(q)) for j, q in zip(ix, pr, strict=True)]
                    preds.append(Prediction(path=str(f), id=ids[f], label=top[0][0], prob=top[0][1], topk=top))
    if not preds:  # one line, not a warning per file before it
        raise CnnzooError(f"none of the {len(files)} file(s) is a readable image (first: {skipped[0][0]}: "
                          f"{skipped[0][1]})")
    for f, why in skipped if warn is not None else ():
        warn(f"warning: skipped {f}: {why}")
    return PredictResult(predictions=preds, skipped=skipped, classes=classes, meta=meta, tta=views)


def _classify(model: torch.nn.Module, arrays: np.ndarray, size: int, in_chans: int, dev: torch.device,
              mean: tuple[float, ...], std: tuple[float, ...], crop: int | None, classes: list[str],
              k: int, views: str = "off") -> tuple[list[list[float]], list[list[int]]]:
    """Top-``k`` probabilities and class indices of one batch of uint8 images, prepared as in evaluation,
    from the mean logits over the test-time views ``views`` (an effective TTA mode)."""
    from ..data import ImageSet
    from ..data.augment import center_crop
    from ..data.batches import BatchPrep
    from ..training.loop import logits_of
    from ..training.tta import tta_logits

    x = torch.from_numpy(arrays)
    if crop is not None and x.shape[-1] > crop:
        x = center_crop(x, crop).contiguous()
    batch = ImageSet(images=x, labels=torch.zeros(len(x), dtype=torch.long), classes=classes, mean=mean,
                     std=std, name="predict", split="predict")
    prep = BatchPrep(batch, size, in_chans, dev, pad=0, hflip=False, channels_last=False, mean=mean, std=std)
    logits = tta_logits(lambda t: logits_of(model(t)), prep(x.to(dev)), views)
    p, idx = logits.softmax(dim=1).topk(k, dim=1)
    return p.cpu().tolist(), idx.cpu().tolist()


def write_submission(predictions: Iterable[Prediction], path: str | os.PathLike, *,
                     overwrite: bool = False) -> Path:
    """``id,label`` rows sorted by id, written atomically (:func:`cnnzoo.utils.files.atomic_write`); an
    existing file this process did not write is replaced only with ``overwrite``."""
    from ..utils.files import atomic_write_text
    from ..utils.oserr import os_error_line

    rows = sorted(((p.id, p.label) for p in predictions), key=lambda r: r[0])
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["id", "label"])
    w.writerows(rows)
    try:  # a file name that is not valid UTF-8 is written as its own bytes (surrogateescape)
        return atomic_write_text(path, buf.getvalue(), overwrite=overwrite, what="--csv")
    except OSError as e:  # a full disk or no permission: one line, and no half-written file left
        raise CnnzooError(f"cannot write the --csv file: {os_error_line(e)}") from e
