"""Measure issue 6's speed table and write the "Speed" section of BENCHMARKS.md (between its markers; the
rest of the file, e.g. the training-accuracy section, is left as it is).

    CNNZOO_DATA=../shared/data .venv/bin/python benchmarks/speed.py            # ~10-15 min on 2 free cores
    .venv/bin/python benchmarks/speed.py --quick --nets resnet18 --skip-loop    # smoke test, nothing written

Every ratio is measured side by side in one process: our net and torchvision's are timed interleaved
(ours, theirs, theirs, ours, ...), medians of several runs after warm-up, so load from other processes
hits both alike. Absolute images/s depend on that load; the machine line records it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cnnzoo.benchmarking import (  # noqa: E402
    Variant,
    benchmark,
    gemm_peak_gflops,
    loop_overhead,
    machine_info,
    paired_ratio,
    pipeline_throughput,
)
from cnnzoo.speed.policy import channels_last_default, cpu_has_bf16_matmul  # noqa: E402

NETS = ["resnet18", "resnet50", "vgg16_bn", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "googlenet"]
TRAIN = {"batch_size": 32, "img_size": 64}
INFER = {"batch_size": 8, "img_size": 224}  # batch 8 keeps VGG-16 at 224 within the time budget on 2 cores
RUNS: dict[str, int] = {}  # per-net timed runs where they should differ from --runs (5)
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
TARGETS = {"train": 1.0, "train_aim": 1.15, "infer": 1.2, "loop": 1.1, "pipeline": 20.0}
# bf16 autocast against float32 for the nets the training-accuracy rows use (batch 128, 32x32, CIFAR shape)
BF16_NETS = ["resnet18_cifar", "resnet20_cifar"]
BF16 = {"batch_size": 128, "img_size": 32}


def _f(v: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    gemm_peak_gflops("cpu", repeats=40)  # best of many: a quiet moment on a busy machine (cached for the rest)
    out: dict = {"machine": machine_info("cpu"), "train": [], "infer": []}
    log = print if not args.quiet else (lambda *a, **k: None)
    for name in args.nets:
        runs = RUNS.get(name, args.runs)
        r = benchmark(name, mode="train", vs="torchvision", vs_settings="both", runs=runs, warmup=2,
                      extra=[Variant("ref_cl", channels_last=True), Variant("ref_fopt", fused_opt=True),
                             Variant("ours_onednn_wgrad", impl="cnnzoo", fused_opt=True, gemm_wgrad=False,
                                     channels_last=channels_last_default(name, "train", "cpu"))], **TRAIN)
        out["train"].append(r.results[0].to_dict())
        log(r.table().splitlines()[-1], flush=True)
    for name in args.nets:
        runs = RUNS.get(name, args.runs)
        r = benchmark(name, mode="infer", vs="torchvision", vs_settings="both", runs=runs, warmup=2,
                      extra=[Variant("ref_fused", fuse=True, channels_last=False),
                             Variant("ours_bn_fold", impl="cnnzoo", fuse=True, fuse_act=False,
                                     channels_last=channels_last_default(name, "infer", "cpu"))], **INFER)
        out["infer"].append(r.results[0].to_dict())
        log(r.table().splitlines()[-1], flush=True)
    if cpu_has_bf16_matmul() or args.bf16:
        out["bf16"] = []
        for name in BF16_NETS:
            r = benchmark(name, mode="train", runs=args.runs, warmup=2, num_classes=10,
                          extra=[Variant("bf16", impl="cnnzoo", channels_last=True, fused_opt=True, amp=True)],
                          **BF16)
            out["bf16"].append(r.results[0].to_dict())
            log(r.table().splitlines()[-1], flush=True)
    if not args.skip_loop:
        out["loop"] = loop_overhead("lenet5", "mnist", repeats=args.loop_repeats)
        log(json.dumps(out["loop"]), flush=True)
        out["pipeline"] = [pipeline_throughput(d, repeats=3) for d in ("mnist", "cifar10")]
        log(json.dumps(out["pipeline"]), flush=True)
    out["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def markdown(d: dict, command: str) -> str:
    m = d["machine"]
    lines = [
        BEGIN,
        "## Speed",
        "",
        f"Measured with `{command}` ({d['wall_s'] / 60:.1f} min) on {m['cpu']} ({m['cpu_count']} cores, "
        f"{m['threads']} torch thread{'s' if m['threads'] != 1 else ''}, {m['cpu_capability']}), torch {m['torch']}, "
        f"torchvision "
        f"{m.get('torchvision', '-')}; float32 GEMM peak {m['gemm_gflops']:.1f} GFLOP/s (best of 40 matmuls at start). "
        f"Load average (1 min) {m['load_avg_1m']:.1f} at the start and {m['load_avg_1m_end']:.1f} at the end "
        "(it counts this run's own threads and what ran in the minute before; a virtual machine's neighbours "
        "do not show in it), so absolute images/s are noisy. **Every ratio is measured side by side in one "
        "process**: the nets are timed interleaved, in rounds (ours, theirs, theirs, ours, ...), after warm-up; "
        "images/s are medians over the rounds, and every ratio is the median over rounds of the two nets' "
        "times within a round (`cnnzoo.benchmarking.paired_ratio`), so a load spike hits both sides of a ratio "
        "alike. `cnnzoo benchmark` gives the same figures for any net (`--vs torchvision|timm`, "
        "`--format json`).",
        "",
        "Conventions: FLOPs = 2 x cnnzoo's MACs (conv + linear); a training step counts 3x the forward FLOPs; "
        "\"of peak\" = achieved GFLOP/s / the GEMM peak. Peak memory: what one step adds above what was held "
        "before it (CPU: resident set sampled every 0.5 ms).",
        "",
    ]
    t = TRAIN
    lines += [
        f"### Training: SGD step, batch {t['batch_size']}, {t['img_size']}x{t['img_size']} (target ours / "
        f"torchvision >= {TARGETS['train']}, aim {TARGETS['train_aim']})",
        "",
        "*ours*: cnnzoo's step as shipped (channels_last where it was measured to pay on this CPU's ISA, torch's "
        "fused SGD kernel as `cnnzoo.train` uses, and on CPUs where it was measured to pay the weight gradients of "
        "the convs on small maps as one GEMM, `cnnzoo.speed.conv_grad`: the format column counts those convs); "
        "*tv*: torchvision as its users run it (contiguous, torch's "
        "default SGD); *tv cl*: torchvision in channels_last; *tv fused SGD*: torchvision with the fused SGD "
        "kernel. So *tv cl / tv* is what channels_last alone does on this CPU, *tv fused SGD / tv* what the "
        "fused optimizer alone does, *ours / ours oneDNN wgrad* what the GEMM weight gradients alone do, and "
        "*ours / tv same* compares the same computation (torchvision with all of our fast paths).",
        "",
        "| net | ours img/s | ms/batch | ours format | tv img/s | **ours / tv** | >= 1.0 | tv cl / tv "
        "| tv fused SGD / tv | ours / ours oneDNN wgrad | ours / tv same | GFLOP/s | of peak | peak MB |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["train"]:
        o, tv, tvc = r["ours"], r["theirs"], r["extra"]["ref_cl"]
        tvf, same = r["extra"].get("ref_fopt"), r.get("theirs_same")
        onednn = r["extra"].get("ours_onednn_wgrad")
        fmt_col = "channels_last" if o["channels_last"] else "contiguous"
        if o.get("gemm_wgrad"):
            fmt_col += f", {o['gemm_wgrad']} GEMM wgrad"
        ratio = paired_ratio(o, tv)
        lines.append(
            f"| {r['model']} | {o['images_per_s']:.1f} | {o['latency_ms']:.0f} | "
            f"{fmt_col} | {tv['images_per_s']:.1f} | "
            f"**{ratio:.2f}** | {_mark(ratio >= TARGETS['train'])} | {paired_ratio(tvc, tv):.2f} | "
            f"{_f(paired_ratio(tvf, tv) if tvf else None, '.2f')} | "
            f"{_f(paired_ratio(o, onednn) if onednn else None, '.2f')} | "
            f"{_f(paired_ratio(o, same) if same else None, '.2f')} | "
            f"{o['gflops']:.1f} | {100 * o['peak_fraction']:.0f}% | "
            f"{_f(o['peak_mem_mb'], '.0f')} |")
    t = INFER
    lines += [
        "",
        f"### Inference: batch {t['batch_size']}, {t['img_size']}x{t['img_size']} (target ours fused / "
        f"torchvision eval >= {TARGETS['infer']})",
        "",
        "*ours*: eval, `torch.inference_mode`, BatchNorm folded (`cnnzoo.fuse`), each conv's activation and "
        "residual add run inside its oneDNN kernel (`cnnzoo.fuse_activations`), channels_last; *tv*: "
        "torchvision eval, unfused, contiguous (also under `inference_mode`); *tv fused*: torchvision with both "
        "folds, contiguous; *tv fused cl*: with all our fast paths. So *tv fused / tv* is what the folds do, "
        "*tv fused cl / tv fused* what channels_last adds, *ours / ours BN fold only* what "
        "`fuse_activations` adds, and *ours / tv fused cl* compares the same computation. *max rel diff*: "
        "our fast path's logits vs our plain eval logits on the benchmark's input (largest difference / "
        "largest logit).",
        "",
        "| net | ours img/s | ms/batch | tv img/s | **ours / tv** | >= 1.2 | tv fused / tv | tv fused cl / tv fused "
        "| ours / ours BN fold only | ours / tv fused cl | GFLOP/s | of peak | peak MB | max rel diff |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["infer"]:
        o, tv, tvs, tvf = r["ours"], r["theirs"], r["theirs_same"], r["extra"]["ref_fused"]
        bn = r["extra"].get("ours_bn_fold")
        ratio = paired_ratio(o, tv)
        lines.append(
            f"| {r['model']} | {o['images_per_s']:.1f} | {o['latency_ms']:.0f} | {tv['images_per_s']:.1f} | "
            f"**{ratio:.2f}** | {_mark(ratio >= TARGETS['infer'])} | "
            f"{paired_ratio(tvf, tv):.2f} | {paired_ratio(tvs, tvf):.2f} | "
            f"{_f(paired_ratio(o, bn) if bn else None, '.2f')} | "
            f"{paired_ratio(o, tvs):.2f} | {o['gflops']:.1f} | {100 * o['peak_fraction']:.0f}% | "
            f"{_f(o['peak_mem_mb'], '.0f')} | {o['max_rel_diff']:.1e} |")
    cl_train = [n for n in NETS if channels_last_default(n, "train", "cpu")]
    same = [paired_ratio(r["ours"], r["theirs_same"]) for r in d["train"] + d["infer"] if r.get("theirs_same")]
    lines += [
        "",
        "Reading the figures: our nets and torchvision's run the same aten operations (docs/speed.md counts "
        "them), so the *same* columns compare identical computations and their spread around 1.0 "
        f"({min(same):.2f}-{max(same):.2f} in this run) is this run's measurement noise. In training, ours "
        "beats torchvision as its users run it where channels_last pays on this CPU, by what the fused "
        "SGD kernel saves (1-4 %: the optimizer is a small part of a step) and, on CPUs where it was measured "
        "to pay, by computing the weight gradients of convs on small maps as one GEMM instead of in oneDNN "
        "(*ours / ours oneDNN wgrad*; ResNet-18's layer4 at 2x2 for a 64x64 input, docs/speed.md). In "
        "inference, folding BatchNorm, running "
        "activations and residual adds inside the conv kernels, and channels_last all pay. `torch.compile` "
        "did not pay on this CPU (docs/speed.md), so it is opt-in.",
        "channels_last defaults on the CPU (`cnnzoo.speed.policy.channels_last_default`, a table per CPU ISA "
        f"chosen from these measurements and docs/speed.md's A/B runs; this CPU: {m['cpu_capability']}): "
        "inference on for every net above; training on for "
        f"{', '.join(cl_train) or 'none'} and off for the others, where it was slower or no faster. On CUDA "
        "channels_last is on for all.",
    ]
    if d.get("bf16"):
        b = BF16
        lines += [
            "",
            f"### Training in bf16 on this CPU: batch {b['batch_size']}, {b['img_size']}x{b['img_size']}, 10 "
            "classes (not a target; what `cnnzoo train --amp bf16` buys)",
            "",
            "*fp32*: our step as shipped in float32; *bf16*: the same net under `torch.autocast(\"cpu\", "
            "torch.bfloat16)` in channels_last (what the engine does with `--amp bf16`), float32 weights and "
            "fused SGD in both. On CPUs with AMX tile units oneDNN runs bf16 convolutions on them; elsewhere bf16 "
            "is emulated and usually slower, so it is opt-in. The training-accuracy rows above use it.",
            "",
            "| net | fp32 img/s | fp32 format | bf16 img/s | **bf16 / fp32** |",
            "|---|---:|---|---:|---:|",
        ]
        for r in d["bf16"]:
            o, bf = r["ours"], r["extra"]["bf16"]
            lines.append(f"| {r['model']} | {o['images_per_s']:.1f} | "
                         f"{'channels_last' if o['channels_last'] else 'contiguous'} | {bf['images_per_s']:.1f} | "
                         f"**{paired_ratio(bf, o):.2f}** |")
    if "loop" in d:
        lp = d["loop"]
        lines += [
            "",
            f"### Training loop overhead: LeNet-5, one MNIST epoch (target <= {TARGETS['loop']}x)",
            "",
            "`cnnzoo.train` (augmentation on whole batches, metrics accumulated on the device, LR schedule, "
            "bookkeeping; its per-epoch evaluation and checkpoint not counted) against bare forward + backward + "
            f"SGD step on the same, already prepared batches; alternated {len(lp['engine_s_runs'])} times, medians "
            "(`cnnzoo.benchmarking.loop_overhead`).",
            "",
            "| images | batch | engine epoch s | bare loop s | **engine / bare** | <= 1.1 | bare img/s |",
            "|---:|---:|---:|---:|---:|---|---:|",
            f"| {lp['images']} | {lp['batch_size']} | {lp['engine_s']:.2f} | {lp['bare_s']:.2f} | "
            f"**{lp['ratio']:.3f}** | {_mark(lp['ratio'] <= TARGETS['loop'])} | {lp['bare_images_per_s']:.0f} |",
        ]
        fastest = max([lp["bare_images_per_s"]] + [r["ours"]["images_per_s"] for r in d["train"]])
        lines += [
            "",
            f"### In-memory data pipeline (target >= {TARGETS['pipeline']:.0f}x the fastest zoo model's training)",
            "",
            "Epoch plan + per batch of 128: random crop (reflect padding) and flip of the batch's images as "
            "row copies from the data set's crop table (`cnnzoo.data.augment.CropFlipTable`, built once per "
            "run: *table s*), normalise to float32 (`cnnzoo.benchmarking.pipeline_throughput`, the engine's own "
            f"code). The fastest zoo model's training is LeNet-5 on MNIST above: {fastest:.0f} img/s.",
            "",
            "| data set | images/s | epoch s | load s (decode cache) | table s | **x fastest training** | >= 20 |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for p in d["pipeline"]:
            x = p["images_per_s"] / fastest
            table_s = "-" if p.get("table_s") is None else f"{p['table_s']:.2f}"
            lines.append(f"| {p['dataset']} {'x'.join(map(str, p['shape']))} | {p['images_per_s']:.0f} | "
                         f"{p['epoch_s']:.2f} | {p['load_s']:.1f} | {table_s} | **{x:.0f}** | "
                         f"{_mark(x >= TARGETS['pipeline'])} |")
    lines += ["", END]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the speed section between its markers, or append it; other sections stay untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=NETS)
    p.add_argument("--runs", type=int, default=5, help="timed rounds per net (default 5)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, = the cores)")
    p.add_argument("--skip-loop", action="store_true", help="skip the loop-overhead and pipeline figures")
    p.add_argument("--loop-repeats", type=int, default=5, help="engine/bare alternations for the loop overhead")
    p.add_argument("--bf16", action="store_true", help="time bf16 training even on a CPU without bf16 units")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "speed.json"))
    p.add_argument("--dry-run", action="store_true", help="print the section, write nothing")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: rewrite the section from a speed.json this script saved")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: batch 4 at 32x32, 2 runs, nothing written (implies --dry-run)")
    args = p.parse_args(argv)
    if args.quick:
        TRAIN.update(batch_size=4, img_size=32)
        INFER.update(batch_size=4, img_size=32)
        RUNS.clear()
        args.runs, args.dry_run = 2, True
    os.environ.setdefault("CNNZOO_DATA", str((ROOT.parent / "shared" / "data").resolve()))
    os.environ.setdefault("CNNZOO_OFFLINE", "1")
    if args.from_json:
        d = json.loads(Path(args.from_json).read_text())
    else:
        d = run(args)
        given = argv if argv is not None else sys.argv[1:]
        d["command"] = " ".join(["python benchmarks/speed.py", *given])
    section = markdown(d, d.get("command", "python benchmarks/speed.py"))
    if args.dry_run:
        print(section)
        return 0
    if not args.from_json:
        Path(args.json).write_text(json.dumps(d, indent=1) + "\n")
    write_section(Path(args.out), section)
    print(f"wrote {args.out} (speed section) and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
