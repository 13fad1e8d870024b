"""Setting a run up from its resolved config: the data, the model and the plan of steps, each built once.

:func:`setup` calls the builders in the order that makes a run reproducible and resumable bit for bit: the
global seed; the data on the device (:func:`build_data` -> :class:`Data`); the model with published or file
weights, a resumed run's weights, the optimizer and a resumed run's optimizer, scaler and RNG states
(:func:`build_model` -> :class:`Model`); the batches and steps (:func:`plan_steps` -> :class:`Plan`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
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
from .distributed import DistContext, wrap_ddp
from .ema import WeightEma
from .init_schemes import apply_init
from .resolved import RunConfig, choose_img_size, resolve_run
from .state import RunState


@dataclass(frozen=True)
class Data:
    """Both splits as the run uses them (:func:`build_data`): images and labels on the device (a memory-mapped
    folder's images stay where they are; batches are gathered from it), and the batch preparation."""

    train: ImageSet
    test: ImageSet
    prep: BatchPrep  # crops, flips, normalisation and resizing; its pad and hflip are the run's
    skipped: int  # unreadable files skipped while loading, both splits

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


@dataclass
class Model:
    """The net and what trains it (:func:`build_model`)."""

    net: nn.Module
    ddp_net: nn.Module  # what the step calls: ``net``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    speed: SpeedPlan  # AMP, channels_last, fused optimizer and GEMM weight gradients on this device
    heads: list[str]  # the classifier's parameter names (fine-tuning: the new head)
    ema: WeightEma | None = None  # --ema's average of the weights
    ema_net: nn.Module | None = None  # a copy of the net that evaluates the average


@dataclass(frozen=True)
class Plan:
    """Batches and steps of a run of ``epochs`` (:func:`plan_steps`); a budgeted run's
    :class:`~.budget.BudgetController` re-fits the run's length to the clock."""

    batch: int  # the global batch (all processes)
    local_batch: int  # this process's share
    steps_per_epoch: int
    total_steps: int
    warmup: int  # warm-up steps


@dataclass
class Job:
    """A set-up run (:func:`setup`): the engine's loop works on it."""

    cfg: RunConfig
    opts: RunOptions
    dist: DistContext
    out_dir: Path
    say: Callable[..., None]
    data: Data
    model: Model
    plan: Plan
    state: RunState
    meta: dict  # what every checkpoint's model.safetensors carries (model, classes, size, mean, std ...)
    extra_state: dict  # what state.json carries besides the run state and the config (head, classes, world)
    budget: BudgetController | None = None  # a budgeted run's plan (the engine sets it)


# ------------------------------------------------------------------------------------------- setup
def setup(cfg: TrainConfig, opts: RunOptions, dist: DistContext, out_dir: Path,
          resume: tuple[Path | None, dict | None, dict[str, Tensor]], module: nn.Module | None,
          say: Callable[..., None], data: tuple[ImageSet, ImageSet] | None = None) -> Job:
    """Data, model, plan and run state of a run; ``resume``: (checkpoint folder, its state.json and state
    tensors) to continue from, or (None, None, {}); ``data``: both splits already loaded (at the size the
    run trains at, for a folder), else they are loaded here."""
    resume_from, stored, tensors = resume
    torch.manual_seed(cfg.seed)
    if data is None:
        train_set, test_set = load_data(cfg, opts, dist)
    else:
        check_loaded_memory(cfg, *data, dist)
        train_set, test_set = subsets(cfg, *data)
    report_data(train_set, test_set, out_dir, dist, say)
    if stored is not None and int(stored.get("num_classes", train_set.num_classes)) != train_set.num_classes:
        raise CnnzooError(f"{out_dir} was trained with {stored['num_classes']} classes but {cfg.dataset} now "
                          f"has {train_set.num_classes}: start a new run with another --out")
    size = choose_img_size(cfg, cfg.model or None, train_set.img_size)
    run = resolve_run(cfg, train_set, size, module, stored)
    speed = speed_plan(run.model or None, dist.device, run.amp, run.channels_last, run.gemm_wgrad,
                       warn=dist.rank == 0)
    model = build_model(run, module, train_set.num_classes, speed, dist, (resume_from, stored, tensors), say)
    ready = build_data(run, train_set, test_set, speed, dist.device)
    if module is None:
        check_forward(model.net, ready.prep, ready.train.images, run.model)
    state = RunState.from_json(stored) if stored is not None else RunState()
    return Job(cfg=run, opts=opts, dist=dist, out_dir=out_dir, say=say, data=ready, model=model,
               plan=plan_steps(run, len(train_set), dist.world), state=state, meta=checkpoint_meta(run, ready, model),
               extra_state={"head_params": model.heads, "num_classes": train_set.num_classes,
                            "in_chans": run.in_chans, "world_size": dist.world})


def checkpoint_meta(cfg: RunConfig, data: Data, model: Model) -> dict:
    """What every checkpoint's ``model.safetensors`` carries: all ``predict``, ``eval`` and ``export`` need."""
    return {"model": cfg.model or None, "model_kwargs": cfg.model_kwargs, "num_classes": data.num_classes,
            "in_chans": cfg.in_chans, "img_size": cfg.img_size, "mean": list(cfg.mean), "std": list(cfg.std),
            "classes": list(data.train.classes), "dataset": cfg.dataset, "resize": RESIZE_POLICY,
            "data_img_size": data.train.img_size, "data_in_chans": data.train.in_chans,
            "params": sum(p.numel() for p in model.net.parameters()), "hflip": cfg.hflip, "tta": cfg.tta}


# --------------------------------------------------------------------------------------------- data
def process_batch(batch: int, world: int) -> int:
    """One process's share of a global batch."""
    return max(1, batch // world)


def build_data(cfg: RunConfig, train_set: ImageSet, test_set: ImageSet, speed: SpeedPlan,
               dev: torch.device) -> Data:
    """Both splits on ``dev`` (one copy each) and their :class:`~cnnzoo.data.batches.BatchPrep`."""
    on_dev = [replace(ds, images=to_device(ds.images, dev, ds.mapped), labels=to_device(ds.labels, dev))
              for ds in (train_set, test_set)]
    prep = BatchPrep(train_set, cfg.img_size, cfg.in_chans, dev, cfg.pad, cfg.hflip, speed.channels_last,
                     cfg.mean, cfg.std)
    prep.build_table(on_dev[0].images)
    return Data(train=on_dev[0], test=on_dev[1], prep=prep, skipped=len(train_set.skipped + test_set.skipped))


def to_device(t: Tensor, dev: torch.device, mapped: bool = False) -> Tensor:
    """One copy onto ``dev`` (from pinned memory on CUDA); a memory-mapped set stays where it is (batches are
    gathered from it and sent over one at a time)."""
    if mapped:
        return t
    if dev.type == "cuda":
        t = t.pin_memory()
    return t.to(dev, non_blocking=True)


def plan_steps(cfg: TrainConfig, n_train: int, world: int) -> Plan:
    """Batches and steps of ``cfg.epochs`` over ``n_train`` images; the last partial batch of an epoch is
    dropped, so every step has the same size (and the same on every process)."""
    batch = min(cfg.batch_size, n_train)
    if batch % world:
        raise CnnzooError(f"batch size {batch} does not split over {world} processes: use a multiple of {world}")
    steps_per_epoch = n_train // batch
    return Plan(batch=batch, local_batch=process_batch(batch, world), steps_per_epoch=steps_per_epoch,
                total_steps=steps_per_epoch * cfg.epochs, warmup=warmup_steps(cfg, steps_per_epoch))


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


def load_data(cfg: TrainConfig, opts: RunOptions, dist: DistContext) -> tuple[ImageSet, ImageSet]:
    """Both splits at the size the run trains at (a folder is decoded at it), seeded subsets if asked;
    refuses what cannot fit in memory."""
    name, dev, progress = cfg.model or None, dist.device, opts.progress and dist.rank == 0
    local_batch = process_batch(cfg.batch_size, dist.world)
    if cfg.dataset.startswith("folder:"):  # one scan of the folder: its default size, image and class counts
        info = dataset_info(cfg.dataset, opts.data_dir, img_size=cfg.img_size or None)
        size = choose_img_size(cfg, name, info.img_size)
        check_memory(name, cfg.in_chans or info.in_chans, size, local_batch, dev, optimizer=cfg.optimizer)
        train_set = load_dataset(cfg.dataset, "train", opts.data_dir, img_size=size, progress=progress)
        test_set = load_dataset(cfg.dataset, "test", opts.data_dir, img_size=size, progress=progress)
    else:
        train_set = load_dataset(cfg.dataset, "train", opts.data_dir)
        test_set = load_dataset(cfg.dataset, "test", opts.data_dir)
        check_loaded_memory(cfg, train_set, test_set, dist)
    return subsets(cfg, train_set, test_set)


def check_loaded_memory(cfg: TrainConfig, train_set: ImageSet, test_set: ImageSet, dist: DistContext) -> None:
    """:func:`check_memory` for splits already loaded: the run, and the splits' copy on a GPU."""
    name, dev = cfg.model or None, dist.device
    size = choose_img_size(cfg, name, train_set.img_size)
    held = sum(ds.images.numel() for ds in (train_set, test_set) if not ds.mapped)
    check_memory(name, cfg.in_chans or train_set.in_chans, size, process_batch(cfg.batch_size, dist.world), dev,
                 data_bytes=0 if dev.type == "cpu" else held, optimizer=cfg.optimizer)


def subsets(cfg: TrainConfig, train_set: ImageSet, test_set: ImageSet) -> tuple[ImageSet, ImageSet]:
    """``--train-subset`` / ``--test-subset``: seeded random subsets in their original order (the sets as
    given when no subset is asked, or when it is not smaller)."""
    out = []
    for ds, n, seed in ((train_set, cfg.train_subset, cfg.seed), (test_set, cfg.test_subset, cfg.seed + 1)):
        if n and n < len(ds):
            g = torch.Generator().manual_seed(seed)
            ds = ds.subset(torch.randperm(len(ds), generator=g)[:n].sort().values)
        out.append(ds)
    return out[0], out[1]


# -------------------------------------------------------------------------------------------- model
def build_model(cfg: RunConfig, module: nn.Module | None, num_classes: int, speed: SpeedPlan, dist: DistContext,
                resume: tuple[Path | None, dict | None, dict[str, Tensor]], say: Callable[..., None]) -> Model:
    """The net on the device (a resumed run's weights loaded), its optimizer and GradScaler (a resumed run's
    states and RNG put back), the DDP wrapper and the weight average."""
    resume_from, stored, tensors = resume
    net, heads = (module, head_param_names(module)) if module is not None else \
        _registered_net(cfg, num_classes, stored, say)
    if module is not None:
        apply_init(net, cfg.init)
    if stored is not None:
        heads = stored.get("head_params", heads)
    net.to(dist.device)
    if speed.channels_last:
        net.to(memory_format=torch.channels_last)
    if resume_from is not None:
        load_weights(net, resume_from, cfg, dist.device)
    opt = make_optimizer(param_groups(net, cfg, set(heads)), cfg, speed)
    scaler = torch.amp.GradScaler("cuda") if speed.grad_scaler else None
    net, ddp_net = wrap_ddp(net, cfg.sync_bn, dist)
    if stored is not None:
        ck.restore_training(stored, tensors, opt, scaler, dist.device)
    ema, ema_net = make_ema(net, cfg, stored, tensors, resume_from)
    return Model(net=net, ddp_net=ddp_net, optimizer=opt, scaler=scaler, speed=speed, heads=heads, ema=ema,
                 ema_net=ema_net)


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


def _registered_net(cfg: RunConfig, num_classes: int, stored: dict | None,
                    say: Callable[..., None]) -> tuple[nn.Module, list[str]]:
    """The registered net and its head's parameter names: with published weights (``--pretrained imagenet``
    or a library's tag, through :mod:`cnnzoo.models.hub`) or a weights file and a new head; a resumed run's
    own weights are loaded later."""
    from ..models.factory import create_model
    from ..models.hub import load_weights as load_published

    net = create_model(cfg.model, num_classes=num_classes, in_chans=cfg.in_chans, **cfg.model_kwargs)
    apply_init(net, cfg.init)  # from scratch: before any pretrained weights are loaded
    heads = head_param_names(net)
    if cfg.weights_source is not None and stored is None:
        reset = load_published(net, cfg.model, cfg.pretrained)["reset"]
        own = dict(net.named_parameters())
        heads = [k for k in reset if k in own] or heads
        say(f"fine-tuning from {cfg.pretrained}: new head {', '.join(heads) or '-'}")
    return net, heads


def load_weights(net: nn.Module, ckpt: Path, cfg: TrainConfig, dev: torch.device) -> None:
    """A resumed run's weights, or a one-line error when the model as built now does not fit them."""
    weights = ck.read_weights(ckpt)
    try:
        net.load_state_dict({k: v.to(dev) for k, v in weights.items()})
    except RuntimeError as e:  # the model's code changed since, or another architecture
        first = next((s.strip() for s in str(e).splitlines()[1:] if s.strip()), str(e))
        raise CnnzooError(f"the checkpoint in {ckpt} does not fit {cfg.model or 'the model'} as built now "
                          f"({first[:120]}): start a new run with another --out") from e


def make_ema(net: nn.Module, cfg: TrainConfig, stored: dict | None, tensors: dict[str, Tensor],
             resume_from: Path | None) -> tuple[WeightEma | None, nn.Module | None]:
    """``--ema``'s average (a resumed run's, from its checkpoint) and the copy of the net that evaluates it."""
    if not cfg.ema:
        return None, None
    ema = WeightEma(net, cfg.ema_decay)
    if stored is not None and not ema.load(tensors):
        raise CnnzooError(f"{resume_from.parent}'s checkpoint holds no weight average for --ema: start a new run with "
                          f"another --out")
    return ema, copy.deepcopy(net)


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


def check_forward(net: nn.Module, prep: BatchPrep, images: Tensor, name: str) -> None:
    """A bad size fails here with the model's own message, before any epoch."""
    from ..models.registry import model_info

    model_info(name)
    with torch.no_grad():
        net.eval()
        net(prep(images[:2]))
