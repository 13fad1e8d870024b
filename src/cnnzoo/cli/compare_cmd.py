"""``cnnzoo compare [--models a,b,c | --preset P] [--dataset D] [--epochs N] [--budget-minutes M] ...``."""

from __future__ import annotations

import argparse

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    from ..comparison import PRESET_NAMES

    p = sub.add_parser(
        "compare", help="train several models on one data set under one recipe and rank them (the main job)",
        description="Train each model with the same recipe and budget, evaluate all on the same held-out "
                    "split, and write DIR/leaderboard.{md,csv,json}, accuracy_vs_macs.png, curves.png, "
                    "confusion matrices and a self-contained report.html. With no arguments: the classic "
                    "preset (LeNet-5, AlexNet, VGG, NiN, GoogLeNet, ResNet-18, MobileNetV2) on the embedded "
                    "digits data set.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--models", help="comma-separated model names, e.g. lenet5,resnet20_cifar")
    which.add_argument("--preset", choices=PRESET_NAMES, help="a named set of models (default: classic)")
    p.add_argument("--dataset", default="digits",
                   help="digits (embedded, default), mnist, fashion-mnist, cifar10, cifar100 or folder:PATH")
    p.add_argument("--epochs", type=int, help="epochs per model (default: 3 on digits, else the recipe's)")
    p.add_argument("--budget-minutes", type=float, help="the same wall-clock budget per model, in minutes")
    p.add_argument("--img-size", type=int,
                   help="image size (default: 8 on digits, else the data set's); each model is raised "
                        "to its minimum input")
    p.add_argument("--batch-size", type=int, help="batch size (default: the data set's recipe)")
    p.add_argument("--lr", type=float, help="learning rate (default: the data set's recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default: runs/compare-<dataset>, a new one per run)")
    p.add_argument("--resume", action="store_true",
                   help="skip models already finished in --out, continue the rest")
    p.add_argument("--data-dir", help="data root (default: $CNNZOO_DATA, else ~/.cache/cnnzoo)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (one line per model only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..comparison import compare

    res = compare(models=args.models, preset=args.preset, dataset=args.dataset, epochs=args.epochs,
                  budget_minutes=args.budget_minutes, img_size=args.img_size, out=args.out,
                  resume=args.resume, data_dir=args.data_dir, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, device=args.device, progress=not args.no_progress, raise_errors=args.debug)
    print()
    print(res.leaderboard())
    print()
    print(f"report: {res.files['html']}  (leaderboard.md/.csv/.json, accuracy_vs_macs.png, curves.png "
          f"in {res.out})")
    best = res.best
    if best is not None:
        print(f"best: {best['model']} -> cnnzoo predict {best['checkpoint']} IMAGES...  |  "
              f"cnnzoo export {best['checkpoint']} --format onnx")
    return 0 if best is not None else 1
