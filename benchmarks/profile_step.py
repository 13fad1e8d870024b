"""Where one training step of a net spends its time on this CPU: torch.profiler's top operators.

What led to cnnzoo.speed.conv_grad: ResNet-18's step at batch 32, 64x64 spent about a third of its time in the
weight gradient of layer4's 2x2 convs. Times the torchvision net as its users run it (contiguous, torch's
default SGD, no cnnzoo fast paths) unless ``--cnnzoo``, which profiles our net with the fast paths
``cnnzoo.train`` uses on this CPU.

    python benchmarks/profile_step.py resnet18 [--batch 32] [--size 64] [--steps 3] [--cnnzoo]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a torchvision model name (or a cnnzoo name with --cnnzoo)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--cnnzoo", action="store_true", help="our net with cnnzoo.train's CPU fast paths")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 1000, (args.batch,))
    if args.cnnzoo:
        import cnnzoo
        from cnnzoo.speed.conv_grad import to_small_map_grads
        from cnnzoo.speed.policy import channels_last_default, gemm_wgrad_default

        net = cnnzoo.create_model(args.model)
        if channels_last_default(args.model, "train", "cpu"):
            net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        if gemm_wgrad_default("cpu"):
            to_small_map_grads(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, fused=True)
    else:
        import torchvision

        net = getattr(torchvision.models, args.model)(aux_logits=False) if args.model == "googlenet" \
            else getattr(torchvision.models, args.model)()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = net(x)
        F.cross_entropy(out if isinstance(out, torch.Tensor) else out[0], y).backward()
        opt.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.steps} steps: "
          f"{total / 1e3 / args.steps:.0f} ms of operator time per step (profiler overhead included)")
    print(f"{'share':>6} {'ms/step':>8} {'calls/step':>10}  operator  [first input shape, weight shape]")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]:
        shapes = [s for s in e.input_shapes if s][:2]
        print(f"{100 * e.self_cpu_time_total / total:5.1f}% {e.self_cpu_time_total / 1e3 / args.steps:8.1f} "
              f"{e.count / args.steps:10.1f}  {e.key}  {shapes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
