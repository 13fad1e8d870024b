"""``train()``: set a run up, then one loop of steps / evaluate / save, then the result.

Read top to bottom: :func:`train` resolves the options (:mod:`.config`), opens the run folder (:mod:`.rundir`),
sets the run up (:func:`.setup.setup`: the resolved config, data as uint8 tensors on the device, model,
optimizer, plan of steps, run state), then :func:`run` steps through epochs (batches from
:class:`.loop.EpochSegment`, :func:`.loop.train_step`), evaluating (:func:`evaluate_epoch`) and saving
(:func:`save`) at each epoch's end or a budget's evaluation points. Each epoch's plan comes from
``(seed, epoch)``, so a resumed run continues exactly, even mid-epoch. Checkpoints are written by
:mod:`.checkpoint` (atomic, safetensors + JSON).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace

from torch import Tensor, nn

from ..data import ImageSet
from ..errors import CnnzooError
from ..speed.conv_grad import small_map_grads
from ..utils.files import atomic_write_text
from . import checkpoint as ck
from .budget import BudgetController, BudgetPlan
from .config import TrainConfig, resolve, run_options, split_options
from .distributed import setup_distributed
from .loop import (
    LOG_HEADER,
    PARTIAL_NOTE,
    EpochResult,
    EpochSegment,
    current_lr,
    evaluate_tensors,
    log_line,
    lr_factor,
    set_lr,
    train_step,
)
from .precise_bn import recalibrate_bn
from .rundir import open_run_dir, resumed_config
from .setup import Job, setup
from .tta import TTA_VIEWS


@dataclass
class TrainResult:
    """What a run achieved. Accuracies are top-1 on the held-out split, as fractions in [0, 1]."""

    best_acc: float
    final_acc: float
    best_epoch: int
    history: list[dict]
    train_time_s: float  # wall-clock of the run (resumed segments added), eval and checkpoints included
    train_images_per_s: float  # training throughput: images through forward + backward per second
    checkpoint: str  # DIR/best
    last_checkpoint: str  # DIR/last
    out: str
    config: dict
    epochs_run: int = 0
    steps: int = 0
    stopped: str | None = None  # "max_steps" when the step limit ended the run early
    params: int = 0
    img_size: int = 0
    final_top5: float | None = None
    skipped_images: int = 0
    device: str = "cpu"
    precision: str = "float32"  # what training ran in: float32, or bf16/fp16 autocast (--amp; auto chooses)
    budget_s: float | None = None  # a budgeted run's wall-clock budget (--time-budget)
    images_seen: int = 0  # training images through the net, all processes and segments
    epochs_seen: float = 0.0  # images_seen / training images (a budgeted run ends mid-epoch)
    final_lr: float | None = None  # the LR when the final model was scored (0 at a decaying schedule's end)
    tta: str = "off"  # the test-time augmentation of the evaluations: off, flip, translate or flip-translate
    scored_by: str = "plain"  # what chose best/: "tta" (its TTA top-1) when tta is on, else "plain" top-1
    best_weights: str = "plain"  # what best/ holds: the trained weights ("plain") or their average ("ema")
    best_acc_tta: float | None = None  # best/'s TTA top-1 (best_acc is its plain top-1)
    final_acc_tta: float | None = None  # the final weights' TTA top-1
    final_ema_acc: float | None = None  # --ema: the final average's plain top-1 ...
    final_ema_acc_tta: float | None = None  # ... and TTA top-1
    extra: dict = field(default_factory=dict)
    # for the caller, not in result.json:
    best_eval: dict | None = field(default=None, repr=False)  # best/'s held-out summary, confusion matrix included
    net: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained net (last weights), eval mode
    sample: Tensor | None = field(default=None, repr=False, compare=False)  # held-out images prepared for the net

    def to_dict(self) -> dict:
        """What ``result.json`` holds: every field but the three for the caller."""
        return asdict(replace(self, best_eval=None, net=None, sample=None),
                      dict_factory=lambda kv: {k: v for k, v in kv if k not in _CALLER_ONLY})


_CALLER_ONLY = ("best_eval", "net", "sample")


def train(model: str | nn.Module | None = None, dataset: str | None = None, *, cfg: TrainConfig | None = None,
          data: tuple[ImageSet, ImageSet] | None = None, **options) -> TrainResult:
    """Train a zoo model (or any ``nn.Module``) on a named data set or ``folder:PATH``.

    ``options`` are :class:`~cnnzoo.training.config.TrainConfig` fields (``epochs``, ``lr``, ``pad`` ...; unset
    ones come from the data set's recipe) and :class:`~cnnzoo.training.config.RunOptions` fields (``out``,
    ``resume``, ``max_steps``, ``device`` ...). ``cfg``: a complete config to use as is (options still
    override it). Writes ``out/last`` and ``out/best`` every epoch, ``metrics.jsonl``,
    ``training_curves.png`` and ``result.json``. ``resume=True`` continues the run in ``out`` exactly where it
    stopped; ``time_budget_s`` trains for that many seconds instead of ``epochs`` (:func:`run`),
    ``max_steps`` stops after that many steps (mid-epoch). Under ``torchrun`` it trains with DDP.

    ``data``: the (training, held-out) splits of ``dataset`` already loaded (a folder at the size the run trains
    at), used as they are (``compare`` loads them once for all its models). The result also carries what the
    caller may need without reading the run back: ``best_eval`` (best/'s held-out loss, top-1, top-5, TTA top-1
    and confusion matrix), the trained ``net`` and a prepared held-out ``sample`` batch.
    """
    t0 = time.perf_counter()
    module = model if isinstance(model, nn.Module) else None
    if module is not None:
        model = getattr(module, "cnnzoo_name", None) or ""
    cfg_opts, run_opts = split_options(options)
    given = {"model": model, "dataset": dataset, **cfg_opts}
    recipe = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)} if cfg is not None else {}
    explicit = {**recipe, **{k: v for k, v in given.items() if v is not None}}
    explicit = _canonical_names({k: v for k, v in explicit.items() if v is not None})
    opts = run_options(run_opts)
    if opts.time_budget_s is not None and "schedule" not in explicit:
        explicit["schedule"] = "linear"  # decay to zero at the budget: best at small budgets (Li et al. 2020)
    config = resolve(explicit)
    dist = setup_distributed(opts.device)
    say = print if (opts.verbose and dist.rank == 0) else (lambda *a, **k: None)
    out_dir, resume_from, lock = open_run_dir(config, opts, dist, say)
    try:  # the run folder is this run's until it ends, however it ends (the lock: rundir.RunLock)
        stored, tensors = ck.read_state(resume_from) if resume_from is not None else (None, {})
        if stored is not None:
            config = resumed_config(config, explicit, stored, out_dir)
            say(f"resuming {out_dir} from epoch {stored['epoch']} step {stored['step']}")
        job = setup(config, opts, dist, out_dir, (resume_from, stored, tensors), module, say, data)
        job.state.started = t0
        result = run(job)
    except ValueError as e:  # torch's BatchNorm check, from any forward pass in training mode
        if "more than 1 value per channel" not in str(e):
            raise
        raise CnnzooError(one_value_per_channel(config)) from e
    finally:
        if lock is not None:
            lock.release()
    dist.close()
    return result


def one_value_per_channel(cfg: TrainConfig) -> str:
    """What to change when BatchNorm saw one value per channel: a batch of one image whose feature map is 1x1
    there (``--batch-size 1``, a last batch of one from ``--train-subset``, or ``--precise-bn 1``)."""
    given = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("batch_size", cfg.batch_size),
                      ("train_subset", cfg.train_subset), ("precise_bn", cfg.precise_bn)) if v)
    return (f"BatchNorm got one value per channel while training (a batch of one image reaching a 1x1 feature "
            f"map; {given}): use --batch-size, --train-subset and --precise-bn of 2 or more, or a larger "
            f"--img-size")


def _canonical_names(explicit: dict) -> dict:
    """The registry's name of the model, the data set's canonical name (a typo fails here, in one line)."""
    if explicit.get("dataset"):
        from ..data import canonical_name

        explicit["dataset"] = canonical_name(explicit["dataset"])
    if explicit.get("model"):
        from ..models.registry import resolve_name

        explicit["model"] = resolve_name(explicit["model"])
    return explicit


def run(job: Job) -> TrainResult:
    """The loop: epochs of steps, then an evaluation and checkpoints at each epoch's end (a budgeted run: at
    its plan's evaluation points, its epochs running into each other); until the last epoch, the budget's end
    or the step limit. A budgeted run's steps are fitted to its budget by a :class:`~.budget.BudgetController`
    (the LR schedule ends when the budget does; ``best`` is written at that end)."""
    state, cfg, model, steps_per_epoch = job.state, job.cfg, job.model, job.plan.steps_per_epoch
    budgeted = job.opts.time_budget_s is not None or state.budget is not None
    job.budget = _budget_controller(job) if budgeted else None
    _say_start(job)
    stopped, last = None, None
    with _training_mode(job) as writer:
        while not _run_done(job, stopped):
            with EpochSegment(job, state.epoch, state.epoch_step, state.accum) as seg:
                stop, done = None, state.epoch_step
                for i in range(state.epoch_step, steps_per_epoch):
                    set_lr(model.optimizer, _lr_factor(job, state.step))
                    x, y = seg.batch(i)
                    loss, out = train_step(model.ddp_net, model.optimizer, x, y, model.speed.autocast, model.scaler,
                                           cfg.label_smoothing, cfg.aux_weight)
                    state.step, done = state.step + 1, i + 1
                    if model.ema is not None:
                        model.ema.update(model.net, state.step - 1)
                    seg.add(loss, out, y, state.step, done)
                    stop = _stop_reason(job)
                    if stop is not None:
                        break
                    if due_for_save(job, seg, done):
                        _save_mid_epoch(job, seg, done)
            epoch_result = seg.finish(done, stop)
            state.train_s += epoch_result.train_s
            state.train_images += epoch_result.images
            if job.budget is None:
                last, stopped = _end_of_epoch(job, epoch_result, writer), epoch_result.stopped
            else:
                last, stopped = _budget_point(job, epoch_result, last)
    return finish(job, stopped, last)


def _run_done(job: Job, stopped: str | None) -> bool:
    """Whether the run has ended: stopped, its epochs done, or its budget's plan done."""
    if stopped is not None:
        return True
    return job.budget.plan.done if job.budget is not None else job.state.epoch >= job.cfg.epochs


def _lr_factor(job: Job, step: int) -> float:
    """The LR multiplier of the step after ``step`` steps: the budget's plan, else the schedule over the run."""
    if job.budget is not None:
        return job.budget.lr_factor(step)
    return lr_factor(step, job.plan.total_steps, job.plan.warmup, job.cfg.schedule)


def _stop_reason(job: Job) -> str | None:
    """Why the steps stop here, if they do: a budget's evaluation point (``"eval"``) or end (``"end"``), or the
    step limit (``"max_steps"``)."""
    step = job.state.step
    stop = job.budget.after_step(step) if job.budget is not None else None
    if stop is None and job.opts.max_steps is not None and step >= job.opts.max_steps:
        stop = "max_steps"
    return stop


def due_for_save(job: Job, seg: EpochSegment, done: int) -> bool:
    """Whether a mid-epoch ``last`` is due after ``done`` steps of the epoch: every ``save_every_s`` (single
    process; not at the epoch's end, which saves anyway)."""
    every = job.opts.save_every_s
    return bool(every and job.dist.world == 1 and done < job.plan.steps_per_epoch
                and time.perf_counter() - seg.t_mark > every)


def _save_mid_epoch(job: Job, seg: EpochSegment, done: int) -> None:
    """A mid-epoch ``last``: the run resumes at step ``done`` of the epoch with the segment's totals so far."""
    seg.check_finite()
    state = job.state
    train_s, images = seg.since_mark()
    state.train_s += train_s
    state.train_images += images
    state.epoch_step, state.accum = done, seg.meter.totals()
    save(job, "last")
    seg.mark()


@contextlib.contextmanager
def _training_mode(job: Job):
    """While the loop runs: our nn.Conv2d layers as SmallMapConv2d where the speed plan says so (plain after),
    and the TensorBoard writer of an epoch run (None without tensorboard)."""
    writer = _tensorboard(job) if job.budget is None else None
    with contextlib.ExitStack() as stack:
        if job.model.speed.gemm_wgrad:
            stack.enter_context(small_map_grads(job.model.net))
        try:
            yield writer
        finally:
            if writer is not None:
                writer.close()


def _end_of_epoch(job: Job, epoch_result: EpochResult, writer) -> dict:
    """After an epoch (or a part of one that a step limit cut): evaluate, save, log; the epoch's record."""
    partial = epoch_result.steps_done < job.plan.steps_per_epoch
    rec, held = evaluate_epoch(job, epoch_result, epoch_result.t_start, partial)
    epoch = job.state.epoch
    save_epoch(job, rec, held, epoch_result, partial)
    if writer is not None:
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            writer.add_scalar(k, rec[k], epoch + 1)
    job.say(log_line(rec, job.cfg.epochs) + (f"   ({PARTIAL_NOTE})" if partial else ""))
    return rec


# ------------------------------------------------------------------------------------ a time budget
def _budget_point(job: Job, epoch_result: EpochResult, last: dict | None) -> tuple[dict | None, str | None]:
    """After a budgeted run's segment: where the run stands in its epochs; at an evaluation point of its plan an
    evaluation, ``last`` (and ``best`` at the plan's end) and a log line. Returns (the latest record, why the
    run stopped early: ``"max_steps"`` or None)."""
    state, ctl = job.state, job.budget
    if epoch_result.steps_done >= job.plan.steps_per_epoch:
        state.epoch, state.epoch_step, state.accum = state.epoch + 1, 0, None
    else:
        state.epoch_step, state.accum = epoch_result.steps_done, epoch_result.local
    if epoch_result.stopped is None:
        return last, None  # an epoch ended between two evaluations
    ctl.plan.done = epoch_result.stopped == "end"
    t_eval = state.elapsed()  # the controller's clock
    rec, held = _budget_record(job, epoch_result, epoch_result.t_start)
    _save_budget_eval(job, rec, held, final=ctl.plan.done)
    ctl.evaluated(state.step, state.elapsed() - t_eval)
    job.say(log_line(rec, job.cfg.epochs))
    return rec, "max_steps" if epoch_result.stopped == "max_steps" else None


def _budget_controller(job: Job) -> BudgetController:
    """The run's controller: a resumed run's plan (with a new budget if one was given), else a fresh one
    whose first guess is the recipe's length."""
    state, cfg, dist = job.state, job.cfg, job.dist
    if state.budget is not None:
        plan = BudgetPlan.from_json(state.budget)
        if job.opts.time_budget_s is not None:
            plan.budget_s = float(job.opts.time_budget_s)
    else:
        plan = BudgetPlan(budget_s=float(job.opts.time_budget_s), end_step=job.plan.total_steps)

    def sync(values: list[float]) -> list[float]:  # rank 0's plan for every rank
        import torch
        import torch.distributed as tdist

        t = torch.tensor(values, dtype=torch.float64, device=dist.device)
        tdist.broadcast(t, src=0)
        return t.tolist()

    ctl = BudgetController(plan, state.elapsed, schedule=cfg.schedule,
                           warmup_steps=cfg.warmup_epochs * job.plan.steps_per_epoch, step=state.step,
                           eval_s=_eval_cost_guess(job), extra_evals=job.opts.reserve_evals,
                           sync=sync if dist.world > 1 else None)
    state.budget = plan.to_json()
    return ctl


def _eval_cost_guess(job: Job) -> float:
    """Seconds one evaluation with its checkpoint will take, before one was run: one held-out batch timed,
    scaled to the held-out split and the PreciseBN images, plus writing the weights and optimizer state."""
    test = job.data.test
    n = min(len(test), job.cfg.eval_batch_size, 128)
    if n == 0:
        return 0.0
    times, clock = [], job.state.elapsed  # the controller's clock
    for _ in range(2):  # the faster pass: the first pays one-off costs (kernel choice, allocations)
        t = clock()
        evaluate_tensors(job.model.net, test.images[:n], test.labels[:n], job.data.prep, n, job.data.num_classes,
                         None, job.model.speed.autocast)
        times.append(clock() - t)
    per_image = min(times) / n
    nbytes = sum(p.numel() * p.element_size() for p in job.model.net.parameters())
    views = TTA_VIEWS[job.cfg.tta_views]  # forward passes per held-out image
    one = job.data.test.images.shape[0] / job.dist.world * views + job.cfg.precise_bn
    if job.model.ema is not None:  # the average is evaluated too, with its own BatchNorm statistics
        one *= 2
        one += 0 if job.cfg.precise_bn else EMA_PRECISE_BN
    return per_image * one + 0.1 + 3 * nbytes / 100e6


def _budget_record(job: Job, epoch_result: EpochResult, t_seg: float) -> tuple[dict, dict[str, dict]]:
    """An evaluation of a budgeted run (:func:`evaluate_epoch`): the epoch record, with the epochs so far as a
    fraction, the images seen, the progress through the plan and the LR there (0 at a decaying schedule's
    end)."""
    state, ctl = job.state, job.budget
    rec, held = evaluate_epoch(job, epoch_result, t_seg, partial=False)
    rec.update(epoch=round(state.train_images / max(len(job.data.train), 1), 4), images_seen=state.train_images,
               progress=round(ctl.progress(state.step), 6), lr=job.cfg.lr * ctl.lr_factor(state.step),
               budget_s=ctl.plan.budget_s)
    return rec, held


def _save_budget_eval(job: Job, rec: dict, held: dict[str, dict], final: bool) -> None:
    """After a budgeted run's evaluation: ``last`` (with the plan), ``best`` when it is the final one,
    metrics.jsonl."""
    state = job.state
    state.history.append(rec)
    state.budget = job.budget.plan.to_json()
    if final:
        state.best_acc, state.best_epoch, state.best = rec["score"], len(state.history), best_record(rec, held)
    save(job, "last", rec["test_acc"])
    if final:
        save_best(job, rec)
    if job.dist.rank == 0:
        atomic_write_text(job.out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history),
                          overwrite=True)


def evaluate_epoch(job: Job, trained: EpochResult, t_epoch: float, partial: bool) -> tuple[dict, dict[str, dict]]:
    """The epoch's record: training totals, held-out loss and accuracy (with TTA and of the weight average
    where asked), the score best/ is chosen by, LR, times (one metrics.jsonl line); and the held-out summary
    (:func:`held_out_summary`) of each set of weights evaluated (``plain``, ``ema``)."""
    state, cfg, model = job.state, job.cfg, job.model
    tta = cfg.tta_views != "off"
    held = {"plain": held_out_summary(_held_out(job, model.net, cfg.precise_bn), job.data.num_classes)}
    plain = held["plain"]
    rec = {"epoch": state.epoch + 1, "step": state.step, "lr": current_lr(model.optimizer),
           "train_loss": trained.loss_sum / max(trained.seen, 1), "train_acc": trained.correct / max(trained.seen, 1),
           "test_loss": plain["loss"], "test_acc": plain["top1"], "test_top5": plain["top5"]}
    if tta:
        rec["test_acc_tta"] = plain["top1_tta"]
    if model.ema is not None:
        for a, b in zip(model.net.modules(), model.ema_net.modules(), strict=True):
            b.training = a.training  # the same BatchNorm layers recomputed as for the net (frozen ones kept)
        average = model.ema.copy_to(model.ema_net, model.net)
        held["ema"] = held_out_summary(_held_out(job, average, cfg.precise_bn or EMA_PRECISE_BN),
                                       job.data.num_classes)
        rec["ema_acc"] = held["ema"]["top1"]
        if tta:
            rec["ema_acc_tta"] = held["ema"]["top1_tta"]
    rec["score"], rec["weights"] = score(rec, tta)
    rec.update(epoch_time_s=round(time.perf_counter() - t_epoch, 3),
               train_images_per_s=round(trained.images / max(trained.train_s, 1e-9), 1),
               time_s=round(state.elapsed(), 3))
    if partial:
        rec["partial"] = True
    return rec, held


def held_out_summary(sums: dict, num_classes: int) -> dict:
    """A held-out evaluation's sums (:func:`~.loop.evaluate_tensors`) as fractions of its ``n`` images: loss,
    top-1, TTA top-1 and top-5 (``None`` where not measured), and the confusion matrix (rows: true class)."""
    n = int(sums["n"].item())
    d = max(n, 1)
    return {"n": n, "loss": sums["loss"].item() / d, "top1": sums["top1"].item() / d,
            "top1_tta": sums["top1_tta"].item() / d if "top1_tta" in sums else None,
            "top5": sums["top5"].item() / d if num_classes > 5 else None, "confusion": sums["confusion"].tolist()}


EMA_PRECISE_BN = 512  # training images the average's BatchNorm statistics are recomputed over without --precise-bn


def _held_out(job: Job, net: nn.Module, precise_bn: int) -> dict:
    """``net``'s hit counts on the held-out split (TTA's too), after PreciseBN over ``precise_bn`` images."""
    cfg, data, autocast = job.cfg, job.data, job.model.speed.autocast
    if precise_bn:
        recalibrate_bn(net, data.train.images, data.prep, precise_bn, job.plan.local_batch, cfg.seed, autocast)
    return evaluate_tensors(net, data.test.images, data.test.labels, data.prep, cfg.eval_batch_size,
                            data.num_classes, job.dist, autocast, confusion=True, tta=cfg.tta_views)


def score(rec: dict, tta: bool) -> tuple[float, str]:
    """(what best/ is chosen by, whose it is): the TTA top-1 when ``tta`` is on, else the plain top-1; of the
    weight average (``"ema"``) when it beats the trained weights (``"plain"``)."""
    key = "_tta" if tta else ""
    plain, ema = rec[f"test_acc{key}"], rec.get(f"ema_acc{key}")
    return (ema, "ema") if ema is not None and ema > plain else (plain, "plain")


def best_record(rec: dict, held: dict[str, dict]) -> dict:
    """What the run state keeps of best/'s evaluation: its accuracies, and (``eval``) the held-out summary of
    the weights it holds, confusion matrix included (what ``compare`` reports without evaluating again)."""
    keys = ("test_acc", "test_acc_tta", "ema_acc", "ema_acc_tta", "score", "weights")
    return {**{k: rec[k] for k in keys if k in rec}, "eval": held[rec["weights"]]}


def save(job: Job, which: str, top1: float | None = None, ema: bool = False) -> None:
    """Write ``DIR/which`` (``last`` or ``best``) from the run state as it is now (main process only); with
    ``ema`` the weights are the average's, as last evaluated (``meta["weights"] == "ema"``). The average itself
    goes into ``state.safetensors`` of every checkpoint (exact resume)."""
    if job.dist.rank == 0:
        model = job.model
        net, meta = (model.ema_net, {**job.meta, "weights": "ema"}) if ema else (model.net, job.meta)
        ck.save_run(job.out_dir, which, net, meta, job.state, job.cfg.to_dict(), job.extra_state, model.optimizer,
                    model.scaler, top1, model.ema.tensors() if model.ema is not None else None)


def save_best(job: Job, rec: dict) -> None:
    """``DIR/best`` from the evaluation ``rec``: the weights that scored (the trained ones or their average),
    with their plain top-1 in the meta."""
    ema = rec["weights"] == "ema"
    save(job, "best", rec["ema_acc" if ema else "test_acc"], ema=ema)


def save_epoch(job: Job, rec: dict, held: dict[str, dict], epoch_result: EpochResult, partial: bool) -> None:
    """After an epoch: ``last`` (mid-epoch when a step limit cut it), ``best`` if it improved, metrics.jsonl."""
    state = job.state
    acc = rec["test_acc"]
    improved = rec["score"] > state.best_acc
    if improved:
        state.best_acc, state.best_epoch, state.best = rec["score"], state.epoch + 1, best_record(rec, held)
    if partial:
        state.epoch_step, state.accum = epoch_result.steps_done, epoch_result.local
    else:
        state.history.append(rec)
        state.epoch, state.epoch_step, state.accum = state.epoch + 1, 0, None
    save(job, "last", acc)
    if improved:
        save_best(job, rec)
    if job.dist.rank == 0:
        atomic_write_text(job.out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history),
                          overwrite=True)


def _tensorboard(job: Job):  # -> SummaryWriter | None
    if job.dist.rank != 0:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # deferred: optional, and slow to import

        return SummaryWriter(str(job.out_dir / "tensorboard"))
    except Exception:  # tensorboard not installed: the PNG and metrics.jsonl carry the same numbers
        return None


def _say_start(job: Job) -> None:
    cfg, state = job.cfg, job.state
    world = f" x{job.dist.world} processes" if job.dist.world > 1 else ""
    precision = job.model.speed.precision
    autocast = "" if precision == "float32" else f" in {precision}"
    n_train, n_test = len(job.data.train), len(job.data.test)
    epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    if job.budget is not None:
        epochs = f"a budget of {job.budget.plan.budget_s:g} s (steps fitted to it)"
    plan = job.plan
    job.say(f"training {cfg.model or type(job.model.net).__name__} ({job.meta['params']:,} params) on "
            f"{cfg.dataset}: {n_train} train / {n_test} held-out images at {cfg.in_chans}x{cfg.img_size}x"
            f"{cfg.img_size}, {epochs} x {plan.steps_per_epoch} steps of {plan.batch}, {cfg.optimizer} lr "
            f"{cfg.lr:g} {cfg.schedule} ({plan.warmup} warm-up steps), device {job.model.speed.device}{autocast}"
            f"{world} -> {job.out_dir}")
    if state.epoch < cfg.epochs:
        job.say(LOG_HEADER)
    for h in state.history:
        job.say(log_line(h, cfg.epochs))


def finish(job: Job, stopped: str | None, last: dict | None) -> TrainResult:
    """The run's :class:`TrainResult` (``last``: the latest epoch's record, None when a finished run was
    resumed); rank 0 also writes ``training_curves.png`` and ``result.json``."""
    state, cfg = job.state, job.cfg
    if last is None:  # nothing left to do: report the stored run
        last = state.history[-1] if state.history else {"test_acc": state.best_acc, "test_top5": None}
    n_train, n_test, skipped = len(job.data.train), len(job.data.test), job.data.skipped
    total_s = state.elapsed()
    best = state.best or {"test_acc": max(state.best_acc, 0.0), "weights": "plain"}
    own = "ema_acc" if best.get("weights") == "ema" else "test_acc"
    result = TrainResult(
        best_acc=float(best[own]), final_acc=float(last["test_acc"]), best_epoch=state.best_epoch,
        history=state.history, train_time_s=round(total_s, 3), checkpoint=str(job.out_dir / "best"),
        train_images_per_s=round(state.train_images / max(state.train_s, 1e-9), 1),
        last_checkpoint=str(job.out_dir / "last"), out=str(job.out_dir), config=cfg.to_dict(),
        epochs_run=state.epoch, steps=state.step, stopped=stopped, params=job.meta["params"],
        img_size=job.meta["img_size"], final_top5=last.get("test_top5"), skipped_images=skipped,
        device=str(job.model.speed.device), precision=job.model.speed.precision,
        budget_s=(state.budget or {}).get("budget_s"),
        images_seen=state.train_images,
        epochs_seen=round(state.train_images / max(n_train, 1), 4), final_lr=last.get("lr"), tta=job.cfg.tta_views,
        scored_by="tta" if job.cfg.tta_views != "off" else "plain", best_weights=best.get("weights", "plain"),
        best_acc_tta=best.get(own + "_tta"), final_acc_tta=last.get("test_acc_tta"),
        final_ema_acc=last.get("ema_acc"), final_ema_acc_tta=last.get("ema_acc_tta"),
        extra={"world_size": job.dist.world, "train_images": n_train, "test_images": n_test},
        best_eval=best.get("eval"), net=job.model.net.eval(), sample=_held_out_sample(job))
    if job.dist.rank == 0:
        if state.history:
            from .plots import plot_curves  # deferred: matplotlib

            plot_curves(state.history, job.out_dir / "training_curves.png", title=f"{cfg.model} on {cfg.dataset}",
                        overwrite=True)
        atomic_write_text(job.out_dir / "result.json", json.dumps(result.to_dict(), indent=1), overwrite=True)
        tta = f", {job.cfg.tta_views} TTA {100 * result.best_acc_tta:.2f}%" if result.best_acc_tta is not None else ""
        avg = ", the weight average" if result.best_weights == "ema" else ""
        job.say(f"best held-out top-1 {100 * result.best_acc:.2f}%{tta} (epoch {state.best_epoch}{avg}), final "
                f"{100 * result.final_acc:.2f}%, {total_s:.1f} s, {result.train_images_per_s:.0f} img/s "
                f"-> {job.out_dir}")
    return result


def _held_out_sample(job: Job, n: int = 64) -> Tensor:
    """``n`` held-out images prepared as for evaluation (size, channels, normalisation; no augmentation, the
    default memory format): a batch to time the trained net on."""
    from ..data.batches import BatchPrep

    cfg, test = job.cfg, job.data.test
    prep = BatchPrep(test, cfg.img_size, cfg.in_chans, job.model.speed.device, pad=0, hflip=False,
                     channels_last=False, mean=cfg.mean, std=cfg.std)
    return prep(test.images[:n])


__all__ = ["EMA_PRECISE_BN", "TrainResult", "best_record", "due_for_save", "evaluate_epoch", "finish", "run", "save",
           "save_best", "save_epoch", "score", "train"]
