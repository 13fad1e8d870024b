"""``cnnzoo train --model M --dataset D [...]``: the CLI over :func:`cnnzoo.training.train`.

Every option left out takes the data set's recipe value, so ``cnnzoo train --model lenet5 --dataset mnist``
just works. Under ``torchrun --nproc_per_node=N -m cnnzoo train ...`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import json

ORDER = 40


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def add_training_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    """The training options (shared with ``compare``, which trains many models with one recipe)."""
    if model_required:
        p.add_argument("--model", "-m", default=None,
                       help="registered model name (see `cnnzoo list`); default lenet5")
    p.add_argument("--dataset", "-d", default=None,
                   help="digits (default, embedded), mnist, fashion-mnist, cifar10, cifar100 or folder:PATH")
    p.add_argument("--data-dir", default=None, help="data root (default $CNNZOO_DATA, else ~/.cache/cnnzoo)")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None, help="global batch (all processes)")
    p.add_argument("--lr", type=_nonneg_float, default=None, help="peak learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                   help="sgd = SGD with Nesterov momentum")
    p.add_argument("--schedule", choices=["cosine", "step", "onecycle", "constant"], default=None)
    p.add_argument("--warmup-epochs", type=_nonneg_float, default=None)
    p.add_argument("--weight-decay", type=_nonneg_float, default=None, help="not applied to BN and biases")
    p.add_argument("--label-smoothing", type=_nonneg_float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--img-size", type=_positive_int, default=None,
                   help="train at this size (default: the data's, raised to the model's minimum)")
    p.add_argument("--pad", type=int, default=None, metavar="PIXELS",
                   help="random-crop padding (0: no crops; default: the recipe's, else img_size // 8)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: where they keep the label, not for digits)")
    p.add_argument("--pretrained", default=None, metavar="PATH",
                   help="start from a torchvision/timm/cnnzoo weights file (.safetensors/.pth), new head")
    p.add_argument("--freeze-backbone", action="store_true", default=None,
                   help="with --pretrained: train only the new head")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default=None,
                   help="mixed precision: auto (default) = bf16/fp16 on CUDA, fp32 on the CPU; bf16 = bf16 "
                        "autocast on CUDA or the CPU (about 2x faster on CPUs with AVX512-BF16, 2.7x with AMX); "
                        "off = fp32")
    p.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="same as --amp off")
    p.add_argument("--gemm-wgrad", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU float32: weight gradients of convs on small maps as one matrix multiply, where it "
                        "was measured to pay (default: on; --no-gemm-wgrad for oneDNN's kernel everywhere)")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="DDP on GPUs: synchronise BatchNorm statistics")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                   help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a data set (checkpoints, metrics, curves)",
                       description="Train a zoo model. Options left out come from the data set's recipe.")
    add_training_args(p)
    p.add_argument("--out", "-o", default=None, help="run folder (default runs/MODEL-DATASET[-N])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--time-budget", type=_nonneg_float, default=None, metavar="SECONDS",
                   help="stop after the epoch that crosses this wall-clock budget")
    p.add_argument("--max-steps", type=_positive_int, default=None,
                   help="stop after this many optimizer steps")
    p.add_argument("--train-subset", type=_positive_int, default=None, metavar="N",
                   help="train on a seeded random subset of N images (quick runs)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import train

    result = train(
        model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=args.seed,
        img_size=args.img_size, pretrained=args.pretrained, freeze_backbone=args.freeze_backbone,
        out=args.out, resume=args.resume, overwrite=args.overwrite, time_budget_s=args.time_budget,
        max_steps=args.max_steps,
        data_dir=args.data_dir, device=args.device, progress=args.progress and args.format == "text",
        verbose=args.format == "text", amp=args.amp, sync_bn=args.sync_bn, train_subset=args.train_subset,
        pad=args.pad, hflip=args.hflip, gemm_wgrad=args.gemm_wgrad)
    if args.format == "json":
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result.to_dict(), indent=1))
    return 0
