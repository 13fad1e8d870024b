"""Time to accuracy: images seen (epochs) and wall time until held-out top-1 first reaches a target.

Each row is (name, target top-1 %, ``cnnzoo train`` arguments); each variant adds its own arguments
(``before``: the time-to-accuracy options off, as the recipes were before them; ``defaults``: as they are;
``all``: test-time flip-translate, the weight average and alternating flips on). Every run is its own
``cnnzoo train`` process writing ``OUT/ROW/VARIANT``; the numbers are read from its ``metrics.jsonl``: the
first evaluation whose score (``score``: the top-1 best/ is chosen by, TTA or the weight average where on;
else ``test_acc``) reaches the target, its images seen and the run's clock there (``time_s``: data loading,
training, evaluations and checkpoints so far). Compare variants as ratios measured in one sitting on one
machine, not as absolute times.

    python benchmarks/time_to_accuracy.py --list
    python benchmarks/time_to_accuracy.py --rows lenet5-mnist          # every variant
    python benchmarks/time_to_accuracy.py --rows lenet5-mnist --variants before,all --table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# name -> (target top-1 %, cnnzoo train arguments); the targets are the issue's
ROWS: dict[str, tuple[float, list[str]]] = {
    "lenet5-mnist": (99.2, ["--model", "lenet5", "--dataset", "mnist", "--epochs", "3"]),
    "lenet5-fashion-mnist": (91.0, ["--model", "lenet5", "--dataset", "fashion-mnist", "--epochs", "30"]),
    "resnet20-cifar10": (88.0, ["--model", "resnet20_cifar", "--dataset", "cifar10", "--epochs", "20"]),
    "resnet18-fashion-mnist": (94.0, ["--model", "resnet18_cifar", "--dataset", "fashion-mnist", "--epochs", "6",
                                      "--amp", "bf16"]),
    "resnet18-cifar10": (90.0, ["--model", "resnet18_cifar", "--dataset", "cifar10", "--epochs", "12",
                                "--amp", "bf16"]),
}
# variant -> extra arguments: the techniques off, the defaults, all of them on
VARIANTS: dict[str, list[str]] = {
    "before": ["--tta", "off", "--flip", "random"],
    "defaults": [],
    "all": ["--tta", "flip-translate", "--ema", "--flip", "alternate"],
    # one run that scores three ways: plain weights (= before where the flips are unchanged), the default TTA,
    # and the weight average with it
    "defaults+ema": ["--ema"],
    # the architecture-neutral short-run settings together, in bf16 where the CPU has bf16 units
    "short": ["--amp", "bf16", "--tta", "flip-translate", "--flip", "alternate", "--schedule", "linear"],
    # ... with 2 px crops (airbench's translate), less augmentation for a net that underfits a short run
    "short-pad2": ["--amp", "bf16", "--tta", "flip-translate", "--flip", "alternate", "--schedule", "linear",
                   "--pad", "2"],
    # the defaults in bf16: bf16's accuracy against the float32 run of the same recipe (defaults+ema)
    "defaults-bf16": ["--amp", "bf16"],
}
# metrics.jsonl keys a run is scored by, each on its own where the run recorded it
SCORES = ("test_acc", "test_acc_tta", "ema_acc", "ema_acc_tta")


def first_reaching(history: list[dict], target: float, train_images: int, key: str = "score") -> dict | None:
    """The first evaluation whose ``key`` (default: the score best/ is chosen by) reaches ``target`` (a
    fraction): epoch, images seen, seconds."""
    for h in history:
        acc = h.get(key, h["test_acc"])
        if acc >= target:
            seen = h.get("images_seen") or round(h["epoch"] * train_images)
            return {"epoch": h["epoch"], "images_seen": seen, "epochs_seen": round(seen / max(train_images, 1), 3),
                    "time_s": h.get("time_s"), "top1": acc}
    return None


def run_row(name: str, variant: str, out: Path, force: bool) -> dict:
    """Train one row's variant (its own process) and read when it first reached the target."""
    target, args = ROWS[name]
    rdir = out / name / variant
    cmd = [sys.executable, "-m", "cnnzoo", "train", *args, *VARIANTS[variant], "--out", str(rdir), "--no-progress"]
    cmd.append("--overwrite" if force else "--resume")
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)
    result = json.loads((rdir / "result.json").read_text())
    n = int(result["extra"]["train_images"])
    history = [json.loads(s) for s in (rdir / "metrics.jsonl").read_text().splitlines() if s.strip()]
    hit = first_reaching(history, target / 100, n)
    last = history[-1]
    by = {k: first_reaching(history, target / 100, n, k) for k in SCORES if k in last}
    return {"reached_by": by, "final_by": {k: last[k] for k in SCORES if k in last},
            "row": name, "variant": variant, "target": target, "command": " ".join(["cnnzoo", *cmd[3:-4]]),
            "reached": hit, "final_score": last.get("score", last["test_acc"]), "final_plain": last["test_acc"],
            "total_s": result["train_time_s"], "epochs": len(history), "tta": result.get("tta"),
            "best_weights": result.get("best_weights")}


def table(results: list[dict]) -> str:
    lines = ["| row | variant | target | reached at (epoch, images) | wall time to target | final top-1 "
             "(scored / plain) | run wall time |", "|---|---|---|---|---|---|---|"]
    for r in results:
        hit = r["reached"]
        at = f"epoch {hit['epoch']} ({hit['images_seen']:,} img)" if hit else f"not in {r['epochs']} epochs"
        t = f"{hit['time_s']:.1f} s" if hit and hit.get("time_s") is not None else "-"
        lines.append(f"| {r['row']} | {r['variant']} | {r['target']} % | {at} | {t} | "
                     f"{100 * r['final_score']:.2f} / {100 * r['final_plain']:.2f} % | {r['total_s']:.1f} s |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names (default: all)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: before, defaults, all")
    p.add_argument("--out", default="runs/time-to-accuracy", help="run folders and results.json")
    p.add_argument("--force", action="store_true", help="train again instead of resuming finished runs")
    p.add_argument("--list", action="store_true", help="show the rows and variants")
    p.add_argument("--table", action="store_true", help="print the Markdown table of the results")
    a = p.parse_args()
    if a.list:
        for name, (target, args) in ROWS.items():
            print(f"{name}: >= {target} %: cnnzoo train {' '.join(args)}")
        for v, extra in VARIANTS.items():
            print(f"variant {v}: {' '.join(extra) or '(the defaults)'}")
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else []
    for name in [s for s in a.rows.split(",") if s]:
        if name not in ROWS:
            p.error(f"unknown row {name!r}: use one of {', '.join(ROWS)}")
        for v in [s for s in a.variants.split(",") if s]:
            if v not in VARIANTS:
                p.error(f"unknown variant {v!r}: use one of {', '.join(VARIANTS)}")
            r = run_row(name, v, out, a.force)
            results = [x for x in results if (x["row"], x["variant"]) != (name, v)] + [r]
            tmp = store.with_name(f".tmp-{os.getpid()}-{store.name}")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, store)
            print(json.dumps(r), flush=True)
    if a.table:
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
