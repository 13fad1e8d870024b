"""Where a conv's weight gradient is faster as one GEMM than in oneDNN, on this CPU (cnnzoo.speed.conv_grad's rule).

For each k x k conv shape (batch, input channels, output map, stride) it times oneDNN's weight-gradient
kernel (``aten.convolution_backward`` with only the weight gradient asked for) against ``unfold`` + one
matrix multiply, the two interleaved, medians of several runs, and marks which side of
:func:`cnnzoo.speed.conv_grad.gemm_weight_grad`'s rule each shape falls on. The rule is on by default only for
the CPU ISAs listed in ``cnnzoo.speed.policy.GEMM_WGRAD_ISAS``; run this on another CPU to see whether it holds.

    python benchmarks/conv_weight_grad.py [--batch 8 32 128] [--kernel 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from cnnzoo.speed.conv_grad import gemm_weight_grad  # noqa: E402


def _median_ms(fn, runs: int) -> float:
    fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def measure(n: int, cin: int, cout: int, out: int, stride: int, k: int, runs: int) -> dict:
    """oneDNN's and the GEMM's weight-gradient time (ms) for one conv shape (padding k // 2)."""
    p = k // 2
    size = (out - 1) * stride + k - 2 * p
    x = torch.randn(n, cin, size, size)
    w = torch.randn(cout, cin, k, k) * 0.01
    g = torch.randn(n, cout, out, out)
    cb = torch.ops.aten.convolution_backward

    def onednn() -> None:
        cb(g, x, w, None, [stride] * 2, [p] * 2, [1, 1], False, [0, 0], 1, [False, True, False])

    def gemm() -> None:
        cols = F.unfold(x, k, padding=p, stride=stride)
        g.permute(0, 2, 3, 1).reshape(-1, cout).t() @ cols.transpose(1, 2).reshape(-1, cin * k * k)

    a, b = [], []
    for _ in range(runs):  # interleaved, so drift on a shared machine hits both alike
        a.append(_median_ms(onednn, 1))
        b.append(_median_ms(gemm, 1))
    t_o, t_g = statistics.median(a), statistics.median(b)
    return dict(batch=n, cin=cin, cout=cout, out=out, stride=stride, kernel=k, onednn_ms=round(t_o, 3),
                gemm_ms=round(t_g, 3), speedup=round(t_o / t_g, 3),
                rule=gemm_weight_grad(cin, (k, k), (out, out)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--out", type=int, nargs="+", default=[1, 2, 4, 7], help="output map sides")
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    print(f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'batch':>5} {'C_in':>5} {'C_out':>5} {'map':>4} {'s':>2} {'oneDNN ms':>10} {'GEMM ms':>8} "
          f"{'speedup':>7}  rule")
    rows = []
    for n in args.batch:
        for c in args.channels:
            for out in args.out:
                for s in (1, 2):
                    r = measure(n, c // s, c, out, s, args.kernel, args.runs)
                    rows.append(r)
                    print(f"{n:>5} {r['cin']:>5} {c:>5} {out:>2}x{out:<1} {s:>2} {r['onednn_ms']:>10.2f} "
                          f"{r['gemm_ms']:>8.2f} {r['speedup']:>7.2f}  {'GEMM' if r['rule'] else '-'}",
                          flush=True)
    inside = [r["speedup"] for r in rows if r["rule"]]
    outside = [r["speedup"] for r in rows if not r["rule"]]
    if inside:
        print(f"inside the rule: {len(inside)} shapes, speedup {min(inside):.2f}-{max(inside):.2f} "
              f"(median {statistics.median(inside):.2f})")
    if outside:
        print(f"outside: {len(outside)} shapes, speedup {min(outside):.2f}-{max(outside):.2f} "
              f"(median {statistics.median(outside):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"isa": torch.backends.cpu.get_cpu_capability(), "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
