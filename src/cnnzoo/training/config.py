"""Training configuration: one flat dataclass, and per-data-set recipes that fill what the user left out.

Every ``cnnzoo.train`` argument defaults to ``None`` = "the recipe's value", so a resumed run can tell
what was asked for explicitly from what was defaulted, and ``cnnzoo train --model lenet5 --dataset
mnist`` needs nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    """Everything that determines a run (saved in every checkpoint's ``state.json``)."""

    model: str = "lenet5"
    dataset: str = "digits"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | step | onecycle | constant
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4  # never applied to BN parameters and biases
    label_smoothing: float = 0.0
    seed: int = 0
    img_size: int | None = None  # None: the data set's size, raised to the model's minimum
    pad: int | None = None  # random-crop padding in pixels; None: img_size // 8
    hflip: bool | None = None  # None: where it keeps labels (not for digits)
    pretrained: str | None = None
    freeze_backbone: bool = False
    backbone_lr_scale: float = 0.1  # backbone LR = lr x this when fine-tuning from --pretrained
    aux_weight: float = 0.3  # GoogLeNet auxiliary classifiers (Szegedy et al. 2014)
    # mixed precision (:func:`cnnzoo.training.engine.amp_dtype`): "auto" = on CUDA bf16 autocast where
    # supported, else fp16 with a GradScaler, on the CPU fp32; "bf16" = bf16 autocast on CUDA or the CPU (fast
    # on CPUs with bf16 matrix units: Intel AMX, AVX512-BF16); "fp16" (CUDA); "off" = fp32 everywhere
    amp: str = "auto"
    channels_last: bool = True  # CUDA, CPU bf16, and CPU fp32 for the nets where it was measured to pay
    # CPU float32: weight gradients of convs on small maps as one GEMM, on CPUs where it was measured to pay
    # (:mod:`cnnzoo.conv_grad`; forward and input gradients unchanged, weight gradients to float rounding)
    gemm_wgrad: bool = True
    sync_bn: bool = False  # DDP: SyncBatchNorm
    eval_batch_size: int = 512
    in_chans: int | None = None  # None: the data set's (or a --pretrained file's first conv)
    train_subset: int | None = None  # a seeded random subset of this many training images (quick runs)
    test_subset: int | None = None  # likewise for the held-out split
    model_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if isinstance(d.get("amp"), bool):  # state files before amp became a mode: True was "auto"
            d["amp"] = "auto" if d["amp"] else "off"
        return cls(**d)


# Recipes (what the defaults are tuned for): SGD + Nesterov, cosine with a warm-up epoch, label smoothing,
# weight decay 5e-4 on weights only. Measured figures are in BENCHMARKS.md.
RECIPES: dict[str, dict] = {
    "digits": dict(epochs=20, batch_size=64, lr=0.1, pad=2, label_smoothing=0.0),
    "mnist": dict(epochs=12, batch_size=128, lr=0.1, pad=2, label_smoothing=0.1),
    "fashion-mnist": dict(epochs=30, batch_size=128, lr=0.1, pad=2, label_smoothing=0.1),
    "cifar10": dict(epochs=30, batch_size=128, lr=0.1, pad=4, label_smoothing=0.1),
    "cifar100": dict(epochs=40, batch_size=128, lr=0.1, pad=4, label_smoothing=0.1),
    # own images: often few, often photos; AdamW is the forgiving choice (lower LR when fine-tuning)
    "folder": dict(epochs=10, batch_size=32, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                   label_smoothing=0.1),
    "folder+pretrained": dict(epochs=5, batch_size=32, optimizer="adamw", lr=3e-4, weight_decay=0.05,
                              label_smoothing=0.1, warmup_epochs=0.5),
}

OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("auto", "bf16", "fp16", "off")
SCHEDULES = ("cosine", "step", "onecycle", "constant")


def recipe_for(dataset: str, pretrained: bool = False) -> dict:
    key = "folder" if dataset.startswith("folder:") else dataset
    if key == "folder" and pretrained:
        key = "folder+pretrained"
    return dict(RECIPES.get(key, {}))


def build_config(explicit: dict) -> TrainConfig:
    """A config from the user's explicit (non-None) values over the data set's recipe over the defaults."""
    from ..errors import CnnzooError

    explicit = {k: v for k, v in explicit.items() if v is not None}
    dataset = explicit.get("dataset", TrainConfig.dataset)
    cfg = TrainConfig(**{**recipe_for(dataset, bool(explicit.get("pretrained"))), **explicit})
    cfg.optimizer, cfg.schedule = cfg.optimizer.lower(), cfg.schedule.lower()
    if isinstance(cfg.amp, bool):  # the Python API's amp=True/False
        cfg.amp = "auto" if cfg.amp else "off"
    cfg.amp = str(cfg.amp).lower()
    if cfg.amp not in AMP_MODES:
        raise CnnzooError(f"unknown amp mode {cfg.amp!r}: use one of {', '.join(AMP_MODES)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise CnnzooError(f"unknown optimizer {cfg.optimizer!r}: use {' or '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise CnnzooError(f"unknown schedule {cfg.schedule!r}: use one of {', '.join(SCHEDULES)}")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise CnnzooError(f"{name.replace('_', '-')} must be >= 1 (got {getattr(cfg, name)})")
    for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "backbone_lr_scale"):
        v = getattr(cfg, name)
        if not v >= 0 or v == float("inf"):
            raise CnnzooError(f"{name.replace('_', '-')} must be a finite number >= 0 (got {v})")
    if cfg.label_smoothing >= 1:
        raise CnnzooError(f"label-smoothing must be below 1 (got {cfg.label_smoothing})")
    if cfg.pad is not None and int(cfg.pad) < 0:
        raise CnnzooError(f"pad must be >= 0 (got {cfg.pad})")
    if cfg.img_size is not None and int(cfg.img_size) < 1:
        raise CnnzooError(f"img-size must be >= 1 (got {cfg.img_size})")
    return cfg
