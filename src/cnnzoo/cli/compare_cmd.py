"""``cnnzoo compare [--models a,b,c | --preset P] [--dataset D] [any train recipe option] ...``.

The recipe flags are ``train``'s, generated from the same declarations (:mod:`cnnzoo.training.config`), so
both commands take and check every recipe option the same way.
"""

from __future__ import annotations

import argparse

from ..training.config import PRESET_NAMES, CompareOptions, TrainConfig, add_arguments, values_from_args

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="train several models on one data set under one recipe and rank them (the main job)",
        description="Train each model with the same recipe and budget, evaluate all on the same held-out "
                    "split, and write DIR/leaderboard.{md,csv,json}, accuracy_vs_macs.png, curves.png, "
                    "confusion matrices and a self-contained report.html. The recipe is train's for the data "
                    "set, with the short demo override where the data set has one (digits; --no-demo for the "
                    "full recipe). With no arguments: the classic preset (LeNet-5, AlexNet, VGG, NiN, "
                    "GoogLeNet, ResNet-18, MobileNetV2) on the embedded digits data set.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--models", help="comma-separated model names, e.g. lenet5,resnet20_cifar "
                                        "(default: the classic preset)")
    which.add_argument("--preset", choices=PRESET_NAMES, help="a named set of models (default: classic)")
    add_arguments(p, TrainConfig, skip=("model",))
    add_arguments(p, CompareOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..comparing.run import compare  # deferred: imports torch

    res = compare(models=args.models, preset=args.preset, raise_errors=args.debug,
                  **values_from_args(args, CompareOptions), **values_from_args(args, TrainConfig))
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
