"""``cnnzoo benchmark MODEL... [--mode train|infer|both] [--vs torchvision|timm] [--format table|json]``."""

from __future__ import annotations

import argparse
import json

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="images/s, latency, memory and GFLOP/s of nets, optionally vs torchvision/timm",
        description="Time training steps and/or inference batches (median of several runs after warm-up). "
                    "With --vs, the same architecture from torchvision or timm is built in the same process "
                    "and timed interleaved with ours; the ratio ours/theirs is reported. GFLOP/s use "
                    "cnnzoo's MAC count (FLOPs = 2 x MACs, a training step 3x the forward) and are compared "
                    "with a float32 matrix multiply measured at start.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered names (cnnzoo list) or path/to/file.py:factory")
    p.add_argument("--mode", choices=["train", "infer", "both"], default="both")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, help="square input side (default: each model's own, e.g. 224)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--vs", choices=["torchvision", "timm"], help="also time this library's net, interleaved")
    p.add_argument("--vs-settings", choices=["default", "same", "both"], default="default",
                   help="run the reference as its users do (default: eval, unfused, contiguous), with our "
                        "fast paths applied too (same), or both ways")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: per net, where it was measured to pay)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorm into convolutions for inference and, on the CPU, run activations "
                   "and residual adds inside the conv kernels (default: on)")
    p.add_argument("--gemm-wgrad", action=argparse.BooleanOptionalAction, default=None,
                   help="training: weight gradients of convs on small maps as one GEMM, our net (and the "
                        "reference with --vs-settings same) (default: on CPUs where it was measured to pay)")
    p.add_argument("--compile", action="store_true", help="torch.compile our net (compile time not timed)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CUDA, both sides (default: on with CUDA)")
    p.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default: 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up batches per net (default: 2)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing each fast path's output with the plain path's")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..benchmarking import benchmark

    report = benchmark(
        args.models, mode=args.mode, batch_size=args.batch_size, img_size=args.img_size, device=args.device,
        vs=args.vs, vs_settings=args.vs_settings, channels_last=args.channels_last, fuse=args.fuse,
        compile=args.compile, amp=args.amp, gemm_wgrad=args.gemm_wgrad, warmup=args.warmup, runs=args.runs,
        threads=args.threads,
        check=not args.no_check, progress=args.format == "table")
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.table())
    return 0
