"""``cnnzoo train --model M --dataset D [...]``: the CLI over :func:`cnnzoo.training.train`.

The flags are generated from the option declarations in :mod:`cnnzoo.training.config` (torch-free), so
each has its type, range and default in one place. Every recipe option left out takes the data set's recipe
value, so ``cnnzoo train --model lenet5 --dataset mnist`` just works. Under ``torchrun --nproc_per_node=N -m
cnnzoo train ...`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import json
import os

from ..training.config import RunOptions, TrainConfig, add_arguments, values_from_args

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a data set (checkpoints, metrics, curves)",
                       description="Train a zoo model. Options left out come from the data set's recipe "
                                   "(shown in each option's help).")
    add_arguments(p, TrainConfig)
    add_arguments(p, RunOptions)
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: log lines and progress bars; json: print only the result as JSON (default: text)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import train  # deferred: imports torch

    options = {**values_from_args(args, TrainConfig), **values_from_args(args, RunOptions)}
    if args.format == "json":
        options.update(progress=False, verbose=False)
    result = train(**options)
    if args.format == "json" and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict(), indent=1))
    return 0
