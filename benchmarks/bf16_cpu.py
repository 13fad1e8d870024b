"""bf16 autocast against float32 for training on this CPU: where does bf16 pay?

For each (net, input size, batch) one ``cnnzoo.benchmark`` call times the training step in float32 (the
format ``cnnzoo train`` would use) and, interleaved with it, under bf16 autocast in channels_last; the table
gives both and their ratio with the net's MACs per image, which is what the ``--amp auto`` rule for CPUs
with bf16 matrix units is read from (``cnnzoo.speed.policy.CPU_BF16_MIN_MACS``). On a CPU without bf16
units bf16 runs emulated and the script says so and stops.

    python benchmarks/bf16_cpu.py                 # the default cases, a few minutes on 2 cores
    python benchmarks/bf16_cpu.py --cases lenet5:28:128,resnet20_cifar:32:128 --runs 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# net:size:batch: the classic preset at the CIFAR recipes' 32 px and batch 128 (LeNet-5 at MNIST's 28), ResNet-20,
# and the folder comparison's nets at 128 px and the folder recipe's batch 32
CASES = ("lenet5:28:128", "alexnet_cifar:32:128", "vgg11_bn_cifar:32:128", "nin_cifar:32:128", "googlenet:32:128",
         "resnet20_cifar:32:128", "resnet18_cifar:32:128", "mobilenet_v2_cifar:32:128", "resnet18:128:32",
         "mobilenet_v2:128:32", "efficientnet_b0:128:32")


def measure(case: str, runs: int) -> dict:
    """img/s of one case in float32 and in bf16 (interleaved), and the net's MACs per image."""
    import cnnzoo
    from cnnzoo.benchmarking.results import Variant

    name, size, batch = case.split(":")
    rep = cnnzoo.benchmark(name, mode="train", batch_size=int(batch), img_size=int(size), amp=False, runs=runs,
                           warmup=1, check=False, measure_memory=False,
                           extra=[Variant("bf16", impl="cnnzoo", channels_last=True, fused_opt=True, amp=True)])
    r = rep.results[0]
    fp32, bf16 = r.ours.images_per_s, r.extra["bf16"].images_per_s
    return {"case": case, "model": name, "img_size": int(size), "batch_size": int(batch),
            "macs_per_image": r.macs_per_image, "fp32_img_s": round(fp32, 1),
            "fp32_channels_last": r.ours.channels_last, "bf16_img_s": round(bf16, 1), "ratio": round(bf16 / fp32, 2)}


def table(rows: list[dict]) -> str:
    out = ["| net | size | batch | MMACs / image | fp32 img/s | bf16 img/s | **bf16 / fp32** |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["macs_per_image"]):
        out.append(f"| {r['model']} | {r['img_size']} | {r['batch_size']} | {r['macs_per_image'] / 1e6:.1f} | "
                   f"{r['fp32_img_s']} | {r['bf16_img_s']} | **{r['ratio']:.2f}** |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated net:size:batch")
    p.add_argument("--runs", type=int, default=3, help="timed runs per side (medians)")
    p.add_argument("--out", default="runs/bf16-cpu.json", help="results (a case already there is kept)")
    p.add_argument("--table", action="store_true", help="print the Markdown table of --out and stop")
    a = p.parse_args()
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.is_file() else []
    if a.table:
        print(table(rows))
        return 0
    from cnnzoo.speed.policy import cpu_has_bf16_matmul

    if not cpu_has_bf16_matmul():
        print("this CPU has no bf16 matrix units (AMX or AVX512-BF16): bf16 would run emulated", file=sys.stderr)
        return 1
    done = {r["case"] for r in rows}
    for case in [c for c in a.cases.split(",") if c and c not in done]:
        rows.append(measure(case, a.runs))
        print(json.dumps(rows[-1]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
