"""The training loop: data on the device, batch augmentation as tensor ops, a straight-line epoch.

Read top to bottom: :func:`train` resolves the config, loads both splits as uint8 tensors onto the device,
builds the model and optimizer, then runs epochs. Each epoch draws its whole plan (order, crop offsets,
flips) from a generator seeded by ``(seed, epoch)`` on the CPU, so the same seed gives the same run on any
device, in one process or several, and a resumed run continues exactly (even mid-epoch). Metrics are
accumulated on the device and read once per epoch (and when the progress bar refreshes): no host sync
per step. Checkpoints are written by :mod:`cnnzoo.training.checkpoint` (atomic, safetensors + JSON).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conv_grad import small_map_grads, small_map_grads_default
from ..data import ImageSet, dataset_info, load_dataset
from ..data.augment import CropFlipTable, crop_flip, normalize
from ..data.images import RESIZE_POLICY
from ..errors import CnnzooError, CnnzooWarning
from . import checkpoint as ck
from .config import TrainConfig, build_config
from .distributed import DistContext, all_reduce_, broadcast_flag, setup_distributed


class NonFiniteLossError(CnnzooError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    stopped: str | None = None  # "time_budget" or "max_steps" when a limit ended the run early
    params: int = 0
    img_size: int = 0
    final_top5: float | None = None
    skipped_images: int = 0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------- schedules
def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up over ``warmup`` steps, then: cosine to 0; step (x0.1 at 50 % and 75 % of the run, as
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
    if schedule == "step":
        return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
    return 1.0


# ------------------------------------------------------------------------------------ model set-up
def _first_conv_in_chans(sd: dict[str, Tensor]) -> int | None:
    for v in sd.values():
        if v.dim() == 4:
            return int(v.shape[1])
    return None


def _module_in_chans(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            return m.in_channels if isinstance(m, nn.Conv2d) else None
    return None


def _head_param_names(net: nn.Module) -> list[str]:
    """The classifier's parameters: those of the last Linear (or, for all-conv nets like NiN, last Conv)."""
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            last = (name, m)
    if last is None:
        return []
    prefix = f"{last[0]}." if last[0] else ""
    return [prefix + n for n, _ in last[1].named_parameters()]


def _param_groups(net: nn.Module, cfg: TrainConfig, head: set[str]) -> list[dict]:
    """Weight decay only on weights of dimension >= 2 (not BN, not biases); when fine-tuning, the backbone
    learns at ``lr * backbone_lr_scale`` or is frozen."""
    finetune = bool(cfg.pretrained)
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


def fused_optimizer_ok(device: torch.device) -> bool:
    """Whether torch's fused SGD/AdamW kernels run on ``device`` (CPU and CUDA): one kernel per parameter for
    weight decay, momentum and the update, where the default runs several element-wise ops per parameter
    (BENCHMARKS.md: what it gains in a training step)."""
    return torch.device(device).type in ("cpu", "cuda")


def _make_optimizer(groups: list[dict], cfg: TrainConfig, device: torch.device,
                    grad_scaler: bool = False) -> torch.optim.Optimizer:
    fused = True if fused_optimizer_ok(device) else None
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay,
                                 fused=fused)
    if grad_scaler:  # fp16: fused SGD takes over the scaler's inf check and still moves momentum on skipped
        fused = None  # steps (reported for torch 2.11: github.com/LibreYOLO/libreyolo/pull/771); AdamW's honours it
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay, fused=fused)


def _choose_img_size(cfg: TrainConfig, model_name: str | None, native: int) -> int:
    """``--img-size``, else the data's size moved into the model's accepted range [min_size, max_size]."""
    if cfg.img_size:
        return int(cfg.img_size)
    if not model_name:
        return native
    from ..registry import model_info

    info = model_info(model_name)
    size = max(native, info.min_size)
    return min(size, info.max_size) if info.max_size else size


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device`` now: CUDA's free memory, else Linux's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(model_name: str | None, in_chans: int, size: int, batch: int, device: torch.device,
                 folder_images: int = 0) -> None:
    """Refuse, before any decoding or training, a run that cannot fit in memory: a folder decoded at
    ``size`` (uint8, every image of both splits) or one training batch's activations (the outputs of the
    net's layers for ``batch`` images at ``size``, from :func:`cnnzoo.summary` on the meta device; backward
    needs more, so this only stops the runs that surely fail, which would otherwise die to the OOM killer
    or a CUDA out-of-memory error partway through)."""
    free = available_memory(device)
    if not free:
        return
    gib = 1 << 30
    cache = folder_images * in_chans * size * size
    if cache > free:
        raise CnnzooError(f"--img-size {size}: the folder's {folder_images:,} images decoded at {size}x{size} take "
                          f"{cache / gib:.1f} GiB, more than the {free / gib:.1f} GiB free: use a smaller --img-size")
    if not model_name:
        return
    from ..analysis import summary
    from ..analysis._common import resolve_model

    try:
        s = summary(resolve_model(model_name, device="meta", in_chans=in_chans), (in_chans, size, size))
    except CnnzooError:  # e.g. a size below the net's minimum: the model's own check reports it later
        return
    need = batch * (s.activation_bytes + s.input_bytes)
    if need > free:
        raise CnnzooError(f"--img-size {size} with --batch-size {batch}: {model_name}'s layer outputs for one "
                          f"training batch take {need / gib:.1f} GiB, more than the {free / gib:.1f} GiB free on "
                          f"{device.type}: use a smaller --img-size or --batch-size")


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX or AVX512-BF16), where oneDNN's bf16
    convolutions beat float32 ones; elsewhere bf16 autocast runs but emulated, and is usually slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


EMULATED_BF16 = ("this CPU has no bf16 matrix units (Intel AMX or AVX512-BF16), so --amp bf16 runs emulated, "
                 "about 14x slower than float32 (ResNet-20 on an AVX2 EPYC): drop --amp to train in float32")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` mode on ``device`` (None: float32).

    ``auto`` keeps the CPU in float32 (bf16 changes the numbers, so it is asked for, not imposed) and uses
    bf16 on CUDA where supported, else fp16; ``bf16`` also works on the CPU, where on CPUs with AMX it
    trains a ResNet 2-3x faster (BENCHMARKS.md); ``fp16`` is CUDA's (with a GradScaler)."""
    cuda = device.type == "cuda"
    if mode == "off" or (mode == "auto" and not cuda):
        return None
    if mode == "fp16":
        if not cuda:
            raise CnnzooError("--amp fp16 needs a CUDA device: on the CPU use --amp bf16 (or off)")
        return torch.float16
    if mode == "bf16" and device.type not in ("cuda", "cpu"):
        raise CnnzooError(f"--amp bf16 runs on CUDA or the CPU, not {device.type}: drop --amp")
    if cuda and not torch.cuda.is_bf16_supported():
        if mode == "bf16":
            raise CnnzooError("this GPU has no bf16: use --amp fp16 (or auto)")
        return torch.float16
    return torch.bfloat16


def use_channels_last(name: str | None, device: torch.device, amp: torch.dtype | None) -> bool:
    """channels_last for training: on CUDA always; on the CPU in bf16 (oneDNN's bf16 kernels work in NHWC:
    ResNet-20 1.19x, ResNet-18 1.20x faster than contiguous here) and in float32 for the nets where it was
    measured to pay (:func:`cnnzoo.benchmarking.channels_last_default`)."""
    if device.type == "cuda" or (device.type == "cpu" and amp == torch.bfloat16):
        return True
    if device.type != "cpu":
        return False
    from ..benchmarking import channels_last_default

    return channels_last_default(name, "train", device)


def _freeze_bn_stats(net: nn.Module) -> None:
    """Frozen backbone: its BatchNorm layers keep their running statistics (eval mode)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.eval()


# ---------------------------------------------------------------------------------------- batches
TABLE_MAX_BYTES = 2 << 30  # a CropFlipTable up to 2 GiB (CIFAR-10/100: 384 MB, MNIST: 107 MB)


class BatchPrep:
    """uint8 batch -> augmented, normalised float batch at the model's size and channel count."""

    def __init__(self, data: ImageSet, img_size: int, in_chans: int, device: torch.device, pad: int,
                 hflip: bool, channels_last: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        c = data.in_chans
        if c != in_chans and not (c == 1 and in_chans == 3):
            raise CnnzooError(f"the model takes {in_chans}-channel images but {data.name} has {c} channels: "
                              f"train a model with in_chans={c} or use a {in_chans}-channel data set")
        self.expand = c == 1 and in_chans == 3  # grey data into an RGB net (e.g. ImageNet weights): repeat
        self.mean = torch.tensor(mean[:c], dtype=torch.float32, device=device)
        self.std = torch.tensor(std[:c], dtype=torch.float32, device=device)
        self.native, self.size, self.pad, self.hflip = data.img_size, img_size, pad, hflip
        self.channels_last = channels_last
        self.table: CropFlipTable | None = None
        self._table_of: Tensor | None = None

    def build_table(self, images: Tensor, max_bytes: int = TABLE_MAX_BYTES) -> bool:
        """Lay ``images`` out as a :class:`CropFlipTable` for :meth:`sample` if it takes at most ``max_bytes``
        (the small in-memory data sets; a large memory-mapped folder keeps the per-batch gather)."""
        if self.pad == 0 and not self.hflip:
            return False
        if CropFlipTable.nbytes_for(images, self.pad, self.hflip) > max_bytes:
            return False
        self.table, self._table_of = CropFlipTable(images, self.pad, self.hflip), images
        return True

    def sample(self, images: Tensor, idx: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
        """The training batch ``images[idx]``, cropped, flipped, normalised: from the table when one was built
        for ``images``, else index + :func:`crop_flip` (the same bytes either way)."""
        if self.table is not None and images is self._table_of:
            return self._finish(self.table(idx, dy, dx, flip if self.hflip else None))
        return self(images.index_select(0, idx), dy, dx, flip)

    def __call__(self, x: Tensor, dy: Tensor | None = None, dx: Tensor | None = None,
                 flip: Tensor | None = None) -> Tensor:
        if dy is not None and dx is not None:
            x = crop_flip(x, dy, dx, flip if self.hflip else None, self.pad)
        return self._finish(x)

    def _finish(self, x: Tensor) -> Tensor:
        x = normalize(x, self.mean, self.std)
        if self.expand:
            x = x.expand(-1, 3, -1, -1)
        if self.size != self.native:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=self.size < self.native)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def epoch_plan(seed: int, epoch: int, n: int, pad: int, hflip: bool,
               device: torch.device) -> tuple[Tensor, ...]:
    """The epoch's sample order, crop offsets and flips, drawn on the CPU from ``(seed, epoch)``."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return tuple(t.to(device, non_blocking=True) for t in (perm, dy, dx, flip))


def _logits(out) -> Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def _loss(out, y: Tensor, smoothing: float, aux_weight: float) -> Tensor:
    """Cross-entropy with label smoothing; GoogLeNet's auxiliary outputs (training mode) weighted 0.3."""
    if isinstance(out, tuple | list):
        loss = F.cross_entropy(out[0], y, label_smoothing=smoothing)
        for aux in out[1:]:
            if aux is not None:
                loss = loss + aux_weight * F.cross_entropy(aux, y, label_smoothing=smoothing)
        return loss
    return F.cross_entropy(out, y, label_smoothing=smoothing)


@torch.no_grad()
def evaluate_tensors(net: nn.Module, x: Tensor, y: Tensor, prep: BatchPrep, batch_size: int, num_classes: int,
                     dist: DistContext | None = None, autocast=contextlib.nullcontext,
                     confusion: bool = False) -> dict[str, Tensor]:
    """Loss sum, top-1/top-5 hit counts (and the confusion matrix) over ``x``, sharded across ranks."""
    rank, world = (dist.rank, dist.world) if dist else (0, 1)
    was_training = net.training
    net.eval()
    dev = x.device
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    top1 = torch.zeros((), dtype=torch.long, device=dev)
    top5 = torch.zeros((), dtype=torch.long, device=dev)
    cm = torch.zeros(num_classes * num_classes, dtype=torch.long, device=dev) if confusion else None
    idx = torch.arange(rank, x.shape[0], world, device=dev)
    k = min(5, num_classes)
    for i in range(0, idx.numel(), batch_size):
        b = idx[i:i + batch_size]
        yb = y[b]
        with autocast():
            logits = _logits(net(prep(x[b])))
        logits = logits.float()
        loss += F.cross_entropy(logits, yb, reduction="sum").double()
        pred = logits.topk(k, dim=1).indices
        top1 += (pred[:, 0] == yb).sum()
        top5 += (pred == yb[:, None]).any(dim=1).sum()
        if cm is not None:
            cm += torch.bincount(yb * num_classes + pred[:, 0], minlength=num_classes * num_classes)
    out = {"loss": loss, "top1": top1, "top5": top5, "n": torch.tensor(idx.numel(), device=dev)}
    if cm is not None:
        out["confusion"] = cm.view(num_classes, num_classes)
    if dist is not None and dist.world > 1:
        for v in out.values():
            all_reduce_(v)
    net.train(was_training)
    return out


# -------------------------------------------------------------------------------------- run folder
def _default_out(cfg: TrainConfig) -> Path:
    ds = cfg.dataset
    if ds.startswith("folder:"):
        ds = Path(ds[len("folder:"):]).expanduser().resolve().name or "folder"
    base = Path("runs") / f"{cfg.model or 'model'}-{ds}"
    out, i = base, 2
    while ck.find_resume(out) is not None:
        out, i = base.with_name(f"{base.name}-{i}"), i + 1
    return out


def _prepare_out(out: Path) -> None:
    """Create the run folder and prove it is writable before any training starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise CnnzooError(f"cannot write to output directory {str(out)!r} ({e.strerror or e}): "
                          f"pass a writable --out") from e
    ck.clean_stale_tmp(out)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- train
def train(
    model: str | nn.Module | None = None,
    dataset: str | None = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    schedule: str | None = None,
    warmup_epochs: float | None = None,
    weight_decay: float | None = None,
    label_smoothing: float | None = None,
    seed: int | None = None,
    img_size: int | None = None,
    pretrained: str | os.PathLike | None = None,
    freeze_backbone: bool | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    time_budget_s: float | None = None,
    max_steps: int | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    verbose: bool = True,
    save_every_s: float | None = 600.0,
    **options,
) -> TrainResult:
    """Train a zoo model (or any ``nn.Module``) on a named data set or ``folder:PATH``.

    Unset arguments come from the data set's recipe (:data:`cnnzoo.training.config.RECIPES`). Writes
    ``out/last`` and ``out/best`` checkpoints every epoch, ``metrics.jsonl``, ``training_curves.png`` and
    ``result.json``. ``resume=True`` continues the run in ``out`` exactly where it stopped (a fresh run if
    there is none). ``time_budget_s`` stops after the epoch that crosses the budget; ``max_steps`` after
    that many optimizer steps (mid-epoch; the checkpoint then resumes mid-epoch). Further keyword
    options are :class:`TrainConfig` fields (``momentum``, ``pad``, ``hflip``, ``sync_bn``, ``amp``,
    ``model_kwargs``, ``train_subset`` ...). Under ``torchrun`` it trains with DDP.
    """
    t0 = time.perf_counter()
    module = model if isinstance(model, nn.Module) else None
    unknown = set(options) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise CnnzooError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    explicit = dict(
        model=(getattr(module, "cnnzoo_name", None) or "") if module is not None else model, dataset=dataset,
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
        warmup_epochs=warmup_epochs, weight_decay=weight_decay, label_smoothing=label_smoothing, seed=seed,
        img_size=img_size, pretrained=str(pretrained) if pretrained else None,
        freeze_backbone=freeze_backbone, **options)
    if explicit.get("dataset"):
        from ..data import canonical_name

        explicit["dataset"] = canonical_name(explicit["dataset"])
    if explicit.get("model"):
        from ..registry import resolve_name

        explicit["model"] = resolve_name(explicit["model"])
    cfg = build_config(explicit)
    dist = setup_distributed(device)
    dev = dist.device
    is_main = dist.rank == 0
    say = print if (verbose and is_main) else (lambda *a, **k: None)

    # ---- run folder, resume
    out_dir = Path(out).expanduser() if out else _default_out(cfg)
    if is_main:
        _prepare_out(out_dir)
    dist.barrier()
    existing = ck.find_resume(out_dir)
    state: dict | None = None
    state_tensors: dict[str, Tensor] = {}
    if existing is not None and not resume:
        if not overwrite:
            raise CnnzooError(
                f"{out_dir} already holds a run: pass --resume to continue it, or another --out")
        dist.barrier()
        if is_main:
            for name in ("last", "last.old", "best", "best.old"):
                shutil.rmtree(out_dir / name, ignore_errors=True)
        dist.barrier()
        existing = None
    if existing is not None:
        state, state_tensors = ck.read_state(existing)
        stored = TrainConfig.from_dict(state.get("config", {}))
        for key in ("model", "dataset", "pretrained"):
            if explicit.get(key) and explicit[key] != getattr(stored, key):
                raise CnnzooError(f"{out_dir} holds a run with {key}={getattr(stored, key)!r}, not "
                                  f"{explicit[key]!r}: drop --resume or pick another --out")
        if epochs is not None:
            stored.epochs = int(epochs)  # a resumed run may be extended
        cfg = stored
        say(f"resuming {out_dir} from epoch {state['epoch']} step {state['step']}")

    torch.manual_seed(cfg.seed)

    # ---- data
    model_name = cfg.model or None
    is_folder = cfg.dataset.startswith("folder:")
    local_batch = max(1, cfg.batch_size // dist.world)
    if is_folder:  # one scan of the folder: its default size (unless --img-size), image and class counts
        info = dataset_info(cfg.dataset, data_dir, img_size=cfg.img_size or None)
        size = _choose_img_size(cfg, model_name, info.img_size)
        check_memory(model_name, cfg.in_chans or info.in_chans, size, local_batch, dev,
                     folder_images=info.train_size + info.test_size)
        train_set = load_dataset(cfg.dataset, "train", data_dir, img_size=size, progress=progress and is_main)
        test_set = load_dataset(cfg.dataset, "test", data_dir, img_size=size, progress=progress and is_main)
    else:
        train_set = load_dataset(cfg.dataset, "train", data_dir)
        test_set = load_dataset(cfg.dataset, "test", data_dir)
        size = _choose_img_size(cfg, model_name, train_set.img_size)
        check_memory(model_name, cfg.in_chans or train_set.in_chans, size, local_batch, dev)
    for ds, n in ((train_set, cfg.train_subset), (test_set, cfg.test_subset)):
        if n and n < len(ds):
            g = torch.Generator().manual_seed(cfg.seed + (0 if ds is train_set else 1))
            sub = ds.subset(torch.randperm(len(ds), generator=g)[:n].sort().values)
            ds.images, ds.labels, ds.paths = sub.images, sub.labels, sub.paths
    skipped = train_set.skipped + test_set.skipped
    for ds in (train_set, test_set):
        if ds.report():
            say(ds.report())
    if skipped and is_main:
        _write_text_atomic(out_dir / "skipped_images.txt", "".join(f"{p}\t{why}\n" for p, why in skipped))
    num_classes = train_set.num_classes
    if state is not None and int(state.get("num_classes", num_classes)) != num_classes:
        raise CnnzooError(f"{out_dir} was trained with {state['num_classes']} classes but {cfg.dataset} now "
                          f"has {num_classes}: start a new run with another --out")

    # ---- model
    head_names: list[str]
    if module is None:
        pre_sd = None
        if cfg.pretrained and state is None:
            from ..pretrained import read_state_dict

            pre_sd = read_state_dict(cfg.pretrained)
        in_chans = cfg.in_chans or (_first_conv_in_chans(pre_sd) if pre_sd else None) or train_set.in_chans
        if state is not None:
            in_chans = int(state.get("in_chans", in_chans))
        from ..registry import create_model

        net = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **cfg.model_kwargs)
        head_names = _head_param_names(net)
        if pre_sd is not None:
            from ..pretrained import load_pretrained

            reset = load_pretrained(net, cfg.pretrained)["reset"]
            own_params = dict(net.named_parameters())
            head_names = [k for k in reset if k in own_params] or head_names
            say(f"fine-tuning from {cfg.pretrained}: new head {', '.join(head_names) or '-'}")
    else:
        net = module
        in_chans = cfg.in_chans or _module_in_chans(net) or train_set.in_chans
        head_names = _head_param_names(net)
    if state is not None:
        head_names = state.get("head_params", head_names)
    cfg.in_chans = in_chans

    use_cuda = dev.type == "cuda"
    amp_dt = amp_dtype(cfg.amp, dev)
    if amp_dt == torch.bfloat16 and dev.type == "cpu" and is_main and not cpu_has_bf16_matmul():
        warnings.warn(EMULATED_BF16, CnnzooWarning, stacklevel=2)
    channels_last = cfg.channels_last and use_channels_last(cfg.model or None, dev, amp_dt)
    gemm_wgrad = cfg.gemm_wgrad and amp_dt is None and small_map_grads_default(dev)
    net.to(dev)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if state is not None:
        weights = ck.read_weights(existing)
        try:
            net.load_state_dict({k: v.to(dev) for k, v in weights.items()})
        except RuntimeError as e:  # the model's code changed since, or another architecture
            first = next((s.strip() for s in str(e).splitlines()[1:] if s.strip()), str(e))
            raise CnnzooError(f"the checkpoint in {existing} does not fit {cfg.model or 'the model'} as built now "
                              f"({first[:120]}): start a new run with another --out") from e
    groups = _param_groups(net, cfg, set(head_names))
    opt = _make_optimizer(groups, cfg, dev, grad_scaler=amp_dt == torch.float16)
    scaler = torch.amp.GradScaler("cuda") if amp_dt == torch.float16 else None

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dt) if amp_dt is not None else contextlib.nullcontext()

    ddp = net
    if dist.world > 1:
        if cfg.sync_bn:
            if not use_cuda:  # torch's SyncBatchNorm only runs on GPUs
                raise CnnzooError(
                    "--sync-bn needs CUDA devices (torch's SyncBatchNorm is GPU-only): drop it on CPU")
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        ddp = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if use_cuda else None)

    # ---- data onto the device, once
    def to_dev(t: Tensor) -> Tensor:
        if use_cuda:
            t = t.pin_memory()
        return t.to(dev, non_blocking=True)

    xtr, ytr = to_dev(train_set.images), to_dev(train_set.labels)
    xte, yte = to_dev(test_set.images), to_dev(test_set.labels)
    hflip = train_set.hflip if cfg.hflip is None else bool(cfg.hflip)
    pad = cfg.pad if cfg.pad is not None else max(0, train_set.img_size // 8)
    mean, std = train_set.mean, train_set.std
    prep = BatchPrep(train_set, size, in_chans, dev, pad, hflip, channels_last, mean, std)
    prep.build_table(xtr)
    if module is None:
        from ..registry import model_info

        model_info(cfg.model)  # a bad size fails here with the model's own message, before any epoch
        with torch.no_grad():
            net.eval()
            net(prep(xtr[:2]))

    n = len(train_set)
    batch = min(cfg.batch_size, n)
    if batch % dist.world:
        raise CnnzooError(f"batch size {batch} does not split over {dist.world} processes: use a multiple of "
                          f"{dist.world}")
    local_b = batch // dist.world
    spe = n // batch  # drop the last partial batch: every step has the same size (and the same on every rank)
    total_steps = spe * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * spe)) if cfg.schedule != "onecycle" or cfg.warmup_epochs else 0
    warmup = min(warmup, max(0, total_steps - 1))

    # ---- restore the training state
    start_epoch, start_i, step = 0, 0, 0
    history: list[dict] = []
    best_acc, best_epoch, elapsed_before, images_before, train_s_before = -1.0, 0, 0.0, 0, 0.0
    accum = None
    if state is not None:
        ck.unflatten_optimizer(opt, state["optimizer"], state_tensors)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if "rng.cpu" in state_tensors:
            torch.set_rng_state(state_tensors["rng.cpu"])
        if use_cuda and "rng.cuda" in state_tensors:
            torch.cuda.set_rng_state(state_tensors["rng.cuda"], dev)
        start_epoch, start_i, step = int(state["epoch"]), int(state.get("epoch_step", 0)), int(state["step"])
        history = list(state.get("history", []))
        best_acc, best_epoch = float(state.get("best_acc", -1.0)), int(state.get("best_epoch", 0))
        elapsed_before = float(state.get("elapsed_s", 0.0))
        images_before, train_s_before = int(state.get("train_images", 0)), float(state.get("train_s", 0.0))
        accum = state.get("accum")

    meta = {
        "model": cfg.model or None, "model_kwargs": cfg.model_kwargs, "num_classes": num_classes,
        "in_chans": in_chans, "img_size": size, "mean": list(mean), "std": list(std),
        "classes": list(train_set.classes), "dataset": cfg.dataset, "resize": RESIZE_POLICY,
        "data_img_size": train_set.img_size, "data_in_chans": train_set.in_chans,
        "params": sum(p.numel() for p in net.parameters()),
    }

    def save(which: str, epoch_done: int, epoch_step: int, acc: float | None,
             accum_state: dict | None) -> None:
        if not is_main:
            return
        opt_js, opt_t = ck.flatten_optimizer(opt)
        tensors = {**opt_t, "rng.cpu": torch.get_rng_state()}
        if use_cuda:
            tensors["rng.cuda"] = torch.cuda.get_rng_state(dev)
        st = {"epoch": epoch_done, "epoch_step": epoch_step, "step": step, "best_acc": best_acc,
              "best_epoch": best_epoch, "history": history, "config": cfg.to_dict(),
              "head_params": head_names, "num_classes": num_classes, "in_chans": in_chans,
              "world_size": dist.world, "optimizer": opt_js,
              "scaler": scaler.state_dict() if scaler is not None else None, "accum": accum_state,
              "elapsed_s": elapsed_before + (time.perf_counter() - t0),
              "train_images": images_before + images_run, "train_s": train_s_before + train_s_run}
        ck_meta = {**meta, "epoch": epoch_done, "epoch_step": epoch_step, "step": step, "top1": acc}
        ck.write_checkpoint(out_dir, which, net.state_dict(), ck_meta, st, tensors)

    writer = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard not installed: the PNG and metrics.jsonl carry the same numbers
            writer = None

    say(f"training {cfg.model or type(net).__name__} ({meta['params']:,} params) on {cfg.dataset}: "
        f"{n} train / {len(test_set)} held-out images at {in_chans}x{size}x{size}, {cfg.epochs} epochs x "
        f"{spe} steps of {batch}, {cfg.optimizer} lr {cfg.lr:g} {cfg.schedule}, device {dev}"
        + (f" x{dist.world} processes" if dist.world > 1 else "") + f" -> {out_dir}")
    header = (f"{'epoch':>7}  {'train_loss':>10}  {'train_acc':>9}  {'test_loss':>9}  {'test_acc':>8}  "
              f"{'lr':>9}  {'time_s':>7}  {'img/s':>7}")
    if start_epoch < cfg.epochs:
        say(header)
    for h in history:
        say(_log_line(h, cfg.epochs))

    images_run, train_s_run = 0, 0.0
    stopped: str | None = None
    last_save = time.perf_counter()
    epoch = start_epoch
    bar = None
    convs = contextlib.ExitStack()  # our nn.Conv2d layers as SmallMapConv2d while training, plain after
    if gemm_wgrad:
        convs.enter_context(small_map_grads(net))
    try:
        while epoch < cfg.epochs and stopped is None:
            perm, dy, dx, flip = epoch_plan(cfg.seed, epoch, n, pad, hflip, dev)
            ddp.train()
            if cfg.freeze_backbone:
                _freeze_bn_stats(net)
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.long, device=dev)
            seen = 0
            bad_step = torch.full((), -1, dtype=torch.long, device=dev)
            first = start_i if epoch == start_epoch else 0
            if first and accum:
                loss_sum += float(accum["loss_sum"])
                correct += int(accum["correct"])
                seen = int(accum["seen"])
            if progress and is_main:
                from tqdm.auto import tqdm

                bar = tqdm(total=spe, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                           leave=False, dynamic_ncols=True)
            t_epoch = t_whole = time.perf_counter()  # t_epoch: start of the current training segment
            seen_at_start = seen
            refresh = max(1, spe // 25)
            i = first
            for i in range(first, spe):
                f = lr_factor(step, total_steps, warmup, cfg.schedule)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * f
                s = slice(i * batch + dist.rank * local_b, i * batch + (dist.rank + 1) * local_b)
                idx = perm[s]
                # index_select, not x[idx]: the same copy, ~5x faster on the CPU (no advanced-indexing machinery)
                xb, yb = prep.sample(xtr, idx, dy[s], dx[s], flip[s]), ytr.index_select(0, idx)
                with autocast():
                    out = ddp(xb)
                    loss = _loss(out, yb, cfg.label_smoothing, cfg.aux_weight)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                step += 1
                with torch.no_grad():
                    ld = loss.detach()
                    loss_sum += ld.double() * yb.shape[0]
                    correct += (_logits(out).detach().argmax(1) == yb).sum()
                    bad_step = torch.where((bad_step < 0) & ~torch.isfinite(ld), step, bad_step)
                seen += yb.shape[0]
                if bar is not None and ((i + 1) % refresh == 0 or i + 1 == spe):
                    dt = max(time.perf_counter() - t_epoch, 1e-9)
                    bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.4f}",
                                    acc=f"{correct.item() / max(seen, 1):.3f}",
                                    img_s=f"{(seen - seen_at_start) * dist.world / dt:.0f}", refresh=False)
                    bar.update((i + 1) - bar.n)
                    if dist.world == 1:
                        _check_finite(bad_step, out_dir, epoch, cfg)
                if max_steps is not None and step >= max_steps:
                    stopped = "max_steps"
                    break
                if (save_every_s and dist.world == 1 and i + 1 < spe
                        and time.perf_counter() - last_save > save_every_s):
                    _check_finite(bad_step, out_dir, epoch, cfg)
                    train_s_run += time.perf_counter() - t_epoch
                    images_run += seen - seen_at_start
                    save("last", epoch, i + 1, None, {"loss_sum": loss_sum.item(), "correct": correct.item(),
                                                      "seen": seen})
                    t_epoch, seen_at_start, last_save = time.perf_counter(), seen, time.perf_counter()
            if bar is not None:
                bar.close()
                bar = None
            if dist.world > 1:
                all_reduce_(bad_step, op="max")
            _check_finite(bad_step, out_dir, epoch, cfg)
            if use_cuda:
                torch.cuda.synchronize(dev)
            epoch_train_s = time.perf_counter() - t_epoch
            train_s_run += epoch_train_s
            images_run += (seen - seen_at_start) * dist.world
            partial = stopped == "max_steps" and i + 1 < spe
            tl, tc, ts = loss_sum.clone(), correct.clone(), torch.tensor(seen, device=dev)
            if dist.world > 1:
                for v in (tl, tc, ts):
                    all_reduce_(v)
            ev = evaluate_tensors(net, xte, yte, prep, cfg.eval_batch_size, num_classes, dist, autocast)
            n_test = max(int(ev["n"].item()), 1)
            acc = ev["top1"].item() / n_test
            lr_now = cfg.lr * lr_factor(max(step - 1, 0), total_steps, warmup, cfg.schedule)
            rec = {"epoch": epoch + 1, "step": step, "lr": lr_now,
                   "train_loss": tl.item() / max(ts.item(), 1), "train_acc": tc.item() / max(ts.item(), 1),
                   "test_loss": ev["loss"].item() / n_test, "test_acc": acc,
                   "test_top5": ev["top5"].item() / n_test if num_classes > 5 else None,
                   "epoch_time_s": round(time.perf_counter() - t_whole, 3),
                   "train_images_per_s": round((seen - seen_at_start) * dist.world / max(epoch_train_s, 1e-9),
                                               1),
                   "time_s": round(elapsed_before + time.perf_counter() - t0, 3)}
            if partial:
                rec["partial"] = True
            improved = acc > best_acc
            if improved:
                best_acc, best_epoch = acc, epoch + 1
            if not partial:
                history.append(rec)
                save("last", epoch + 1, 0, acc, None)
            else:
                save("last", epoch, i + 1, acc, {"loss_sum": loss_sum.item(), "correct": correct.item(),
                                                 "seen": seen})
            if improved:
                save("best", epoch + 1 if not partial else epoch, 0 if not partial else i + 1, acc, None)
            last_save = time.perf_counter()
            if is_main:
                _write_text_atomic(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
                if writer is not None:
                    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                        writer.add_scalar(k, rec[k], epoch + 1)
            say(_log_line(rec, cfg.epochs))
            last_rec = rec
            epoch += 1
            if time_budget_s is not None and stopped is None:
                over = elapsed_before + time.perf_counter() - t0 >= time_budget_s
                if broadcast_flag(over, dist) and epoch < cfg.epochs:
                    stopped = "time_budget"
                    say(f"time budget of {time_budget_s:g} s reached after epoch {epoch}")
    finally:
        convs.close()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    if start_epoch >= cfg.epochs and state is not None:  # nothing left to do: report the stored run
        last_rec = history[-1] if history else {"test_acc": best_acc, "test_top5": None}
    total_s = elapsed_before + time.perf_counter() - t0
    all_images, all_train_s = images_before + images_run, train_s_before + train_s_run
    result = TrainResult(
        best_acc=max(best_acc, 0.0), final_acc=float(last_rec["test_acc"]), best_epoch=best_epoch,
        history=history,
        train_time_s=round(total_s, 3), train_images_per_s=round(all_images / max(all_train_s, 1e-9), 1),
        checkpoint=str(out_dir / "best"), last_checkpoint=str(out_dir / "last"), out=str(out_dir),
        config=cfg.to_dict(), epochs_run=len(history), steps=step, stopped=stopped, params=meta["params"],
        img_size=size, final_top5=last_rec.get("test_top5"), skipped_images=len(skipped), device=str(dev),
        extra={"world_size": dist.world, "train_images": len(train_set), "test_images": len(test_set)})
    if is_main:
        if history:
            from .plots import plot_curves

            plot_curves(history, out_dir / "training_curves.png", title=f"{cfg.model} on {cfg.dataset}")
        _write_text_atomic(out_dir / "result.json", json.dumps(result.to_dict(), indent=1))
        say(f"best held-out top-1 {100 * result.best_acc:.2f}% (epoch {best_epoch}), final "
            f"{100 * result.final_acc:.2f}%, {total_s:.1f} s, {result.train_images_per_s:.0f} img/s "
            f"-> {out_dir}")
    dist.close()
    return result


def _check_finite(bad_step: Tensor, out_dir: Path, epoch: int, cfg: TrainConfig) -> None:
    s = int(bad_step.item())
    if s >= 0:
        raise NonFiniteLossError(
            f"the loss became NaN/inf at step {s} (epoch {epoch + 1}); stopped, the last good checkpoint is "
            f"{out_dir / 'last'}: lower --lr (now {cfg.lr:g}) or check the data")


def _log_line(h: dict, epochs: int) -> str:
    ep = f"{h['epoch']}/{epochs}" + ("*" if h.get("partial") else "")
    return (f"{ep:>7}  {h['train_loss']:>10.4f}  {100 * h['train_acc']:>8.2f}%  {h['test_loss']:>9.4f}  "
            f"{100 * h['test_acc']:>7.2f}%  {h['lr']:>9.2e}  {h['epoch_time_s']:>7.1f}  "
            f"{h['train_images_per_s']:>7.0f}")
