"""The pieces of the training loop, each testable alone: LR schedule, loss, one step, an epoch's batches and
metrics, evaluation. The loop itself is the engine's (:func:`cnnzoo.training.engine.run`).

:func:`train_step` is the step the benchmark times too (:mod:`cnnzoo.benchmarking`). An :class:`EpochSegment`
gives the engine an epoch's batches from its plan; metrics are accumulated on the device and read once per
epoch (and when the progress bar refreshes): no host sync per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batches import BatchPrep, epoch_boxes, epoch_plan
from ..errors import CnnzooError
from .distributed import DistContext, all_reduce_
from .state import EpochTotals
from .tta import tta_logits

if TYPE_CHECKING:
    from .setup import Job


class NonFiniteLossError(CnnzooError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------- schedules
def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up over ``warmup`` steps, then: cosine to 0; linear to 0; step (x0.1 at 50 % and 75 % of the run, as
    He et al. 2016 for CIFAR); onecycle (airbench's triangle: linear up for 25 % (or the warm-up), then
    linearly down to 0); constant.
    """
    if schedule == "onecycle":
        peak = warmup if warmup > 0 else max(1, int(0.25 * total))
        if step < peak:
            return (step + 1) / peak
        return max(0.0, (total - step) / (total - peak + 1))
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    if schedule == "linear":
        return max(0.0, 1.0 - t)
    if schedule == "step":
        return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
    return 1.0


# ------------------------------------------------------------------------------------ loss and step
def logits_of(out: Tensor | tuple | list) -> Tensor:
    """The main output of a net (GoogLeNet returns its auxiliary outputs too in training mode)."""
    return out[0] if isinstance(out, tuple | list) else out


def classification_loss(out: Tensor | tuple | list, y: Tensor, smoothing: float = 0.0,
                        aux_weight: float = 0.3) -> Tensor:
    """Cross-entropy with label smoothing; GoogLeNet's auxiliary outputs (training mode) weighted ``aux_weight``."""
    if isinstance(out, tuple | list):
        loss = F.cross_entropy(out[0], y, label_smoothing=smoothing)
        for aux in out[1:]:
            if aux is not None:
                loss = loss + aux_weight * F.cross_entropy(aux, y, label_smoothing=smoothing)
        return loss
    return F.cross_entropy(out, y, label_smoothing=smoothing)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
               autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               scaler: torch.amp.GradScaler | None = None, smoothing: float = 0.0,
               aux_weight: float = 0.3) -> tuple[Tensor, Tensor | tuple]:
    """One optimizer step: forward and loss under ``autocast``, ``zero_grad(set_to_none=True)``, backward,
    step (through ``scaler`` for fp16). Returns (loss, output), both still on the device."""
    with autocast():
        out = model(x)
        loss = classification_loss(out, y, smoothing, aux_weight)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss, out


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The LR the optimizer steps with now: its head's (the backbone of a fine-tuned net learns at a fraction)."""
    return next((g["lr"] for g in opt.param_groups if str(g.get("name", "head")).startswith("head")),
                opt.param_groups[0]["lr"])


def freeze_bn_stats(net: nn.Module, every: bool = False) -> None:
    """BatchNorm layers whose parameters are all frozen (or, with ``every``, all of them) keep their running
    statistics (eval mode); their affine parameters still train unless frozen."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if every or (ps and not any(p.requires_grad for p in ps)):
                m.eval()


# ------------------------------------------------------------------------------------------ an epoch
@dataclass
class EpochResult:
    """What an :class:`EpochSegment` did: totals over all ranks, steps done, the training seconds since the
    segment began or its last mid-epoch save."""

    loss_sum: float
    correct: int
    seen: int
    steps_done: int  # steps of this epoch done so far (== steps_per_epoch unless stopped)
    train_s: float  # training time since the last mid-epoch save (or the epoch's start)
    images: int  # images trained in that time, all ranks
    stopped: str | None  # "max_steps" when the step limit ended the epoch early; a budget's "eval" or "end"
    local: EpochTotals  # this process's sums (what a mid-epoch checkpoint keeps)
    t_start: float = 0.0  # perf_counter() when the segment began (an epoch's time in the log)


class EpochMeter:
    """An epoch's training loss sum, hits, images and first non-finite step, kept on the device: no host sync
    per step, read when the progress bar refreshes, at a mid-epoch save and at the end."""

    def __init__(self, dev: torch.device, start: EpochTotals | None = None) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.correct = torch.zeros((), dtype=torch.long, device=dev)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=dev)
        self.seen = 0
        if start is not None:  # resuming mid-epoch: the sums so far
            self.loss_sum += float(start.loss_sum)
            self.correct += int(start.correct)
            self.seen = int(start.seen)

    @torch.no_grad()
    def add(self, loss: Tensor, out: Tensor | tuple, y: Tensor, step: int) -> None:
        ld = loss.detach()
        self.loss_sum += ld.double() * y.shape[0]
        self.correct += (logits_of(out).detach().argmax(1) == y).sum()
        self.bad_step = torch.where((self.bad_step < 0) & ~torch.isfinite(ld), step, self.bad_step)
        self.seen += y.shape[0]

    def totals(self) -> EpochTotals:
        return EpochTotals(self.loss_sum.item(), int(self.correct.item()), self.seen)

    def reduced(self, dist: DistContext) -> EpochTotals:
        """The totals over all processes."""
        tl, tc = self.loss_sum.clone(), self.correct.clone()
        ts = torch.tensor(self.seen, device=tl.device)
        if dist.world > 1:
            for v in (tl, tc, ts):
                all_reduce_(v)
        return EpochTotals(tl.item(), int(tc.item()), int(ts.item()))


class EpochSegment:
    """The steps of one epoch that a run does in one go, from where the epoch stands to its end or a stop: the
    batches drawn from ``(seed, epoch)`` (so a resumed epoch continues its plan), the metrics on the device, the
    progress bar and the training timer. The engine's loop steps through it; it keeps no run state."""

    def __init__(self, job: Job, epoch: int, first: int, totals: EpochTotals | None) -> None:
        """``first``: the step of the epoch to start at; ``totals``: the partial epoch's sums when resuming
        mid-epoch."""
        self.t_start = time.perf_counter()
        cfg, dev, images = job.cfg, job.model.speed.device, job.data.train.images
        n = len(job.data.train)
        self.job, self.epoch = job, epoch
        self.perm, self.dy, self.dx, self.flip = epoch_plan(cfg.seed, epoch, n, cfg.pad, cfg.hflip, dev, cfg.flip)
        self.boxes = (epoch_boxes(cfg.seed, epoch, n, images.shape[-2], images.shape[-1], cfg.crop_scale, dev)
                      if cfg.crop_scale else None)
        job.model.ddp_net.train()
        if cfg.freeze_backbone:
            freeze_bn_stats(job.model.net)
        if cfg.freeze_bn:
            freeze_bn_stats(job.model.net, every=True)
        self.meter = EpochMeter(dev, totals if first else None)
        self.bar = _progress_bar(job, epoch, first)
        self.mark()

    def __enter__(self) -> EpochSegment:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def mark(self) -> None:
        """Start the training timer (at the start, and after a mid-epoch save accounted for what came before)."""
        self.t_mark, self.seen_mark = time.perf_counter(), self.meter.seen

    def since_mark(self) -> tuple[float, int]:
        """(training seconds, images of all processes) since :meth:`mark`."""
        return time.perf_counter() - self.t_mark, (self.meter.seen - self.seen_mark) * self.job.dist.world

    def batch(self, i: int) -> tuple[Tensor, Tensor]:
        """This process's share of the epoch's batch ``i``: augmented inputs and their labels."""
        job, plan = self.job, self.job.plan
        start = i * plan.batch + job.dist.rank * plan.local_batch
        s = slice(start, start + plan.local_batch)
        idx = self.perm[s]
        # index_select, not x[idx]: the same copy, faster on the CPU (no advanced-indexing machinery)
        boxes = self.boxes.index_select(0, idx) if self.boxes is not None else None
        train = job.data.train
        return (job.data.prep.sample(train.images, idx, self.dy[s], self.dx[s], self.flip[s], boxes),
                train.labels.index_select(0, idx))

    def add(self, loss: Tensor, out: Tensor | tuple, y: Tensor, step: int, done: int) -> None:
        """Count a step's loss and hits (``step``: the run's steps so far; ``done``: the epoch's); refresh the
        progress bar now and then (a single process then also stops at a non-finite loss)."""
        self.meter.add(loss, out, y, step)
        steps_per_epoch = self.job.plan.steps_per_epoch
        if self.bar is not None and (done % max(1, steps_per_epoch // 25) == 0 or done == steps_per_epoch):
            _refresh_bar(self.bar, done, self.meter, self.since_mark()[1], self.t_mark)
            if self.job.dist.world == 1:
                self.check_finite()

    def check_finite(self) -> None:
        check_finite(self.meter.bad_step, self.job.out_dir, self.epoch, self.job.cfg.lr)

    def finish(self, steps_done: int, stopped: str | None) -> EpochResult:
        """The segment's totals over all processes, after checking every process's losses were finite."""
        dist, dev = self.job.dist, self.job.model.speed.device
        if dist.world > 1:
            all_reduce_(self.meter.bad_step, op="max")
        self.check_finite()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_s, images = self.since_mark()
        return EpochResult(**vars(self.meter.reduced(dist)), steps_done=steps_done, train_s=train_s, images=images,
                           stopped=stopped, local=self.meter.totals(), t_start=self.t_start)


def _progress_bar(job: Job, epoch: int, first: int):  # -> tqdm | None
    if not (job.opts.progress and job.dist.rank == 0):
        return None
    from tqdm.auto import tqdm  # deferred: tqdm's import is slow and only progress bars need it

    return tqdm(total=job.plan.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{job.cfg.epochs}",
                unit="step", leave=False, dynamic_ncols=True)


def _refresh_bar(bar, done: int, meter: EpochMeter, images: int, t0: float) -> None:
    dt = max(time.perf_counter() - t0, 1e-9)
    seen = max(meter.seen, 1)
    bar.set_postfix(loss=f"{meter.loss_sum.item() / seen:.4f}", acc=f"{meter.correct.item() / seen:.3f}",
                    img_s=f"{images / dt:.0f}", refresh=False)
    bar.update(done - bar.n)


def check_finite(bad_step: Tensor, out_dir: Path, epoch: int, lr: float) -> None:
    """Stop with :class:`NonFiniteLossError` if any step's loss was NaN/inf (``bad_step`` >= 0 names it)."""
    s = int(bad_step.item())
    if s < 0:
        return
    from .checkpoint import find_resume, read_weights

    kept = find_resume(out_dir)
    if kept is None:
        saved = "no checkpoint was saved before it"
    elif all(bool(torch.isfinite(v).all()) for v in read_weights(kept).values() if v.is_floating_point()):
        saved = f"the last good checkpoint is {kept}"
    else:  # saved after the weights had already diverged
        saved = f"the last checkpoint, {kept}, holds NaN/inf weights too (start again rather than --resume)"
    # steps count from 1: the first loss comes before any update, so the lr is not to blame for it
    cause = ("the starting weights (--pretrained?) or the data are not finite" if s == 1
             else f"lower --lr (now {lr:g}) or check the data")
    raise NonFiniteLossError(f"the loss became NaN/inf at step {s} (epoch {epoch + 1}); stopped, {saved}: {cause}")


# ------------------------------------------------------------------------------------------ evaluate
@torch.no_grad()
def evaluate_tensors(net: nn.Module, x: Tensor, y: Tensor, prep: BatchPrep, batch_size: int, num_classes: int,
                     dist: DistContext | None = None, autocast=contextlib.nullcontext,
                     confusion: bool = False, tta: str = "off") -> dict[str, Tensor]:
    """Loss sum, top-1/top-5 hit counts (and the confusion matrix) over ``x``, sharded across ranks; with an
    effective ``tta`` other than ``off`` (:func:`~.tta.effective_tta`) also ``top1_tta``, the top-1 hits of the
    test-time-augmented logits (the plain forward pass is shared)."""
    rank, world = (dist.rank, dist.world) if dist else (0, 1)
    was_training = net.training
    net.eval()
    dev = y.device  # the images may stay on the CPU (a memory-mapped folder); labels and sums are on the device
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    top1 = torch.zeros((), dtype=torch.long, device=dev)
    top5 = torch.zeros((), dtype=torch.long, device=dev)
    cm = torch.zeros(num_classes * num_classes, dtype=torch.long, device=dev) if confusion else None
    top1_tta = torch.zeros((), dtype=torch.long, device=dev)
    idx = torch.arange(rank, x.shape[0], world, device=x.device)
    k = min(5, num_classes)
    for i in range(0, idx.numel(), batch_size):
        b = idx[i:i + batch_size]
        yb = y[b]
        xb = prep(x[b])
        with autocast():
            logits = logits_of(net(xb))
            if tta != "off":
                top1_tta += (tta_logits(lambda v: logits_of(net(v)), xb, tta, logits).argmax(1) == yb).sum()
        logits = logits.float()
        loss += F.cross_entropy(logits, yb, reduction="sum").double()
        pred = logits.topk(k, dim=1).indices
        top1 += (pred[:, 0] == yb).sum()
        top5 += (pred == yb[:, None]).any(dim=1).sum()
        if cm is not None:
            cm += torch.bincount(yb * num_classes + pred[:, 0], minlength=num_classes * num_classes)
    out = {"loss": loss, "top1": top1, "top5": top5, "n": torch.tensor(idx.numel(), device=dev)}
    if tta != "off":
        out["top1_tta"] = top1_tta
    if cm is not None:
        out["confusion"] = cm.view(num_classes, num_classes)
    if dist is not None and dist.world > 1:
        for v in out.values():
            all_reduce_(v)
    net.train(was_training)
    return out


# ------------------------------------------------------------------------------------------ the log
LOG_HEADER = (f"{'epoch':>7}  {'train_loss':>10}  {'train_acc':>9}  {'test_loss':>9}  {'test_acc':>8}  "
              f"{'lr':>9}  {'time_s':>7}  {'img/s':>7}")
PARTIAL_NOTE = "* after the epoch: evaluated mid-epoch (--max-steps stopped it; --resume finishes it)"


def log_line(h: dict, epochs: int) -> str:
    """One aligned row of the epoch table; ``*`` after the epoch marks a partial epoch (:data:`PARTIAL_NOTE`);
    a budgeted run's rows give the epochs so far as a fraction."""
    if isinstance(h["epoch"], float):
        epoch = f"{h['epoch']:.2f}"
    else:
        epoch = f"{h['epoch']}/{epochs}" + ("*" if h.get("partial") else "")
    extra = "".join(f"  {name} {100 * h[k]:.2f}%" for k, name in
                    (("test_acc_tta", "TTA"), ("ema_acc", "EMA"), ("ema_acc_tta", "EMA+TTA")) if h.get(k) is not None)
    return (f"{epoch:>7}  {h['train_loss']:>10.4f}  {100 * h['train_acc']:>8.2f}%  {h['test_loss']:>9.4f}  "
            f"{100 * h['test_acc']:>7.2f}%  {h['lr']:>9.2e}  {h['epoch_time_s']:>7.1f}  "
            f"{h['train_images_per_s']:>7.0f}{extra}")
