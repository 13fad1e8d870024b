"""The training engine's own overheads: the in-memory data pipeline alone, and an epoch against its bare steps."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..data.batches import BatchPrep, epoch_plan
from ..errors import CnnzooError
from ..speed.policy import speed_plan
from ..training.loop import train_step
from .machine import bench_device, sync

if TYPE_CHECKING:
    from ..data import ImageSet


# ------------------------------------------------------------------------ the training loop and data
def _train_set(dataset: str, data_dir: str | os.PathLike | None, subset: int | None,
               seed: int = 0) -> ImageSet:
    from ..data import load_dataset

    ds = load_dataset(dataset, "train", data_dir)
    if subset and subset < len(ds):
        g = torch.Generator().manual_seed(seed)
        ds = ds.subset(torch.randperm(len(ds), generator=g)[:subset].sort().values)
    return ds


def _prep_for(ds: ImageSet, dataset: str, img_size: int, in_chans: int, dev: torch.device,
              channels_last: bool = False) -> tuple[BatchPrep, int]:
    """The engine's batch preparation with the data set's recipe (crop padding, flips)."""
    from ..training.config import recipe_for

    pad = recipe_for(dataset).get("pad", max(0, ds.img_size // 8))
    return BatchPrep(ds, img_size, in_chans, dev, pad, ds.hflip, channels_last, ds.mean, ds.std), pad


def pipeline_throughput(dataset: str = "mnist", batch_size: int = 128, repeats: int = 3,
                        data_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        subset: int | None = None) -> dict:
    """Images per second the in-memory pipeline delivers: the epoch plan (order, crops, flips) and, per batch,
    the crops and flips of the batch's images as row copies from the data set's :class:`CropFlipTable`
    (the per-pixel gather where the table is not built) and normalisation to float. No model.

    The median over ``repeats`` epochs is reported (the training engine's own ``BatchPrep``/``epoch_plan``);
    ``table_s`` is the one-off time to build the table, paid once per run like ``load_s``.
    """
    dev = bench_device(device)
    t = time.perf_counter()
    ds = _train_set(dataset, data_dir, subset)
    load_s = time.perf_counter() - t
    prep, pad = _prep_for(ds, dataset, ds.img_size, ds.in_chans, dev)
    x, y = ds.images.to(dev), ds.labels.to(dev)
    t = time.perf_counter()
    tabled = prep.build_table(x)
    sync(dev)
    table_s = time.perf_counter() - t
    n = len(ds)
    steps = n // batch_size
    if steps < 1:
        raise CnnzooError(f"batch size {batch_size} is larger than the {n} images of {dataset}")
    times = []
    for r in range(repeats):
        sync(dev)
        t = time.perf_counter()
        perm, dy, dx, flip = epoch_plan(0, r, n, pad, ds.hflip, dev)
        for i in range(steps):
            s = slice(i * batch_size, (i + 1) * batch_size)
            idx = perm[s]
            xb, yb = prep.sample(x, idx, dy[s], dx[s], flip[s]), y.index_select(0, idx)
        sync(dev)
        times.append(time.perf_counter() - t)
    t_med = statistics.median(times)
    return {"dataset": ds.name, "images": steps * batch_size, "batch_size": batch_size,
            "shape": list(xb.shape[1:]), "dtype": str(xb.dtype).removeprefix("torch."),
            "images_per_s": round(steps * batch_size / t_med, 1), "epoch_s": round(t_med, 4),
            "epoch_s_runs": [round(v, 4) for v in times], "load_s": round(load_s, 2),
            "table_s": round(table_s, 2) if tabled else None, "device": str(dev),
            "threads": torch.get_num_threads(), "label_sum": int(yb.sum())}


def loop_overhead(model: str = "lenet5", dataset: str = "mnist", repeats: int = 3, subset: int | None = None,
                  data_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  amp: str = "auto") -> dict:
    """How much longer an epoch of :func:`cnnzoo.train` takes than its bare steps on the same batches.

    Both sides train a fresh ``model`` from the same seed with the data set's recipe. The engine's figure is
    its own training time of the epoch (its ``train_images_per_s``: augmentation, metrics, LR schedule,
    progress bookkeeping included; its per-epoch evaluation and checkpoint excluded) plus the epoch plan it
    draws before the loop. The bare loop gets the epoch's batches already augmented and normalised on the
    device and times only the engine's own :func:`~cnnzoo.training.loop.train_step` with the engine's
    optimizer, memory format, precision and conv gradients (:func:`cnnzoo.speed.policy.speed_plan`). Engine and
    bare loop alternate ``repeats`` times; medians are compared.
    """
    from ..models.registry import model_info, resolve_name

    dev = bench_device(device)
    name = resolve_name(model)
    ds = _train_set(dataset, data_dir, subset)
    info = model_info(name)
    size = ds.img_size if info.max_size is None else min(max(ds.img_size, info.min_size), info.max_size)
    plan = speed_plan(name, dev, amp, warn=False)
    prep, pad = _prep_for(ds, dataset, size, ds.in_chans, dev, channels_last=plan.channels_last)
    x, y = ds.images.to(dev), ds.labels.to(dev)
    from ..training.config import resolve

    cfg = resolve({"model": name, "dataset": dataset, "amp": amp})
    steps = len(ds) // cfg.batch_size
    t = time.perf_counter()
    perm, dy, dx, flip = epoch_plan(0, 0, len(ds), pad, ds.hflip, dev)
    sync(dev)
    plan_s = time.perf_counter() - t
    batches = []
    for i in range(steps):
        s = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
        batches.append((prep(x[perm[s]], dy[s], dx[s], flip[s]), y[perm[s]]))
    eng, bar = [], []
    with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-") as tmp:
        for r in range(repeats):  # alternate which goes first
            run = os.path.join(tmp, f"run{r}")
            if r % 2:
                bar.append(_bare_epoch(cfg, plan, ds, batches))
            eng.append(_engine_epoch(cfg, run, data_dir, dev, subset, steps) + plan_s)
            if r % 2 == 0:
                bar.append(_bare_epoch(cfg, plan, ds, batches))
    e, b = statistics.median(eng), statistics.median(bar)
    n = steps * cfg.batch_size
    return {"model": name, "dataset": ds.name, "images": n, "batch_size": cfg.batch_size, "img_size": size,
            "engine_s": round(e, 4), "bare_s": round(b, 4), "ratio": round(e / b, 4),
            "engine_s_runs": [round(v, 4) for v in eng], "bare_s_runs": [round(v, 4) for v in bar],
            "plan_s": round(plan_s, 4), "bare_images_per_s": round(n / b, 1), "engine_images_per_s": round(n / e, 1),
            "device": str(dev), "threads": torch.get_num_threads()}


def _engine_epoch(cfg, out: str, data_dir, dev: torch.device, subset: int | None, steps: int) -> float:
    """Training seconds of one epoch of :func:`cnnzoo.train` (evaluation on a subset, not timed)."""
    from ..training import train

    res = train(cfg=replace(cfg, epochs=1), out=out, data_dir=data_dir, device=str(dev), progress=False,
                verbose=False, save_every_s=None, train_subset=subset, test_subset=subset)
    return steps * cfg.batch_size / res.history[0]["train_images_per_s"]


def _bare_epoch(cfg, plan, ds: ImageSet, batches: list[tuple[Tensor, Tensor]]) -> float:
    """Seconds of the engine's steps alone over ``batches``: its model, optimizer, precision, conv gradients."""
    from ..models.factory import create_model
    from ..speed.conv_grad import small_map_grads
    from ..training.setup import head_param_names, make_optimizer, param_groups

    dev = plan.device
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, num_classes=ds.num_classes, in_chans=ds.in_chans).to(dev).train()
    if plan.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer(param_groups(net, cfg, set(head_param_names(net))), cfg, plan)
    scaler = torch.amp.GradScaler("cuda") if plan.grad_scaler else None
    with small_map_grads(net, plan.gemm_wgrad):
        sync(dev)
        t0 = time.perf_counter()
        for xb, yb in batches:
            train_step(net, opt, xb, yb, plan.autocast, scaler, cfg.label_smoothing, cfg.aux_weight)
        sync(dev)
        return time.perf_counter() - t0
