"""``cnnzoo compare``: train several architectures under one recipe on one data set and rank them.

The course's recurring exercise ("train LeNet, AlexNet, VGG, GoogLeNet, ResNet, MobileNet on the same data
and compare") as one call. Each model gets the same data, the same recipe (epochs, batch, optimizer, LR
schedule, seed) and optionally the same wall-clock budget, and is scored on the same held-out split. A model
that fails (input too small, out of memory, NaN loss, any error) gets a row with the reason; the others go
on. Per model, ``DIR/models/<name>/`` holds the training run (``best/``, ``last/`` checkpoints, metrics),
``eval.json``, ``confusion.png`` and ``compare_row.json``; ``--resume`` skips models whose row says
finished and continues interrupted runs from their ``last`` checkpoint.

Image size: every model trains at ``max(S, its minimum input)`` (and at most its maximum), where ``S`` is
``--img-size`` or the data set's size; the leaderboard marks models that were moved off ``S``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from ..errors import CnnzooError
from ..models.factory import create_model
from ..models.registry import list_models, model_info, resolve_name
from ..training.config import ALL_SMALL, PRESET_NAMES, PRESETS, CompareOptions, TrainConfig, demo_for, resolve
from ..training.rundir import LOCK_NAME, RunLock, check_out_arg, dataset_tag, ensure_writable
from . import report

_ROW_FILE = "compare_row.json"
COMPARE_MARKER = ".cnnzoo-compare.json"  # written into every comparison folder: what makes it cnnzoo's


@dataclass
class CompareResult:
    """What :func:`compare` returns: ranked rows (dicts, as in ``leaderboard.json``) and the files written."""

    out: Path
    rows: list[dict]
    info: dict
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def best(self) -> dict | None:
        """The winning row (highest held-out top-1), or ``None`` if no model finished."""
        return next((r for r in self.rows if r.get("rank") == 1), None)

    def leaderboard(self) -> str:
        return report.leaderboard_text(self.rows, self.info)


# --------------------------------------------------------------------------------------- choosing
def resolve_models(models: str | list[str] | None = None, preset: str | None = None) -> list[str]:
    """Canonical model names from ``"a,b,c"`` / a list, or from a preset (default: classic)."""
    if models is not None and preset:
        raise CnnzooError("give either --models or --preset, not both")
    if models is not None:  # "" is an empty list (an error below), not "no --models": a preset needs --preset
        names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
        if not names:
            raise CnnzooError("--models is empty: give names separated by commas, e.g. lenet5,resnet20_cifar")
    else:
        key = (preset or "classic").strip().lower().replace("_", "-")
        if key == ALL_SMALL:
            names = [n for n in list_models() if model_info(n).input_size[1] <= 32]
        elif key in PRESETS:
            names = list(PRESETS[key])
        else:
            raise CnnzooError(f"unknown preset {preset!r}: use one of {', '.join(PRESET_NAMES)}")
    return list(dict.fromkeys(resolve_name(n) for n in names))


def model_size(name: str, base: int) -> tuple[int, str]:
    """The size ``name`` trains at for a requested ``base`` size (``train``'s rule,
    :func:`~cnnzoo.training.resolved.fitted_size`), and a note when it had to move."""
    from ..training.resolved import fitted_size  # deferred: the resolved config imports torch and the data sets

    size = fitted_size(name, base)
    if size > base:
        return size, f"trained at {size}x{size}, its minimum input (asked {base})"
    if size < base:
        return size, f"trained at {size}x{size}, its maximum input (asked {base})"
    return size, ""


def _default_out(dataset: str, resume: bool = False) -> Path:
    """``runs/compare-<dataset>``, or ``-2``, ``-3`` ... if that already holds a comparison; with ``resume``
    the newest one that exists (so ``cnnzoo compare --resume`` continues the last run)."""
    base = Path("runs") / f"compare-{dataset_tag(dataset)}"
    out, last, i = base, base, 2
    while out.exists() and any(out.iterdir()):
        last, out, i = out, base.with_name(f"{base.name}-{i}"), i + 1
    return last if resume else out


# --------------------------------------------------------------------------------------- measuring
def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, CnnzooError):
        return msg or type(e).__name__
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg.lower():
        return f"out of memory ({msg[:160]})"
    return f"{type(e).__name__}: {msg[:200]}" if msg else type(e).__name__


def _static_facts(name: str, num_classes: int, in_chans: int, size: int) -> dict:
    """Params, MACs and receptive field at the size trained (computed on the meta device: no arithmetic)."""
    from ..analysis import count_macs, receptive_field  # deferred: the tracer is only needed here

    facts: dict = {"params": None, "macs": None, "rf": None}
    try:
        with torch.device("meta"):
            net = create_model(name, num_classes=num_classes, in_chans=in_chans)
    except Exception:  # a factory the meta device cannot run (e.g. an init that reads values): build it
        net = create_model(name, num_classes=num_classes, in_chans=in_chans)
    facts["params"] = sum(p.numel() for p in net.parameters())
    try:
        facts["macs"] = int(count_macs(net, (in_chans, size, size)))
    except Exception:  # e.g. the input is too small for the net: the training error will say why
        pass
    try:
        facts["rf"] = int(receptive_field(net, (in_chans, size, size)).rf)
    except Exception:  # a layer the RF tracer does not know: leave the cell empty rather than fail the row
        pass
    return facts


def inference_speed(model: torch.nn.Module, x: torch.Tensor, min_time_s: float = 1.0,
                    max_reps: int = 20) -> float:
    """Images/s of ``model`` (eval, BatchNorm folded, on the CPU activations fused into the convs, inference
    mode) on the batch ``x``: median of runs."""
    from ..deploy.fusion import fuse, fuse_activations

    net = fuse(model).to(x.device)
    if x.device.type == "cpu":
        net = fuse_activations(net, inplace=True)
    times: list[float] = []
    with torch.inference_mode():
        net(x)  # warm-up (allocations, kernel choice)
        t_start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - t_start < min_time_s and len(times) < max_reps):
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            t = time.perf_counter()
            net(x)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            times.append(time.perf_counter() - t)
    return x.shape[0] / max(statistics.median(times), 1e-9)


def _history(hist: list[dict]) -> list[dict]:
    keep = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "epoch_time_s", "time_s",
            "images_seen")
    return [{k: h.get(k) for k in keep} for h in hist]


def _empty_row(name: str, size: int, note: str, mdir: Path) -> dict:
    row: dict = dict.fromkeys(
        ("top1", "top1_tta", "top5", "final_top1", "params", "macs", "rf", "train_time_s", "train_images_per_s",
         "infer_images_per_s", "best_epoch", "stopped", "checkpoint", "confusion_png", "budget_s", "images_seen",
         "epochs_seen", "final_lr", "wall_s"))
    row.update(model=name, status="failed", reason="", img_size=size, note=note, epochs_run=0, history=[],
               run_dir=str(mdir), tta="off", scored_by="plain", weights="plain")
    return row


@dataclass
class CompareJob:
    """What every model of a comparison shares: the recipe, the options, the data's shape, the folder."""

    out: Path
    cfg: TrainConfig  # the recipe; each model trains with its own ``model`` and ``img_size`` set in
    opts: CompareOptions
    dev: torch.device
    num_classes: int
    in_chans: int
    signature: dict  # what a finished row must match for --resume to skip the model
    data: dict[int | None, tuple]  # both splits, loaded once: by size for a folder (decoded at it), else at None

    def splits(self, size: int) -> tuple:
        """Both splits for a model trained at ``size``: a folder is decoded at that size (once per size)."""
        if not self.cfg.dataset.startswith("folder:"):
            return self.data[None]
        if size not in self.data:
            from ..data import load_dataset

            self.data[size] = tuple(load_dataset(self.cfg.dataset, split, self.opts.data_dir, img_size=size)
                                    for split in ("train", "test"))
        return self.data[size]


# what a budgeted row spends after training, inside its budget: eval.json, confusion.png and the inference
# timing (0.25 s of batches after a warm-up batch)
AFTER_TRAINING_S = 2.0


def _run_one(name: str, size: int, note: str, job: CompareJob, fresh: bool = False) -> dict:
    """Train, evaluate and measure one model; returns its leaderboard row (failures become a row too).
    ``fresh``: start it again even under ``--resume`` (its finished run lost its checkpoint)."""
    from ..training import train  # deferred: training imports the data sets

    mdir = job.out / "models" / name
    row = _empty_row(name, size, note, mdir)
    t0, o = time.perf_counter(), job.opts
    try:
        row.update(_static_facts(name, job.num_classes, job.in_chans, size))
        budget = None  # the row's budget less what its measurements above took and what follows training
        if o.budget_minutes:
            budget = max(0.0, o.budget_minutes * 60 - (time.perf_counter() - t0) - AFTER_TRAINING_S)
        res = train(cfg=replace(job.cfg, model=name, img_size=size), data=job.splits(size), out=mdir,
                    resume=o.resume and not fresh, overwrite=fresh or not o.resume, time_budget_s=budget,
                    data_dir=o.data_dir, device=o.device, progress=o.progress, verbose=False)
        row.update(budget_s=res.budget_s, images_seen=res.images_seen, epochs_seen=res.epochs_seen,
                   final_lr=res.final_lr, precision=res.precision)
        row.update(train_time_s=round(res.train_time_s, 2), best_epoch=res.best_epoch,
                   train_images_per_s=round(res.train_images_per_s, 1), epochs_run=res.epochs_run,
                   stopped=res.stopped, final_top1=res.final_acc, history=_history(res.history),
                   params=res.params or row["params"], checkpoint=res.checkpoint)
        ev = _best_eval(res, job, mdir)
        row.update(top1=ev["top1"], top1_tta=ev["top1_tta"], tta=ev["tta"], scored_by=res.scored_by,
                   weights=res.best_weights, top5=ev["top5"], confusion_png=str(mdir / "confusion.png"))
        net = res.net.to(memory_format=torch.contiguous_format)
        row["infer_images_per_s"] = round(inference_speed(net, res.sample, 0.25 if o.budget_minutes else 1.0), 1)
        row["status"] = "ok"
    except Exception as e:  # too small an input, OOM, NaN loss (NonFiniteLossError), or a bug in one model:
        if o.raise_errors:  # it must not cost the other models' results
            raise
        row["reason"] = _one_line(e)
    row["wall_s"] = round(time.perf_counter() - t0, 2)  # training, evaluations, checkpoints, measurements
    if row["status"] != "ok":
        _failed_row_history(row, mdir, t0)
    row["config"] = job.signature
    mdir.mkdir(parents=True, exist_ok=True)
    report.write_atomic(mdir / _ROW_FILE, json.dumps(row, indent=1))
    return row


def _best_eval(res, job: CompareJob, mdir: Path) -> dict:
    """The held-out evaluation of the model's best/ as :func:`cnnzoo.evaluate` reports it, from the one the
    run made when it chose best/ (``eval.json`` and ``confusion.png`` written into ``mdir``); a run resumed
    from a checkpoint that holds none is evaluated from best/."""
    from ..training import evaluate  # first through the package: its ``evaluate`` stays the function
    from ..training.evaluate import eval_result, write_eval_outputs

    if res.best_eval is None:
        return evaluate(res.checkpoint, dataset=job.cfg.dataset, split="test", data_dir=job.opts.data_dir,
                        device=job.opts.device, out=mdir, overwrite=True, tta=job.cfg.tta)
    train_set, test_set = job.splits(res.img_size)
    result = eval_result(res.best_eval, model=res.config["model"], data=test_set, classes=list(train_set.classes),
                         checkpoint=res.checkpoint, tta=res.tta, weights=res.best_weights, img_size=res.img_size,
                         device=res.device)  # res.tta: the run's views, resolved once
    write_eval_outputs(result, mdir, overwrite=True)
    return result


def _failed_row_history(row: dict, mdir: Path, t0: float) -> None:
    """A failed model's time, and the epochs that did finish (for the curves plot)."""
    if row["train_time_s"] is None:
        row["train_time_s"] = round(time.perf_counter() - t0, 2)
    hist_file = mdir / "metrics.jsonl"
    if not row["history"] and hist_file.is_file():
        try:
            lines = hist_file.read_text().splitlines()
            row["history"] = _history([json.loads(s) for s in lines if s.strip()])
        except (OSError, ValueError):
            pass


def _finished_row(name: str, job: CompareJob) -> dict | None:
    """The stored row of a model that already finished with the same settings (for ``--resume``), its paths
    pointing into this folder (a copied folder's rows named the original's files); ``None`` when its checkpoint
    is gone, so that model is trained again."""
    from ..training.checkpoint import find_checkpoint

    mdir = job.out / "models" / name
    try:
        row = json.loads((mdir / _ROW_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or row.get("status") != "ok" \
            or row.get("config") != json.loads(json.dumps(job.signature)):
        return None
    try:
        best = find_checkpoint(mdir / "best")
    except CnnzooError:
        return None
    png = mdir / "confusion.png"
    return {**row, "run_dir": str(mdir), "checkpoint": str(best),
            "confusion_png": str(png) if png.is_file() else None}


# -------------------------------------------------------------------------------------------- main
def _check_out(out: Path, dataset: str, resume: bool) -> None:
    """Refuse to mix comparisons, and a folder holding files cnnzoo did not write (no marker, no leaderboard);
    prove the folder is writable and mark it as a comparison's before any training starts."""
    from ..utils.files import atomic_write_text

    board = out / "leaderboard.json"
    others = sorted(p.name for p in out.iterdir() if p.name not in (LOCK_NAME, COMPARE_MARKER)) \
        if out.is_dir() else []
    if others and not (out / COMPARE_MARKER).is_file() and not board.is_file():
        raise CnnzooError(f"{out} holds files cnnzoo did not write ({', '.join(others[:4])}"
                          f"{' ...' if len(others) > 4 else ''}): give an empty or new --out")
    if board.is_file() and not resume:
        raise CnnzooError(f"{out} already holds a comparison: pass --resume to continue it, or another --out")
    if board.is_file():
        try:
            old = json.loads(board.read_text()).get("info", {})
        except (OSError, ValueError):
            old = {}
        if old.get("dataset") not in (None, dataset):
            raise CnnzooError(f"{out} holds a comparison on {old['dataset']}, not {dataset}: "
                              f"pick another --out")
    ensure_writable(out / "models")
    atomic_write_text(out / COMPARE_MARKER, json.dumps({"kind": "compare", "dataset": dataset}), overwrite=True)


def _lost_checkpoint(mdir: Path) -> bool:
    """A model whose row says finished but whose ``best/`` is gone: it is trained again from the start."""
    try:
        finished = json.loads((mdir / _ROW_FILE).read_text()).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False
    return finished and not (mdir / "best").is_dir()


def _check_same_recipe(out: Path, job: CompareJob) -> None:
    """``--resume`` continues the stored comparison's recipe: a changed flag is refused in one line (it used
    to retrain nothing and relabel the leaderboard with the new value)."""
    from ..training.rundir import recipe_changes

    try:
        old = json.loads((out / "leaderboard.json").read_text())["rows"]
        stored = next(r["config"] for r in old if isinstance(r.get("config"), dict))
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return
    keys = [f.name for f in fields(TrainConfig) if f.name not in ("model", "epochs", "img_size") and f.name in stored]
    changed = recipe_changes(job.cfg, TrainConfig.from_dict(stored), keys)
    if changed:
        raise CnnzooError(f"{out} holds a comparison trained with {changed[0][1]}; --resume continues that "
                          f"recipe, so {changed[0][2]} would be ignored: drop it, or compare into another --out")


def compare(models: str | list[str] | None = None, preset: str | None = None, *, cfg: TrainConfig | None = None,
            **options) -> CompareResult:
    """Train each model under the same recipe and budget, evaluate on the same held-out split, write a report.

    ``models`` (``"a,b,c"`` or a list) or ``preset`` (``classic`` (default), ``mobile``, ``all-small``).
    ``options``: any :class:`~cnnzoo.training.config.TrainConfig` field but ``model`` (the recipe, as
    :func:`cnnzoo.train` takes it: unset ones from the data set's recipe, under the short
    :data:`~cnnzoo.training.config.DEMO` override where the data set has one unless ``demo=False``) and any
    :class:`~cnnzoo.training.config.CompareOptions` field: ``budget_minutes`` (the same wall-clock budget per
    model instead of epochs: each model's steps and LR schedule are fitted to it), ``out`` (default
    ``runs/compare-<dataset>``, a fresh folder per run), ``resume`` (skip models already finished in ``out``,
    continue interrupted ones),
    ``data_dir``, ``device``, ``progress``, ``verbose``, ``raise_errors`` (re-raise a model's failure instead
    of recording it). Writes ``leaderboard.md/.csv/.json``, ``accuracy_vs_macs.png``, ``curves.png``,
    per-model confusion matrices and ``report.html`` to ``out``.
    """
    t_start = time.perf_counter()
    names = resolve_models(models, preset)
    recipe, opts = _compare_options(cfg, options)
    out = check_out_arg(opts.out) or _default_out(recipe.cfg.dataset, opts.resume)
    with RunLock(out, what="compare"):  # one comparison per folder: a second one stops naming the first's pid
        _check_out(out, recipe.cfg.dataset, opts.resume)
        job, info = _setup(names, None if models else (preset or "classic"), recipe, opts, out)
        if opts.resume:
            _check_same_recipe(out, job)
        say = print if opts.verbose else (lambda *a, **k: None)
        epochs = f"{job.cfg.epochs} epoch{'s' if job.cfg.epochs != 1 else ''}"
        if opts.budget_minutes:
            epochs = f"a budget of {opts.budget_minutes:g} min (steps and LR schedule fitted to it)"
        say(f"comparing {len(names)} models on {job.cfg.dataset} ({info['train_images']} train / "
            f"{info['test_images']} held-out images, {job.num_classes} classes), {epochs} each"
            + (f", demo override of the recipe ({_kv(recipe.demo)}; --no-demo for the full recipe)" if recipe.demo
               else "") + f", device {job.dev} -> {out}")
        if opts.budget_minutes:  # one-off start-up costs (the plotting library) paid before any net's clock runs
            report._plt()
        rows = _run_all(names, info, job, say)
        info["total_time_s"] = round(time.perf_counter() - t_start, 1)
        files = _write_outputs(rows, info, out, final=True)
    return CompareResult(out=out, rows=report.ranked(rows), info=info, files=files)


@dataclass
class _Recipe:
    cfg: TrainConfig
    demo: dict  # the demo layer applied ({} when none)


def _kv(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def _compare_options(cfg: TrainConfig | None, options: dict) -> tuple[_Recipe, CompareOptions]:
    """The recipe (the train options over the demo layer over the data set's recipe) and compare's options."""
    from ..data import canonical_name  # deferred: the data package imports the data set readers

    cmp_names = {f.name for f in fields(CompareOptions)}
    explicit = {**(cfg.to_dict() if cfg is not None else {}), **{k: v for k, v in options.items()
                                                                if k not in cmp_names and v is not None}}
    if "model" in explicit and cfg is None:
        raise CnnzooError("compare takes models=/preset=, not model=")
    explicit.pop("model", None)
    explicit["dataset"] = canonical_name(explicit.get("dataset") or TrainConfig.dataset)
    opts = CompareOptions(**{k: v for k, v in options.items() if k in cmp_names and v is not None})
    if opts.budget_minutes is not None:
        opts.budget_minutes = CompareOptions.__dataclass_fields__["budget_minutes"].metadata["range"].check(
            "budget_minutes", opts.budget_minutes)
    if opts.budget_minutes and "schedule" not in explicit:
        explicit["schedule"] = "linear"  # as train --time-budget: decay to zero at the budget
    demo = demo_for(explicit["dataset"], explicit) if opts.demo and cfg is None else {}
    demo = {k: v for k, v in demo.items() if explicit.get(k) is None}
    return _Recipe(resolve(explicit, demo=bool(demo)), demo), opts


def _setup(names: list[str], preset: str | None, recipe: _Recipe, opts: CompareOptions,
           out: Path) -> tuple[CompareJob, dict]:
    """The shared :class:`CompareJob` and the ``info`` block of the leaderboard."""
    from ..data import load_dataset
    from ..training.distributed import resolve_device

    cfg = recipe.cfg
    folder_size = cfg.img_size if cfg.dataset.startswith("folder:") else None
    train_set = load_dataset(cfg.dataset, "train", opts.data_dir, img_size=folder_size)
    test_set = load_dataset(cfg.dataset, "test", opts.data_dir, img_size=folder_size)
    base = int(cfg.img_size) if cfg.img_size else train_set.img_size
    dev = resolve_device(opts.device)
    info = {
        "dataset": cfg.dataset, "models": names, "preset": preset,
        "img_size": base, "num_classes": train_set.num_classes, "in_chans": train_set.in_chans,
        "train_images": len(train_set), "test_images": len(test_set), "budget_minutes": opts.budget_minutes,
        "recipe": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "optimizer", "schedule",
                                                "warmup_epochs", "weight_decay", "label_smoothing", "seed")},
        "demo": recipe.demo or None,
        "device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "total_time_s": None,
    }
    signature = {**{k: v for k, v in cfg.to_dict().items() if k != "model"}, "budget_minutes": opts.budget_minutes,
                 "img_size": base}
    job = CompareJob(out=out, cfg=cfg, opts=opts, dev=dev, num_classes=train_set.num_classes,
                     in_chans=train_set.in_chans, signature=signature,
                     data={train_set.img_size if cfg.dataset.startswith("folder:") else None: (train_set, test_set)})
    return job, info


def _run_all(names: list[str], info: dict, job: CompareJob, say) -> list[dict]:
    """Each model in turn (skipping those already finished with ``resume``); tables written after each."""
    rows: list[dict] = []
    bar = None
    if job.opts.progress:
        from tqdm.auto import tqdm  # deferred: slow import, progress bars only

        bar = tqdm(total=len(names), desc="compare", unit="model", dynamic_ncols=True, file=sys.stderr)
    write = bar.write if bar is not None else say
    try:
        for name in names:
            size, note = model_size(name, info["img_size"])
            if bar is not None:
                bar.set_postfix_str(f"{name} @ {size}px")
            row = _finished_row(name, job) if job.opts.resume else None
            if row is not None:
                msg = f"{name:<20} finished earlier: top-1 {100 * row['top1']:.2f}% (--resume: skipped)"
            else:
                fresh = job.opts.resume and _lost_checkpoint(job.out / "models" / name)
                if fresh:
                    write(f"{name:<20} its best/ checkpoint is gone: training it again")
                row = _run_one(name, size, note, job, fresh=fresh)
                n = row["epochs_run"]
                msg = (f"{name:<20} top-1 {100 * row['top1']:6.2f}%  ({n} epoch{'' if n == 1 else 's'} at "
                       f"{size}px, {row['train_time_s']:.1f} s)" if row["status"] == "ok"
                       else f"{name:<20} FAILED: {row['reason']}")
            if job.opts.verbose:
                write(msg)
            rows.append(row)
            _write_outputs(rows, info, job.out, final=False)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return rows


def _write_outputs(rows: list[dict], info: dict, out: Path, final: bool) -> dict[str, Path]:
    """Tables after every model (so a long run shows progress on disk); plots and HTML at the end."""
    files = report.write_tables(rows, info, out)
    if not final:
        return files
    title = f"{info['dataset']}: held-out top-1 vs MACs (bubble area = parameters)"
    k = info.get("num_classes")
    files["accuracy_vs_macs"] = report.plot_accuracy_vs_macs(rows, out / "accuracy_vs_macs.png", title=title,
                                                             num_classes=k)
    files["curves"] = report.plot_curves(rows, out / "curves.png", num_classes=k,
                                         title=f"{info['dataset']}: held-out top-1 per epoch")
    confusions = {r["model"]: Path(r["confusion_png"]) for r in report.ranked(rows)
                  if r["status"] == "ok" and r.get("confusion_png") and Path(r["confusion_png"]).is_file()}
    files["html"] = report.write_html(rows, info, out, files, confusions)
    return files
