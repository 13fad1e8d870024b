"""Does a net train slower than torchvision's because of its initial weights? (a BENCHMARKS.md note)

Times one SGD training step (batch 32, 64x64) of torchvision's net, of ours with its own initialisation
and of ours loaded with torchvision's weights, interleaved in rounds, and prints the median per-round
speed ratio of each of ours to torchvision's.

    python benchmarks/ab_weights.py vgg16_bn --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.training.loop import train_step


def _stepper(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The training engine's own step (:func:`cnnzoo.training.loop.train_step`) with a plain SGD."""
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    return lambda: train_step(m, opt, x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a zoo net that torchvision also has, e.g. resnet18, vgg16_bn")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    torch.manual_seed(0)
    tv = getattr(torchvision.models, a.model)()
    ours = cnnzoo.create_model(a.model)
    ours_tvw = cnnzoo.create_model(a.model)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "tv.safetensors"
        save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(f))
        cnnzoo.load_pretrained(ours_tvw, f)
    x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 1000, (32,))
    sides = {"tv": _stepper(tv, x, y), "ours": _stepper(ours, x, y), "ours with tv weights": _stepper(ours_tvw, x, y)}
    for s in sides.values():  # warm-up
        s()
        s()
    times: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for r in range(a.rounds):
        for k in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            sides[k]()
            times[k].append(time.perf_counter() - t)
    for k in ("ours", "ours with tv weights"):
        ratio = statistics.median(b / a for a, b in zip(times[k], times["tv"], strict=True))
        print(f"{a.model}: {k} / tv, images/s: {ratio:.3f}")


if __name__ == "__main__":
    main()
