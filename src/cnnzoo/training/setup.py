"""Setting a run up: its folder, the data, the model, the optimizer and the run state, as one :class:`Job`.

:func:`setup` calls the steps in the order that makes a run reproducible and resumable bit for bit: the
global seed before the model is built, the weights, the optimizer, then the saved optimizer, scaler and RNG
states of a resumed run.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data import ImageSet, dataset_info, load_dataset
from ..data.batches import BatchPrep
from ..data.images import RESIZE_POLICY
from ..errors import CnnzooError
from ..speed.policy import SpeedPlan, speed_plan
from ..utils.files import atomic_write_text
from ..utils.memory import available_memory
from . import checkpoint as ck
from .budget import BudgetController
from .config import RunOptions, TrainConfig, warmup_steps
from .distributed import DistContext
from .ema import WeightEma
from .init_schemes import apply_init
from .rundir import LOCK_NAME, RunLock, check_out_arg, earlier_results, ensure_writable, plan_run_dir
from .state import RunState
from .tta import effective_tta


@dataclass
class Job:
    """Everything a run works with once set up (:func:`setup`); the loop's functions take it."""

    cfg: TrainConfig
    opts: RunOptions
    dist: DistContext
    out_dir: Path
    say: Callable[..., None]
    net: nn.Module  # the model
    model: nn.Module  # what the step calls: ``net`` or its DDP wrapper
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    plan: SpeedPlan
    prep: BatchPrep
    xtr: Tensor
    ytr: Tensor
    xte: Tensor
    yte: Tensor
    pad: int
    hflip: bool
    batch: int  # global batch
    local_batch: int  # this process's share
    steps_per_epoch: int
    total_steps: int
    warmup: int
    num_classes: int
    meta: dict  # what every checkpoint's model.safetensors carries (model, classes, size, mean, std ...)
    extra_state: dict  # what state.json carries besides the run state (head, classes, world size)
    state: RunState
    data_counts: tuple[int, int, int]  # train images, held-out images, skipped files
    budget: BudgetController | None = None  # a budgeted run's plan (engine.run_budgeted sets it)
    tta: str = "off"  # the test-time augmentation evaluations use (tta.effective_tta of --tta and the flips)
    ema: WeightEma | None = None  # --ema's average of the weights
    ema_net: nn.Module | None = None  # a copy of the net that evaluates the average

    @property
    def n_train(self) -> int:
        return self.xtr.shape[0]


# --------------------------------------------------------------------------------------- run folder
def default_out(cfg: TrainConfig) -> Path:
    """``runs/MODEL-DATASET``, or ``-2``, ``-3`` ... when that already holds a run."""
    ds = cfg.dataset
    if ds.startswith("folder:"):
        ds = Path(ds[len("folder:"):]).expanduser().resolve().name or "folder"
    base = Path("runs") / f"{cfg.model or 'model'}-{ds}"
    out, i = base, 2
    while ck.find_resume(out) is not None or earlier_results(out) or (out / LOCK_NAME).exists():
        out, i = base.with_name(f"{base.name}-{i}"), i + 1  # another run's folder, or one in use
    return out


def prepare_out(out: Path) -> None:
    """Create the run folder and prove it is writable before any training starts; clear stale temp folders."""
    ensure_writable(out)
    ck.clean_stale_tmp(out)


def open_run_dir(cfg: TrainConfig, opts: RunOptions, dist: DistContext,
                 say: Callable[[str], None] = lambda s: None) -> tuple[Path, Path | None, RunLock | None]:
    """The run folder (locked, made and proven writable), the checkpoint to resume from, if any, and the lock,
    which the caller releases when the run ends (rank 0 holds it; training/rundir.py).

    A second run on the same folder stops in one line naming the first's pid. A folder holding a run needs
    ``resume`` (continue) or ``overwrite`` (start again); ``resume`` with nothing to resume from starts a new
    run and says so, but never over an earlier run's best/ or metrics.jsonl (``plan_run_dir``)."""
    out_dir = check_out_arg(opts.out) or default_out(cfg)
    lock = RunLock(out_dir).acquire() if dist.rank == 0 else None  # before prepare_out cleans .tmp-* there
    try:
        if dist.rank == 0:
            prepare_out(out_dir)
        dist.barrier()
        plan = plan_run_dir(out_dir, opts.resume, opts.overwrite)
        dist.barrier()
        if dist.rank == 0:
            for name in plan.replace:
                p = out_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        dist.barrier()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if plan.note:
        say(plan.note)
    return out_dir, plan.resume_from, lock


def resumed_config(cfg: TrainConfig, explicit: dict, stored: dict, out_dir: Path) -> TrainConfig:
    """The stored run's config; the model, data set and weights asked for must match it; ``epochs`` may
    extend it."""
    old = TrainConfig.from_dict(stored.get("config", {}))
    for key in ("model", "dataset", "pretrained"):
        if explicit.get(key) and explicit[key] != getattr(old, key):
            raise CnnzooError(f"{out_dir} holds a run with {key}={getattr(old, key)!r}, not "
                              f"{explicit[key]!r}: drop --resume or pick another --out")
    if explicit.get("epochs") is not None:
        old.epochs = int(explicit["epochs"])  # a resumed run may be extended
    changed = recipe_changes(cfg, old, [k for k in explicit if k not in ("model", "dataset", "pretrained", "epochs")])
    if changed:  # a flag the resumed run would silently ignore (it continues its stored recipe)
        raise CnnzooError(f"{out_dir} holds a run trained with {changed[0][1]}; --resume continues that recipe, "
                          f"so {changed[0][2]} would be ignored: drop it, or start a new run (another --out, or "
                          f"--overwrite)")
    return old


def recipe_changes(new: TrainConfig, old: TrainConfig, keys) -> list[tuple[str, str, str]]:
    """``(field, old as flags, new as flags)`` for each of ``keys`` whose value differs between two recipes
    (compared as JSON, so a tuple and the list it was stored as are equal)."""
    import json

    def flag(k: str, v) -> str:
        return f"--{k.replace('_', '-')} {v}"

    out = []
    for k in keys:
        a, b = getattr(new, k, None), getattr(old, k, None)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append((k, flag(k, b), flag(k, a)))
    return out


# --------------------------------------------------------------------------------------------- data
def choose_img_size(cfg: TrainConfig, model_name: str | None, native: int) -> int:
    """``--img-size``, else the data's size moved into the model's accepted range [min_size, max_size]."""
    if cfg.img_size:
        return int(cfg.img_size)
    if not model_name:
        return native
    from ..models.registry import model_info  # deferred: the registry imports every model file

    info = model_info(model_name)
    size = max(native, info.min_size)
    return min(size, info.max_size) if info.max_size else size


def run_peak_bytes(model_name: str, in_chans: int, size: int, batch: int, optimizer: str = "sgd") -> int | None:
    """An estimate of a training run's peak memory beyond its data: weights, gradients and optimizer state
    (two moments for AdamW, one momentum buffer for SGD), and one batch's input and layer outputs kept for
    backward plus their gradients (``2 x`` the outputs, from :func:`cnnzoo.summary` on the meta device)."""
    from ..analysis import resolve_model, summary  # deferred: analysis pulls in the tracer and the registry

    try:
        s = summary(resolve_model(model_name, device="meta", in_chans=in_chans), (in_chans, size, size))
    except CnnzooError:  # e.g. a size below the net's minimum: the model's own check reports it later
        return None
    states = 2 if optimizer == "adamw" else 1
    return s.param_bytes * (2 + states) + s.buffer_bytes + batch * (2 * s.activation_bytes + s.input_bytes)


def check_memory(model_name: str | None, in_chans: int, size: int, batch: int, device: torch.device,
                 data_bytes: int = 0, optimizer: str = "sgd") -> None:
    """Refuse, before any decoding or training, a run whose estimated peak (:func:`run_peak_bytes`, plus
    ``data_bytes`` of data held in memory) exceeds the memory free on ``device``: it would otherwise die to the
    OOM killer or a CUDA out-of-memory error partway through. A decoded image folder is a memory map of its
    cache on disk, so it counts here only through its chunk buffers; the disk it needs is checked where it is
    decoded."""
    free = available_memory(device)
    if not free or not model_name:
        return
    gib = 1 << 30
    model = run_peak_bytes(model_name, in_chans, size, batch, optimizer)
    if model is None:
        return
    need = model + data_bytes
    if need > free:
        raise CnnzooError(f"--img-size {size} with --batch-size {batch}: {model_name} needs about "
                          f"{need / gib:.1f} GiB to train ({model / gib:.1f} GiB for its weights, optimizer state "
                          f"and one batch's activations), more than the {free / gib:.1f} GiB free on "
                          f"{device.type}: use a smaller --img-size or --batch-size")


def load_data(cfg: TrainConfig, opts: RunOptions, dist: DistContext) -> tuple[ImageSet, ImageSet, int]:
    """Both splits (seeded subsets if asked) and the size to train at; refuses what cannot fit in memory."""
    name, dev, progress = cfg.model or None, dist.device, opts.progress and dist.rank == 0
    local_batch = max(1, cfg.batch_size // dist.world)
    if cfg.dataset.startswith("folder:"):  # one scan of the folder: its default size, image and class counts
        info = dataset_info(cfg.dataset, opts.data_dir, img_size=cfg.img_size or None)
        size = choose_img_size(cfg, name, info.img_size)
        check_memory(name, cfg.in_chans or info.in_chans, size, local_batch, dev, optimizer=cfg.optimizer)
        train_set = load_dataset(cfg.dataset, "train", opts.data_dir, img_size=size, progress=progress)
        test_set = load_dataset(cfg.dataset, "test", opts.data_dir, img_size=size, progress=progress)
    else:
        train_set = load_dataset(cfg.dataset, "train", opts.data_dir)
        test_set = load_dataset(cfg.dataset, "test", opts.data_dir)
        size = choose_img_size(cfg, name, train_set.img_size)
        held = sum(ds.images.numel() for ds in (train_set, test_set) if not ds.mapped)
        check_memory(name, cfg.in_chans or train_set.in_chans, size, local_batch, dev,
                     data_bytes=0 if dev.type == "cpu" else held, optimizer=cfg.optimizer)
    for ds, n in ((train_set, cfg.train_subset), (test_set, cfg.test_subset)):
        if n and n < len(ds):
            g = torch.Generator().manual_seed(cfg.seed + (0 if ds is train_set else 1))
            sub = ds.subset(torch.randperm(len(ds), generator=g)[:n].sort().values)
            ds.images, ds.labels, ds.paths = sub.images, sub.labels, sub.paths
    return train_set, test_set, size


# -------------------------------------------------------------------------------------------- model
def first_conv_in_chans(sd: dict[str, Tensor], model_name: str, model_kwargs: dict) -> int | None:
    """Input channels the weights' first conv takes: found under the key of the registered net's first conv
    in module order (a safetensors file sorts its keys, so GoogLeNet's ``aux1.conv`` comes before ``conv1``);
    a file with other key names falls back to its first 4-D weight, and loading it then says what differs."""
    from ..models.factory import create_model
    from .ckpt_check import first_conv

    with torch.device("meta"):
        first = first_conv(create_model(model_name, **model_kwargs))
    w = sd.get(first[0]) if first else None
    if w is not None and w.dim() == 4:
        return int(w.shape[1]) * first[1]
    return next((int(v.shape[1]) for v in sd.values() if v.dim() == 4), None)


def module_in_chans(net: nn.Module) -> int | None:
    """Input channels of a net's first conv (None when a Linear comes first)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            return m.in_channels if isinstance(m, nn.Conv2d) else None
    return None


def head_param_names(net: nn.Module) -> list[str]:
    """The classifier's parameters: those of the last Linear (or, for all-conv nets like NiN, last Conv)."""
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            last = (name, m)
    if last is None:
        return []
    prefix = f"{last[0]}." if last[0] else ""
    return [prefix + n for n, _ in last[1].named_parameters()]


def make_model(cfg: TrainConfig, module: nn.Module | None, data: ImageSet, stored: dict | None,
               say: Callable[..., None]) -> tuple[nn.Module, int, list[str]]:
    """(model, in_chans, head parameter names): the registered net (with ``--pretrained`` weights and a new
    head), or the user's module; a resumed run keeps its stored channel count and head."""
    if module is not None:
        net = module
        apply_init(net, cfg.init)
        in_chans = cfg.in_chans or module_in_chans(net) or data.in_chans
        heads = head_param_names(net)
    else:
        net, in_chans, heads = _registered_model(cfg, data, stored, say)
    if stored is not None:
        heads = stored.get("head_params", heads)
    return net, in_chans, heads


def _registered_model(cfg: TrainConfig, data: ImageSet, stored: dict | None,
                      say: Callable[..., None]) -> tuple[nn.Module, int, list[str]]:
    """The registered net, with published weights (``--pretrained imagenet`` or a library's tag, through
    :mod:`cnnzoo.models.hub`) or a weights file, and a new head; a resumed run's own weights are loaded later."""
    from ..models.factory import create_model
    from ..models.hub import build_kwargs, parse_pretrained
    from ..models.hub import load_weights as load_published
    from ..models.pretrained import read_state_dict

    parsed = parse_pretrained(cfg.pretrained)
    tag = parsed is not None and parsed[0] == "tag"
    pre_sd = read_state_dict(parsed[1]) if parsed and not tag and stored is None else None
    cfg.model_kwargs = {**build_kwargs(cfg.model, cfg.pretrained), **cfg.model_kwargs}  # e.g. GoogLeNet's
    in_chans = cfg.in_chans or (3 if tag else None)
    if not in_chans and pre_sd:
        in_chans = first_conv_in_chans(pre_sd, cfg.model, cfg.model_kwargs)
    in_chans = in_chans or data.in_chans
    if stored is not None:
        in_chans = int(stored.get("in_chans", in_chans))
    net = create_model(cfg.model, num_classes=data.num_classes, in_chans=in_chans, **cfg.model_kwargs)
    apply_init(net, cfg.init)  # from scratch: before any pretrained weights are loaded
    heads = head_param_names(net)
    if parsed is not None and stored is None:
        reset = load_published(net, cfg.model, cfg.pretrained)["reset"]
        own = dict(net.named_parameters())
        heads = [k for k in reset if k in own] or heads
        say(f"fine-tuning from {cfg.pretrained}: new head {', '.join(heads) or '-'}")
    return net, in_chans, heads


def input_normalisation(cfg: TrainConfig, data: ImageSet) -> tuple[list[float], list[float]]:
    """Mean and std of the inputs: published weights' own (what they were trained with), else the training
    split's. Decided from the config alone, so a resumed run normalises as it began."""
    from ..models.hub import parse_pretrained, published_weights

    parsed = parse_pretrained(cfg.pretrained) if cfg.model else None
    if parsed is not None and parsed[0] == "tag":
        pw = published_weights(cfg.model, parsed[1])
        return list(pw.mean), list(pw.std)
    return list(data.mean), list(data.std)


def load_weights(net: nn.Module, ckpt: Path, cfg: TrainConfig, dev: torch.device) -> None:
    """A resumed run's weights, or a one-line error when the model as built now does not fit them."""
    weights = ck.read_weights(ckpt)
    try:
        net.load_state_dict({k: v.to(dev) for k, v in weights.items()})
    except RuntimeError as e:  # the model's code changed since, or another architecture
        first = next((s.strip() for s in str(e).splitlines()[1:] if s.strip()), str(e))
        raise CnnzooError(f"the checkpoint in {ckpt} does not fit {cfg.model or 'the model'} as built now "
                          f"({first[:120]}): start a new run with another --out") from e


# ---------------------------------------------------------------------------------------- optimizer
def param_groups(net: nn.Module, cfg: TrainConfig, head: set[str]) -> list[dict]:
    """Weight decay only on weights of dimension >= 2 (not BN, not biases); when fine-tuning, the backbone
    learns at ``lr * backbone_lr_scale`` or is frozen."""
    from .config import pretrained_value

    finetune = pretrained_value(cfg.pretrained) is not None
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in net.named_parameters():
        part = "head" if (not finetune or name in head) else "backbone"
        if part == "backbone" and cfg.freeze_backbone:
            p.requires_grad_(False)
            continue
        if not p.requires_grad:
            continue
        buckets.setdefault((part, p.dim() >= 2), []).append(p)
    groups = []
    for (part, decay), params in sorted(buckets.items()):
        lr = cfg.lr * (cfg.backbone_lr_scale if part == "backbone" else 1.0)
        groups.append({"params": params, "lr": lr, "base_lr": lr,
                       "weight_decay": cfg.weight_decay if decay else 0.0,
                       "name": f"{part}{'' if decay else '/no_decay'}"})
    if not groups:
        raise CnnzooError("no trainable parameters: --freeze-backbone froze everything (is the head found?)")
    return groups


def make_optimizer(groups: list[dict], cfg: TrainConfig, plan: SpeedPlan) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or AdamW, torch's fused kernels where the device has them."""
    fused = True if plan.fused_optimizer else None
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay,
                                 fused=fused)
    if plan.grad_scaler:  # fp16: fused SGD takes over the scaler's inf check and still moves momentum on skipped
        fused = None  # steps (reported for torch 2.11: github.com/LibreYOLO/libreyolo/pull/771); AdamW's honours it
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay, fused=fused)


def wrap_ddp(net: nn.Module, cfg: TrainConfig, dist: DistContext) -> tuple[nn.Module, nn.Module]:
    """(net, what the step calls): under DDP the DistributedDataParallel wrapper (SyncBatchNorm if asked)."""
    if dist.world == 1:
        return net, net
    cuda = dist.device.type == "cuda"
    if cfg.sync_bn:
        if not cuda:  # torch's SyncBatchNorm only runs on GPUs
            raise CnnzooError("--sync-bn needs CUDA devices (torch's SyncBatchNorm is GPU-only): drop it on CPU")
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net, nn.parallel.DistributedDataParallel(net, device_ids=[dist.device.index] if cuda else None)


def to_device(t: Tensor, dev: torch.device, mapped: bool = False) -> Tensor:
    """One copy onto ``dev`` (from pinned memory on CUDA); a memory-mapped set stays where it is (batches are
    gathered from it and sent over one at a time)."""
    if mapped:
        return t
    if dev.type == "cuda":
        t = t.pin_memory()
    return t.to(dev, non_blocking=True)


# ------------------------------------------------------------------------------------------- setup
def setup(cfg: TrainConfig, opts: RunOptions, dist: DistContext, out_dir: Path,
          resume: tuple[Path | None, dict | None, dict[str, Tensor]], module: nn.Module | None,
          say: Callable[..., None]) -> Job:
    """Data, model, optimizer and run state of a run; ``resume``: (checkpoint folder, its state.json and
    state tensors) to continue from, or (None, None, {})."""
    resume_from, stored, tensors = resume
    torch.manual_seed(cfg.seed)
    train_set, test_set, size = load_data(cfg, opts, dist)
    report_data(train_set, test_set, out_dir, dist, say)
    if stored is not None and int(stored.get("num_classes", train_set.num_classes)) != train_set.num_classes:
        raise CnnzooError(f"{out_dir} was trained with {stored['num_classes']} classes but {cfg.dataset} now "
                          f"has {train_set.num_classes}: start a new run with another --out")
    net, in_chans, heads = make_model(cfg, module, train_set, stored, say)
    cfg.in_chans = in_chans
    dev = dist.device
    plan = speed_plan(cfg.model or None, dev, cfg.amp, cfg.channels_last, cfg.gemm_wgrad, warn=dist.rank == 0)
    net.to(dev)
    if plan.channels_last:
        net.to(memory_format=torch.channels_last)
    if resume_from is not None:
        load_weights(net, resume_from, cfg, dev)
    opt = make_optimizer(param_groups(net, cfg, set(heads)), cfg, plan)
    scaler = torch.amp.GradScaler("cuda") if plan.grad_scaler else None
    net, model = wrap_ddp(net, cfg, dist)
    xtr, ytr = to_device(train_set.images, dev, train_set.mapped), to_device(train_set.labels, dev)
    xte, yte = to_device(test_set.images, dev, test_set.mapped), to_device(test_set.labels, dev)
    hflip = train_set.hflip if cfg.hflip is None else bool(cfg.hflip)
    pad = cfg.pad if cfg.pad is not None else max(0, train_set.img_size // 8)
    mean, std = input_normalisation(cfg, train_set)
    prep = BatchPrep(train_set, size, in_chans, dev, pad, hflip, plan.channels_last, mean, std)
    prep.build_table(xtr)
    if module is None:
        check_forward(net, prep, xtr, cfg.model)
    n = len(train_set)
    batch = min(cfg.batch_size, n)
    if batch % dist.world:
        raise CnnzooError(f"batch size {batch} does not split over {dist.world} processes: use a multiple of "
                          f"{dist.world}")
    spe = n // batch  # drop the last partial batch: every step has the same size (and the same on every rank)
    state = RunState()
    if stored is not None:
        state = RunState.from_json(stored)
        ck.restore_training(stored, tensors, opt, scaler, dev)
    ema, ema_net = make_ema(net, cfg, stored, tensors, out_dir)
    meta = {"model": cfg.model or None, "model_kwargs": cfg.model_kwargs, "num_classes": train_set.num_classes,
            "in_chans": in_chans, "img_size": size, "mean": mean, "std": std,
            "classes": list(train_set.classes), "dataset": cfg.dataset, "resize": RESIZE_POLICY,
            "data_img_size": train_set.img_size, "data_in_chans": train_set.in_chans,
            "params": sum(p.numel() for p in net.parameters()), "hflip": hflip, "tta": cfg.tta}
    extra = {"head_params": heads, "num_classes": train_set.num_classes, "in_chans": in_chans,
             "world_size": dist.world}
    return Job(cfg=cfg, opts=opts, dist=dist, out_dir=out_dir, say=say, net=net, model=model, opt=opt,
               scaler=scaler, plan=plan, prep=prep, xtr=xtr, ytr=ytr, xte=xte, yte=yte, pad=pad, hflip=hflip,
               batch=batch, local_batch=batch // dist.world, steps_per_epoch=spe, total_steps=spe * cfg.epochs,
               warmup=warmup_steps(cfg, spe), num_classes=train_set.num_classes, meta=meta, extra_state=extra,
               state=state, data_counts=(len(train_set), len(test_set), len(train_set.skipped + test_set.skipped)),
               tta=effective_tta(cfg.tta, hflip), ema=ema, ema_net=ema_net)


def make_ema(net: nn.Module, cfg: TrainConfig, stored: dict | None, tensors: dict[str, Tensor],
             out_dir: Path) -> tuple[WeightEma | None, nn.Module | None]:
    """``--ema``'s average (a resumed run's, from its checkpoint) and the copy of the net that evaluates it."""
    if not cfg.ema:
        return None, None
    ema = WeightEma(net, cfg.ema_decay)
    if stored is not None and not ema.load(tensors):
        raise CnnzooError(f"{out_dir}'s checkpoint holds no weight average for --ema: start a new run with "
                          f"another --out")
    return ema, copy.deepcopy(net)


def report_data(train_set: ImageSet, test_set: ImageSet, out_dir: Path, dist: DistContext,
                say: Callable[..., None]) -> None:
    """The data sets' own reports (skipped files ...), and ``skipped_images.txt`` when files were skipped."""
    for ds in (train_set, test_set):
        if ds.report():
            say(ds.report())
    skipped = train_set.skipped + test_set.skipped
    if skipped and dist.rank == 0:
        atomic_write_text(out_dir / "skipped_images.txt", "".join(f"{p}\t{why}\n" for p, why in skipped),
                          overwrite=True)


def check_forward(net: nn.Module, prep: BatchPrep, xtr: Tensor, name: str) -> None:
    """A bad size fails here with the model's own message, before any epoch."""
    from ..models.registry import model_info

    model_info(name)
    with torch.no_grad():
        net.eval()
        net(prep(xtr[:2]))
