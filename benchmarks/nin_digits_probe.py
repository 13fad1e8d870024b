"""Why NiN stays at chance after one digits epoch (BENCHMARKS.md): its 45 steps in a plain loop, logging the
fraction of positive logits (the class maps after the paper's last ReLU) and the loss.

    python benchmarks/nin_digits_probe.py adamw 2e-3 32                 # the digits recipe's optimizer
    python benchmarks/nin_digits_probe.py sgd 0.1 32 --last-bias 1 --last-weight-scale 0
    python benchmarks/nin_digits_probe.py adamw 2e-3 32 --gaussian-std 0.05   # the authors' Caffe init
    python benchmarks/nin_digits_probe.py adamw 2e-3 32 --epochs 3 --init kaiming

Digits upsampled to 32 px and standardised, no augmentation, warm-up a quarter of the steps, then cosine.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import cnnzoo
from cnnzoo.training.init_schemes import apply_init


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("optimizer", choices=("adamw", "sgd"))
    ap.add_argument("lr", type=float)
    ap.add_argument("batch", type=int)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--init", default="default", help="a cnnzoo.training.init_schemes name")
    ap.add_argument("--gaussian-std", type=float, default=None, help="every conv weight N(0, std)")
    ap.add_argument("--last-bias", type=float, default=None, help="the class-map conv's bias")
    ap.add_argument("--last-weight-scale", type=float, default=None, help="scale the class-map conv's weights")
    a = ap.parse_args()

    torch.manual_seed(0)
    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, size=32, mode="bilinear")
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    xtr, ytr, xte, yte = x[perm[:1438]], y[perm[:1438]], x[perm[1438:]], y[perm[1438:]]

    m = cnnzoo.create_model("nin_cifar", num_classes=10, in_chans=1)
    if a.init != "default":
        apply_init(m, a.init)
    if a.gaussian_std is not None:
        for conv in (c for c in m.modules() if isinstance(c, torch.nn.Conv2d)):
            torch.nn.init.normal_(conv.weight, 0.0, a.gaussian_std)
    last = m.get_classifier().cccp2
    if a.last_bias is not None:
        torch.nn.init.constant_(last.bias, a.last_bias)
    if a.last_weight_scale is not None:
        last.weight.data.mul_(a.last_weight_scale)

    steps = int(math.ceil(len(ytr) / a.batch) * a.epochs)
    warm = steps // 4
    if a.optimizer == "adamw":
        opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=0.05)
    else:
        opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    m.train()
    for s in range(steps):
        f = (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm)))
        for g in opt.param_groups:
            g["lr"] = a.lr * f
        idx = torch.randint(0, len(ytr), (a.batch,))
        out = m(xtr[idx])
        loss = F.cross_entropy(out, ytr[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 5 == 0 or s == steps - 1:
            print(f"step {s:3d}  loss {loss.item():.4f}  positive logits {(out > 0).float().mean():.3f}  "
                  f"max logit {out.max():.3f}", flush=True)
    m.eval()
    with torch.no_grad():
        print(f"held-out top-1 {100 * (m(xte).argmax(1) == yte).float().mean():.2f} %")


if __name__ == "__main__":
    main()
