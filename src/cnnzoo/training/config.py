"""Every training option, declared once: name, type, default, range or choices, help.

:class:`TrainConfig` is the recipe (what determines the weights; saved in every checkpoint's ``state.json``),
:class:`RunOptions` says where and how one run goes (folder, resume, limits, device). Each field is one
:func:`option` line; from these declarations come the flags of ``cnnzoo train`` and ``cnnzoo compare``
(:func:`add_arguments`), the checks of the Python API (:func:`validate`), and the recipe merge
(:func:`resolve`): the built-in defaults, then the data set's recipe (:data:`RECIPES`), then, for
``compare`` on a data set that has one, the short :data:`DEMO` override, then what the user gave.

Torch-free: the CLI builds its parser from this module without importing torch.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import CnnzooError
from ..utils.ranges import FRACTION, NONNEG_FLOAT, NONNEG_INT, POSITIVE_FLOAT, POSITIVE_INT, Range

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "linear", "step", "onecycle", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
TTA_MODES = ("off", "flip", "flip-translate")
FLIP_MODES = ("random", "alternate")
INIT_NAMES = ("default", "paddle", "xavier", "kaiming", "course")  # init_schemes.init_names(), torch-free
# Warm-up is at most this fraction of a run's optimizer steps, so a short run is not mostly warm-up (a
# 1-epoch warm-up on a 3-epoch run would be a third of it); compare uses the same quarter.
MAX_WARMUP_FRACTION = 0.25


def option(default: Any = None, help: str = "", *, range: Range | None = None, choices: tuple | None = None,
           flag: str | None = None, short: str | None = None, metavar: str | None = None,
           default_text: str | None = None, cli: bool = True, no_value: str | None = None,
           factory: Any = None) -> Any:
    """A dataclass field that is also a command-line option.

    ``flag``: the flag's name (default ``--field-name``); ``default_text``: how the help spells a default
    that is not a plain value; ``cli=False``: Python API only; ``no_value``: a ``--no-NAME`` flag that sets
    this value (``--no-amp`` = ``--amp off``).
    """
    meta = dict(help=help, range=range, choices=choices, flag=flag, short=short, metavar=metavar,
                default_text=default_text, cli=cli, no_value=no_value)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------------ the recipe
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's weights, as asked for (the run's resolved form, with the values it
    derives from the data and the weights, is :class:`~cnnzoo.training.resolved.RunConfig`). Frozen: a change
    is a new config (``dataclasses.replace``)."""

    model: str = option("lenet5", "registered model name (see `cnnzoo list`)", short="-m")
    dataset: str = option("digits", "digits (embedded), mnist, fashion-mnist, cifar10, cifar100 or folder:PATH",
                          short="-d")
    epochs: int = option(10, "epochs to train", range=POSITIVE_INT)
    batch_size: int = option(128, "global batch (all processes together)", range=POSITIVE_INT)
    lr: float = option(0.05, "peak learning rate", range=NONNEG_FLOAT)
    optimizer: str = option("sgd", "sgd = SGD with Nesterov momentum; adamw", choices=OPTIMIZERS)
    momentum: float = option(0.9, "SGD momentum (Nesterov when > 0)", range=FRACTION)
    schedule: str = option("cosine", "LR schedule after the warm-up: cosine to 0; linear to 0; step (x0.1 at 50 % "
                           "and 75 %); onecycle (linear up, linear down); constant", choices=SCHEDULES,
                           default_text="cosine; linear under a time budget (Li et al. 2020, 'Budgeted training')")
    warmup_epochs: float = option(1.0, "linear LR warm-up, in epochs (at most a quarter of the run's steps)",
                                  range=NONNEG_FLOAT)
    weight_decay: float = option(5e-4, "weight decay, not applied to BatchNorm parameters and biases",
                                 range=NONNEG_FLOAT)
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", range=FRACTION)
    seed: int = option(0, "seed of the weights' init, the sample order and the augmentation", range=NONNEG_INT)
    img_size: int | None = option(None, "train at this size", range=POSITIVE_INT,
                                  default_text="the data's, moved into the model's accepted sizes")
    pad: int | None = option(None, "random-crop padding in pixels (0: no crops)", range=NONNEG_INT,
                             metavar="PIXELS", default_text="img_size // 8")
    crop_scale: float | None = option(None, "random-resized crops instead of padded ones: each crop keeps a "
                                      "random area fraction in [N, 1] of the image at an aspect of 3/4-4/3, "
                                      "resized to the training size (torchvision's RandomResizedCrop, per "
                                      "batch on the device)", range=Range(float, lo=0, hi=1, lo_open=True),
                                      metavar="N", default_text="off, padded crops (--pad); 0.08 when "
                                      "fine-tuning a folder")
    hflip: bool | None = option(None, "random horizontal flips", default_text="where they keep the label "
                                "(not for digits)")
    init: str = option("default", "weight initialisation when training from scratch: default (the model's own), "
                       "paddle or its alias course (PaddlePaddle's defaults, as the course), xavier, kaiming "
                       "(cnnzoo.training.init_schemes)", choices=INIT_NAMES)
    pretrained: str | None = option(None, "start from published weights (imagenet: torchvision's or timm's "
                                    "ImageNet weights, downloaded once into their cache; or a library's tag such "
                                    "as IMAGENET1K_V1) or a weights file (.safetensors/.pth), with a new head and "
                                    "the weights' own input normalisation", metavar="imagenet|TAG|PATH",
                                    default_text="none: from scratch")
    freeze_backbone: bool = option(False, "with --pretrained: train only the new head (BatchNorm statistics "
                                   "of the backbone frozen too)")
    freeze_bn: bool = option(False, "keep every BatchNorm's running statistics as they start (eval mode while "
                             "training): for fine-tuning with tiny batches, whose statistics are noisy")
    backbone_lr_scale: float = option(0.1, "with --pretrained: the backbone learns at lr x this",
                                      range=NONNEG_FLOAT)
    aux_weight: float = option(0.3, "weight of GoogLeNet's auxiliary classifiers' losses (Szegedy et al. "
                               "2014)", range=NONNEG_FLOAT)
    amp: str = option("auto", "mixed precision: auto = bf16 (else fp16) autocast on CUDA; on a CPU bf16 where it "
                      "has bf16 units (AMX, AVX512-BF16) for the nets measured to gain (AlexNet, VGG, NiN, ResNets), "
                      "else float32; "
                      "bf16 = bf16 autocast on CUDA or the CPU (fast on CPUs with bf16 matrix units, "
                      "docs/speed.md); fp16 (CUDA); off = float32", choices=AMP_MODES, no_value="off")
    channels_last: bool = option(True, "channels_last memory format where it pays on this device "
                                 "(cnnzoo.speed.policy)")
    gemm_wgrad: bool = option(True, "CPU float32: weight gradients of convs on small maps as one matrix "
                              "multiply, on CPUs where it was measured to pay (cnnzoo.speed.policy)")
    sync_bn: bool = option(False, "DDP on GPUs: synchronise BatchNorm statistics")
    eval_batch_size: int = option(512, "batch size of the per-epoch evaluation", range=POSITIVE_INT)
    precise_bn: int = option(0, "before each evaluation, recompute BatchNorm statistics over N training images "
                             "(PreciseBN: in short runs the running averages lag the weights; 0: off)",
                             range=NONNEG_INT, metavar="N")
    tta: str = option("flip", "test-time augmentation of every evaluation: the mean logits of each image and its "
                      "mirror (flip), and with flip-translate also of both shifted 1 px (2 px above 32 px) up-left "
                      "and down-right (airbench); mirrors only where the run flips (--hflip). Plain and TTA "
                      "top-1 are reported side by side; best/ is chosen by TTA top-1 unless off",
                      choices=TTA_MODES)
    ema: bool = option(False, "also keep an exponential moving average of the weights (updated every step, decay "
                       "warm-up min(D, (1+k)/(10+k)) at update k), evaluated with BatchNorm statistics "
                       "recomputed for it; best/ holds it when it scores higher")
    ema_decay: float = option(0.999, "--ema's decay D", range=Range(float, lo=0, hi=1, hi_open=True), metavar="D")
    flip: str = option("random", "training flips: random = each image flipped with probability 1/2 each epoch; "
                       "alternate = at random in the first epoch, then each image flipped in every other epoch "
                       "(airbench); only where the run flips (--hflip)", choices=FLIP_MODES)
    in_chans: int | None = option(None, "input channels of the model", range=POSITIVE_INT,
                                  default_text="the data set's, or a --pretrained file's first conv")
    train_subset: int | None = option(None, "train on a seeded random subset of N images (quick runs)",
                                      range=POSITIVE_INT, metavar="N", default_text="all")
    test_subset: int | None = option(None, "evaluate on a seeded random subset of N held-out images",
                                     range=POSITIVE_INT, metavar="N", default_text="all")
    model_kwargs: dict = option(help="keyword arguments of the model's factory", cli=False, factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from ``state.json`` (unknown keys from other versions are dropped)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if isinstance(d.get("amp"), bool):  # state files before amp became a mode: True was "auto"
            d["amp"] = "auto" if d["amp"] else "off"
        return cls(**d)


# ------------------------------------------------------------------------------------ how a run goes
# options that mean the same in train and compare: one declaration each
def _data_dir() -> Any:
    return option(None, "data root", metavar="DIR", default_text="$CNNZOO_DATA, else ~/.cache/cnnzoo")


def _device() -> Any:
    return option(None, "cpu, cuda, cuda:N or mps", default_text="the best available")


def _progress() -> Any:
    return option(True, "progress bars")


@dataclass
class RunOptions:
    """Where and how one run goes; not part of the recipe (a resumed run may change them)."""

    out: str | None = option(None, "run folder", short="-o", metavar="DIR", default_text="runs/MODEL-DATASET[-N]")
    resume: bool = option(False, "continue the run in --out where it stopped")
    overwrite: bool = option(False, "replace a finished run in --out")
    time_budget_s: float | None = option(None, "train for this wall-clock budget instead of --epochs: the "
                                         "steps are fitted to the measured speed (re-fitted as the run goes) so "
                                         "the LR schedule ends, and the run with its evaluations and checkpoints "
                                         "finishes, when the budget does", range=NONNEG_FLOAT,
                                         flag="--time-budget", metavar="SECONDS", default_text="none")
    reserve_evals: int = option(0, "evaluations the caller runs after a budgeted run, kept inside its budget "
                                "(each costs what the run's own evaluations cost)", range=NONNEG_INT, cli=False)
    max_steps: int | None = option(None, "stop after this many optimizer steps (mid-epoch; --resume continues "
                                   "there)", range=POSITIVE_INT, default_text="none")
    save_every_s: float | None = option(600.0, "also save DIR/last mid-epoch this often", range=POSITIVE_FLOAT,
                                        flag="--save-every", metavar="SECONDS")
    data_dir: str | None = _data_dir()
    device: str | None = _device()
    progress: bool = _progress()
    verbose: bool = option(True, "print the log lines", cli=False)


# compare's named sets of models. The classic preset follows the course: LeNet-5, AlexNet, VGG, NiN, GoogLeNet,
# ResNet-18, MobileNetV2, in their small-image (CIFAR) forms where the zoo has one (the ImageNet AlexNet and
# VGG would spend nearly all their time on 4096-wide FC layers fed a 1x1 map blown up by the adaptive pool);
# LeNet-5 and GoogLeNet run at their minimum size.
PRESETS: dict[str, tuple[str, ...]] = {
    "classic": ("lenet5", "alexnet_cifar", "vgg11_bn_cifar", "nin_cifar", "googlenet", "resnet18_cifar",
                "mobilenet_v2_cifar"),
    "mobile": ("mobilenet_v1_050", "mobilenet_v2_cifar", "mobilenet_v3_small", "efficientnet_b0"),
}
ALL_SMALL = "all-small"  # every registered net whose default input is 32x32 or smaller (LeNet, CIFAR forms)
PRESET_NAMES = (*PRESETS, ALL_SMALL)


@dataclass
class CompareOptions:
    """``compare``'s own options (the recipe is :class:`TrainConfig`'s, the same as ``train``'s)."""

    budget_minutes: float | None = option(None, "the same wall-clock budget per model, in minutes, instead of "
                                          "--epochs: each model's steps and LR schedule are fitted to it "
                                          "(train --time-budget)",
                                          range=POSITIVE_FLOAT, metavar="MINUTES", default_text="none")
    demo: bool = option(True, "the short demo override of the data set's recipe where there is one "
                        "(printed with the result; --no-demo for the full recipe)")
    out: str | None = option(None, "output folder", short="-o", metavar="DIR",
                             default_text="runs/compare-DATASET, a new one per run")
    resume: bool = option(False, "skip models already finished in --out, continue the rest")
    data_dir: str | None = _data_dir()
    device: str | None = _device()
    progress: bool = _progress()
    verbose: bool = option(True, "print one line per model", cli=False)
    raise_errors: bool = option(False, "re-raise a model's failure instead of recording it", cli=False)


# ------------------------------------------------------------------------------------------ recipes
# What the defaults are tuned for: SGD + Nesterov, cosine with a warm-up epoch, label smoothing, weight decay
# 5e-4 on weights only. Measured figures are in BENCHMARKS.md.
RECIPES: dict[str, dict] = {
    # digits: 1,438 training images and nets with and without BatchNorm (NiN, AlexNet die at higher LRs);
    # AdamW at the highest LR NiN survives, and PreciseBN so one-epoch runs of the BN nets evaluate as they train
    "digits": dict(epochs=20, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=0.05, pad=2,
                   label_smoothing=0.1, precise_bn=512),
    # batch 32: one LeNet-5 epoch is 1,875 steps (its accuracy over seeds: BENCHMARKS.md). PreciseBN in every
    # recipe: a short or budgeted run of a BN-heavy net (MobileNetV2) is otherwise scored with running
    # statistics that lag its weights; 512 images cost little beside an evaluation, and nets without BN skip it
    "mnist": dict(epochs=12, batch_size=32, lr=0.05, pad=2, label_smoothing=0.1, precise_bn=512),
    "fashion-mnist": dict(epochs=30, batch_size=128, lr=0.1, pad=2, label_smoothing=0.1, precise_bn=512),
    "cifar10": dict(epochs=30, batch_size=128, lr=0.1, pad=4, label_smoothing=0.1, precise_bn=512),
    "cifar100": dict(epochs=40, batch_size=128, lr=0.1, pad=4, label_smoothing=0.1, precise_bn=512),
    # own images: often few, often photos; AdamW is the forgiving choice (lower LR when fine-tuning); PreciseBN
    # because few images make few steps, after which BN-heavy nets' running statistics still lag their weights
    "folder": dict(epochs=10, batch_size=32, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                   label_smoothing=0.1, precise_bn=512),
    # fine-tuning: the augmentation the published ImageNet weights were trained with (torchvision's and
    # timm's RandomResizedCrop, scale 0.08-1)
    "folder+pretrained": dict(epochs=5, batch_size=32, optimizer="adamw", lr=3e-4, weight_decay=0.05,
                              label_smoothing=0.1, warmup_epochs=0.5, crop_scale=0.08, precise_bn=512),
}

# The demo override: what `cnnzoo compare` (the README's main job, `make demo`) puts over the data set's recipe
# unless --no-demo, printed with the result: two epochs at the digits' own 8 px scan size, so the seven classic
# nets are compared in about two minutes on two cores (LeNet-5, VGG and GoogLeNet are raised to their minimum
# input). The recipe itself (optimizer, LR, batch) is the one `train` uses; figures in BENCHMARKS.md. float32 on
# every CPU (--amp auto would train the raised nets in bf16 where the CPU has bf16 units), so the leaderboard is
# the README's everywhere.
DEMO: dict[str, dict] = {
    "digits": dict(epochs=2, img_size=8, amp="off"),
}
_OPTIMIZER_KEYS = ("optimizer", "lr", "weight_decay", "momentum")  # belong together in a recipe layer


NO_WEIGHTS = ("", "none", "false", "0", "no", "off")  # --pretrained words that mean "from scratch"


def pretrained_value(value: object) -> str | None:
    """``--pretrained`` as text, or ``None`` when it means no weights (``None``, ``False``, ``none``, ``false``,
    ``0`` ...): the one reading every "does this run start from weights?" uses (a truth test on the text
    ``"none"`` would say yes)."""
    if value is None or value is False:
        return None
    if value is True:
        return "imagenet"
    s = str(value)
    return None if s.strip().lower() in NO_WEIGHTS else s


def recipe_for(dataset: str, pretrained: bool = False) -> dict:
    """The recipe layer of ``dataset`` (``folder:PATH`` -> ``folder``, fine-tuning -> ``folder+pretrained``)."""
    key = "folder" if dataset.startswith("folder:") else dataset
    if key == "folder" and pretrained:
        key = "folder+pretrained"
    return dict(RECIPES.get(key, {}))


def _without_other_optimizer(layer: dict, explicit: dict) -> dict:
    """``layer`` without its optimizer settings if the user named another optimizer (AdamW's LR is no SGD LR)."""
    if explicit.get("optimizer") not in (None, layer.get("optimizer", TrainConfig.optimizer)):
        layer = {k: v for k, v in layer.items() if k not in _OPTIMIZER_KEYS}
    return layer


def demo_for(dataset: str, explicit: dict) -> dict:
    """The demo layer of ``dataset``; without its optimizer settings if the user named another optimizer."""
    return _without_other_optimizer(dict(DEMO.get(dataset, {})), explicit)


def resolve(explicit: dict, demo: bool = False) -> TrainConfig:
    """The config of a run: the user's explicit (non-None) values over the demo layer (if asked for) over the
    data set's recipe over the defaults; checked with :func:`validate`."""
    explicit = {k: v for k, v in explicit.items() if v is not None}
    unknown = set(explicit) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise CnnzooError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    dataset = explicit.get("dataset", TrainConfig.dataset)
    finetune = pretrained_value(explicit.get("pretrained")) is not None
    layers = _without_other_optimizer(recipe_for(dataset, finetune), explicit)
    if demo:
        layers.update(demo_for(dataset, explicit))
    return validate(TrainConfig(**{**layers, **explicit}))


def validate(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` normalised and checked against every field's declaration (the same words as the CLI's errors);
    a new config when anything was normalised."""
    changes: dict[str, Any] = {}
    if isinstance(cfg.amp, bool):  # the Python API's amp=True/False
        changes["amp"] = "auto" if cfg.amp else "off"
    for f in fields(cfg):
        v, m = changes.get(f.name, getattr(cfg, f.name)), f.metadata
        if v is None:
            continue
        if m.get("range") is not None:
            changes[f.name] = m["range"].check(f.name, v)
        elif m.get("choices"):
            v = str(v).lower()
            if v not in m["choices"]:
                raise CnnzooError(f"unknown {f.name} {getattr(cfg, f.name)!r}: use one of {', '.join(m['choices'])}")
            changes[f.name] = v
    changes["pretrained"] = pretrained_value(cfg.pretrained)
    cfg = replace(cfg, **changes)
    if cfg.freeze_backbone and cfg.pretrained is None:
        raise CnnzooError("--freeze-backbone needs --pretrained (imagenet, a tag or a weights file): without "
                          "weights there is no backbone to keep; drop --freeze-backbone to train from scratch")
    return cfg


def warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Warm-up steps: ``warmup_epochs`` of steps, at most :data:`MAX_WARMUP_FRACTION` of the run (0 for
    onecycle without warm-up epochs: its own rise takes a quarter of the run)."""
    total = steps_per_epoch * cfg.epochs
    if cfg.schedule == "onecycle" and not cfg.warmup_epochs:
        return 0
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return min(warmup, int(MAX_WARMUP_FRACTION * total), max(0, total - 1))


# -------------------------------------------------------------------------------------- the flags
def _hint(tp: Any) -> Any:
    """``int | None`` -> ``int``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _default_help(cls: type, f: Any) -> str:
    m = f.metadata
    if m.get("default_text"):
        text = m["default_text"]
    elif f.default is MISSING:
        text = "none"
    elif isinstance(f.default, bool):
        text = "on" if f.default else "off"
    else:
        text = str(f.default)
    if cls is TrainConfig:
        per = {k: r[f.name] for k, r in RECIPES.items() if f.name in r}
        if per:
            text += "; recipes: " + ", ".join(f"{k} {v}" for k, v in per.items())
        demo = {k: d[f.name] for k, d in DEMO.items() if f.name in d}
        if demo:
            text += "; compare's demo: " + ", ".join(f"{k} {v}" for k, v in demo.items())
    return text


def add_arguments(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per CLI field of ``cls`` (all default ``None`` = "not given"), help with the default."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        m = f.metadata
        if not m.get("cli", True) or f.name in skip:
            continue
        names = [m.get("flag") or "--" + f.name.replace("_", "-")] + ([m["short"]] if m.get("short") else [])
        text = f"{m.get('help', '')} (default: {_default_help(cls, f)})".replace("%", "%%")
        kind = _hint(hints[f.name])
        kw: dict[str, Any] = dict(dest=f.name, default=None, help=text)
        if m.get("metavar"):
            kw["metavar"] = m["metavar"]
        if kind is bool:  # --x/--no-x, or only --x where the default is off
            kw["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
        elif m.get("range") is not None:
            kw["type"] = m["range"].argtype()
            kw.setdefault("metavar", "N" if m["range"].kind is int else "X")
        elif m.get("choices"):
            kw["choices"] = list(m["choices"])
            kw["type"] = str.lower
        p.add_argument(*names, **kw)
        if m.get("no_value") is not None:
            p.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const",
                           const=m["no_value"], help=f"same as {names[0]} {m['no_value']}")


def values_from_args(args: argparse.Namespace, cls: type) -> dict:
    """The fields of ``cls`` the user gave on the command line (``None``: not given)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def split_options(options: dict) -> tuple[dict, dict]:
    """``train(**options)`` -> (TrainConfig fields, RunOptions fields); anything else is an error."""
    cfg_names = {f.name for f in fields(TrainConfig)}
    run_names = {f.name for f in fields(RunOptions)}
    unknown = set(options) - cfg_names - run_names
    if unknown:
        raise CnnzooError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return ({k: v for k, v in options.items() if k in cfg_names},
            {k: v for k, v in options.items() if k in run_names})


def run_options(values: dict) -> RunOptions:
    """:class:`RunOptions` from the given values, numbers checked against their declared ranges."""
    opts = RunOptions(**values)
    for f in fields(opts):
        v = getattr(opts, f.name)
        if v is not None and f.metadata.get("range") is not None:
            setattr(opts, f.name, f.metadata["range"].check(f.name, v))
    return opts


__all__ = [
    "ALL_SMALL", "AMP_MODES", "DEMO", "FLIP_MODES", "TTA_MODES",
    "INIT_NAMES", "MAX_WARMUP_FRACTION", "OPTIMIZERS", "PRESETS", "PRESET_NAMES",
    "RECIPES", "SCHEDULES", "CompareOptions", "RunOptions", "TrainConfig", "add_arguments", "demo_for", "option",
    "recipe_for", "resolve", "run_options", "split_options", "validate", "values_from_args", "warmup_steps",
]
