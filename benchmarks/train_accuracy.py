"""Training-accuracy benchmark: the BENCHMARKS.md table (not a test; long runs).

Each row is one ``cnnzoo train`` command, run as its own process so the command in the table is exactly
what was measured. The table's wall time is the run's own clock (``train_time_s``: data loading,
training, per-epoch evaluation, checkpoints; not the interpreter start). Runs are resumable: re-running a
row continues its run folder (``--resume``), so with ``--budget-minutes`` a long row is done in pieces and
the clock adds the pieces up.

    python benchmarks/train_accuracy.py                      # every row
    python benchmarks/train_accuracy.py --rows lenet5-mnist  # one row
    python benchmarks/train_accuracy.py --list
    python benchmarks/train_accuracy.py --rows ichallenge-alexnet,ichallenge-googlenet  # from the repo root

The iChallenge-PM rows read ``../shared/data/ichallenge-pm`` relative to the working directory: run them
from the project's root.

Results go to ``OUT/results.json`` (one entry per row) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cnnzoo.speed.policy import EMULATED_BF16, cpu_has_bf16_matmul

# name -> (target top-1 %, cnnzoo train arguments). Targets are the issue's; never lowered.
ROWS: dict[str, tuple[float, list[str]]] = {
    "lenet5-mnist": (99.0, ["--model", "lenet5", "--dataset", "mnist", "--epochs", "12", "--batch-size", "128",
                              "--lr", "0.1"]),
    # LeNet-5's 60k parameters underfit Fashion-MNIST: no random crops and no label smoothing here (flips
    # stay); with the recipe's crops and smoothing it ends at 90.6 % (BENCHMARKS.md)
    "lenet5-fashion-mnist": (91.0, ["--model", "lenet5", "--dataset", "fashion-mnist", "--epochs", "30",
                                    "--lr", "0.1", "--pad", "0", "--label-smoothing", "0"]),
    # the best small-image ResNet of the zoo (ResNet-18 with a 3x3 stem, 11.2M params) in bf16 autocast: on
    # an AMX Xeon it trains 2.66x faster than in float32, on an AVX512-BF16 Zen 4 1.9x (BENCHMARKS.md,
    # docs/speed.md), which is what makes these rows fit in one to four hours. ResNet-20 in float32 reached
    # 88.05 % on CIFAR-10 after 40 epochs (88.6 min); ResNet-18 after 15 epochs 89.36 % (66.6 min), so
    # CIFAR-10 gets 25
    "resnet18-fashion-mnist": (94.0, ["--model", "resnet18_cifar", "--dataset", "fashion-mnist",
                                      "--epochs", "12", "--amp", "bf16"]),
    "resnet18-cifar10": (90.0, ["--model", "resnet18_cifar", "--dataset", "cifar10", "--epochs", "25",
                                "--amp", "bf16"]),
}

# iChallenge-PM (400 train / 400 official validation fundus photos at 224 px, binary), run from the repo
# root. The course's recipe: from scratch, 5 epochs, SGD momentum 0.9, lr 1e-3, weight decay 1e-3, batch 10,
# constant LR, no augmentation; targets are the course's reported validation accuracies.
ICHALLENGE = "folder:../shared/data/ichallenge-pm"
COURSE_RECIPE = ["--dataset", ICHALLENGE, "--img-size", "224", "--epochs", "5", "--batch-size", "10",
                 "--optimizer", "sgd", "--lr", "0.001", "--weight-decay", "0.001", "--schedule", "constant",
                 "--warmup-epochs", "0", "--label-smoothing", "0", "--pad", "0", "--no-hflip"]
COURSE_TARGETS = {"alexnet": 94.0, "vgg16": 94.0, "googlenet": 95.0, "resnet50": 95.0}
# AlexNet has no initialisation of its own (PyTorch's per-layer default, as torchvision): under this recipe
# its logits start ~1000x smaller than with the course framework's (Paddle's) defaults and it never leaves
# "all pm"; --init course gives it Paddle's He-normal convs and Xavier linears (BENCHMARKS.md). The other
# three nets keep their own (torchvision's) initialisation.
for _net, _target in COURSE_TARGETS.items():
    ROWS[f"ichallenge-{_net}"] = (_target, ["--model", _net, *COURSE_RECIPE,
                                            *(["--init", "course"] if _net == "alexnet" else [])])
# The same recipe with the evaluation's BatchNorm statistics recomputed over all 400 training images before
# each evaluation (--precise-bn 400): at batch 10 and a constant LR the running averages lag the weights and
# GoogLeNet's and ResNet-50's per-epoch scores swing (BENCHMARKS.md). Training itself is unchanged.
for _net in ("googlenet", "resnet50"):
    ROWS[f"ichallenge-{_net}-precise-bn"] = (COURSE_TARGETS[_net], [*ROWS[f"ichallenge-{_net}"][1],
                                                                     "--precise-bn", "400"])
# VGG-16 and ResNet-50 with the course framework's initialisation (He-normal fan-in convs, Xavier linears)
# instead of their own (torchvision's): does the init explain the course's figures?
for _net in ("vgg16", "resnet50"):
    ROWS[f"ichallenge-{_net}-course-init"] = (COURSE_TARGETS[_net],
                                              [*ROWS[f"ichallenge-{_net}"][1], "--init", "course"])
# How far one seed's last epoch is from another's on 400 validation images (AlexNet: 3 min a run)
for _seed in (1, 2):
    ROWS[f"ichallenge-alexnet-seed{_seed}"] = (COURSE_TARGETS["alexnet"], [*ROWS["ichallenge-alexnet"][1],
                                                                           "--seed", str(_seed)])
for _net in ("vgg16", "resnet50"):
    ROWS[f"ichallenge-{_net}-seed1"] = (COURSE_TARGETS[_net], [*ROWS[f"ichallenge-{_net}"][1], "--seed", "1"])
# cnnzoo's own `folder` recipe (AdamW lr 1e-3, wd 0.05, cosine, warm-up, label smoothing, crops + flips,
# 10 epochs, batch 32) on the same nets, held to the same figures
for _net, _target in COURSE_TARGETS.items():
    ROWS[f"ichallenge-folder-{_net}"] = (_target, ["--model", _net, "--dataset", ICHALLENGE, "--img-size", "224",
                                                   "--epochs", "10"])


def run_row(name: str, out: Path, threads: int | None, force: bool = False,
            budget_min: float | None = None) -> dict:
    target, args = ROWS[name]
    run_dir = out / name
    prev = {} if force else _load(out).get(name, {})
    partial = prev.get("status") == "partial"
    earlier_s = float(prev.get("wall_s_total", 0.0)) if partial else 0.0
    cmd = [sys.executable, "-m", "cnnzoo", "train", *args, "--out", str(run_dir),
           "--overwrite" if force else "--resume", "--no-progress", "--format", "json"]
    if budget_min:  # the engine's budget counts the run's earlier segments too
        done_s = float(prev.get("train_time_s") or 0.0) if partial else 0.0
        cmd += ["--time-budget", str(done_s + 60 * budget_min)]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    entry = {"row": name, "target": target, "command": "cnnzoo train " + " ".join(args),
             "wall_s": round(wall, 1), "wall_s_total": round(earlier_s + wall, 1), "threads": threads,
             "cpu": _cpu(), "finished": time.strftime("%Y-%m-%d %H:%M")}
    if p.returncode != 0:
        entry.update(status="partial" if (run_dir / "last").exists() else "failed",
                     error=(p.stderr.strip().splitlines() or ["?"])[-1])
    else:
        r = json.loads(p.stdout)
        entry.update(status="partial" if r["stopped"] else "done", best_acc=round(100 * r["best_acc"], 2),
                     final_acc=round(100 * r["final_acc"], 2), best_epoch=r["best_epoch"],
                     epochs=r["epochs_run"], train_time_s=r["train_time_s"],
                     train_images_per_s=r["train_images_per_s"], params=r["params"],
                     reached=100 * r["final_acc"] >= target, stopped=r["stopped"],
                     per_epoch=[round(100 * h["test_acc"], 2) for h in r.get("history", [])])
    data = _load(out)
    data[name] = entry
    (out / "results.json").write_text(json.dumps(data, indent=1))
    return entry


def _bf16_emulated() -> bool:
    """Whether ``--amp bf16`` would run emulated here: no GPU and no AMX/AVX512-BF16 in the CPU."""
    import torch

    return not torch.cuda.is_available() and not cpu_has_bf16_matmul()


def _cli_has(flag: str) -> bool:
    """Whether ``cnnzoo train`` takes ``flag`` (rows that need an option not wired yet are skipped, not failed)."""
    p = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--help"], capture_output=True, text=True)
    return flag in p.stdout


def _load(out: Path) -> dict:
    f = out / "results.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def markdown(data: dict) -> str:
    lines = ["| row | command | target | final top-1 | best top-1 (epoch) | wall time | train img/s |",
             "|---|---|---|---|---|---|---|"]
    for name in ROWS:
        e = data.get(name)
        if not e:
            lines.append(f"| {name} | `cnnzoo train {' '.join(ROWS[name][1])}` | >= {ROWS[name][0]}% | "
                         "not run | | | |")
            continue
        if e["status"] == "failed" or "final_acc" not in e:
            lines.append(f"| {name} | `{e['command']}` | >= {e['target']}% | {e['status']}: "
                         f"{e.get('error', '')} | | {e['wall_s_total'] / 60:.1f} min | |")
            continue
        total_epochs = int(ROWS[name][1][ROWS[name][1].index("--epochs") + 1])
        if e["status"] == "partial":
            mark = f" after {e['epochs']}/{total_epochs} epochs (unfinished)"
        else:
            mark = "" if e["reached"] else " (below target)"
        lines.append(f"| {name} | `{e['command']}` | >= {e['target']}% | **{e['final_acc']:.2f}%**{mark} | "
                     f"{e['best_acc']:.2f}% ({e['best_epoch']}) | {e['train_time_s'] / 60:.1f} min | "
                     f"{e['train_images_per_s']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    ap.add_argument("--out", default="runs/bench-train", help="run folders and results.json")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    ap.add_argument("--force", action="store_true", help="run finished rows again from scratch")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="stop each row after the epoch that crosses this many more minutes (resumable)")
    ap.add_argument("--emulated-bf16", action="store_true",
                    help="run the bf16 rows even on a CPU without bf16 units (emulated: days, not hours)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the table of stored results and exit")
    a = ap.parse_args()
    out = Path(a.out)
    if a.list:
        for k, (target, args) in ROWS.items():
            print(f"{k:24s} >= {target}%  cnnzoo train {' '.join(args)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not a.table:
        for name in [r.strip() for r in a.rows.split(",") if r.strip()]:
            if name not in ROWS:
                print(f"unknown row {name!r}; --list shows them", file=sys.stderr)
                return 2
            if _load(out).get(name, {}).get("status") == "done" and not a.force:
                print(f"{name}: done already (--force runs it again)", flush=True)
                continue
            if "--init" in ROWS[name][1] and not _cli_has("--init"):
                print(f"{name}: skipped: this cnnzoo's `train` has no --init yet", file=sys.stderr, flush=True)
                continue
            if "bf16" in ROWS[name][1] and _bf16_emulated() and not a.emulated_bf16:
                print(f"{name}: skipped: {EMULATED_BF16} (this row was sized for a CPU with AMX or a GPU; "
                      "--emulated-bf16 runs it anyway)", file=sys.stderr, flush=True)
                continue
            e = run_row(name, out, a.threads, a.force, a.budget_minutes)
            print(json.dumps(e), flush=True)
    print(markdown(_load(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
