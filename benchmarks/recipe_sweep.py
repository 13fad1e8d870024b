"""A short-run recipe sweep: held-out top-1 after each epoch of ``cnnzoo.train`` for recipe variants and seeds.

Each variant is a set of :class:`~cnnzoo.training.config.TrainConfig` overrides on top of the data set's recipe
(``base``: none). One JSON line per (variant, seed) is appended to ``--out``; finished ones are skipped, so
the sweep resumes. Accuracy does not depend on the machine's load (only wall time does), so variants can run
on a shared machine; compare their top-1, not their seconds.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/recipe_sweep.py --seeds 0 --variants base,wu0.25,b128lr0.2
    python benchmarks/recipe_sweep.py --table
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# name -> overrides of the recipe (LeNet-5 on MNIST, 3 epochs: the time-to-accuracy row's default command)
VARIANTS: dict[str, dict] = {
    "base": {},
    "wu0.25": dict(warmup_epochs=0.25),
    "linear": dict(schedule="linear"),
    "lr0.1": dict(lr=0.1),
    "b64lr0.1": dict(batch_size=64, lr=0.1),
    "b128lr0.2": dict(batch_size=128, lr=0.2),
    "b128lr0.2wu0.25": dict(batch_size=128, lr=0.2, warmup_epochs=0.25),
    "b128lr0.4": dict(batch_size=128, lr=0.4),
    "b16lr0.03": dict(batch_size=16, lr=0.03),
    "b64lr0.1wu0.25lin": dict(batch_size=64, lr=0.1, warmup_epochs=0.25, schedule="linear"),
    "ls0": dict(label_smoothing=0.0),
    "ls0.2": dict(label_smoothing=0.2),
    "pad0": dict(pad=0),
    "pad1": dict(pad=1),
    "pad3": dict(pad=3),
    "adamw": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05),
    "adamw-b128": dict(optimizer="adamw", lr=4e-3, weight_decay=0.05, batch_size=128),
    "ema": dict(ema=True),
    "b128lr0.2ema": dict(batch_size=128, lr=0.2, ema=True),
    "wu0.25ema": dict(warmup_epochs=0.25, ema=True),
    "tta": dict(tta="flip-translate"),
    "b128lr0.2tta": dict(batch_size=128, lr=0.2, tta="flip-translate"),
}


def run(model: str, dataset: str, epochs: int, variant: str, seed: int, data_dir: str | None) -> dict:
    """One training run; its per-epoch plain top-1 (and TTA's and the weight average's where on), in %."""
    import cnnzoo

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = cnnzoo.train(model, dataset, epochs=epochs, seed=seed, out=Path(tmp) / "run", data_dir=data_dir,
                           progress=False, verbose=False, **VARIANTS[variant])
    curve = {k: [round(100 * h[k], 2) for h in res.history]
             for k in ("test_acc", "test_acc_tta", "ema_acc") if k in res.history[-1]}
    return {"model": model, "dataset": dataset, "epochs": epochs, "variant": variant, "seed": seed,
            "overrides": VARIANTS[variant], "top1": curve, "wall_s": round(time.perf_counter() - t, 1)}


def _cell(top1: dict[str, list[float]]) -> str:
    """Plain top-1 per epoch, then TTA's and the weight average's where the run had them."""
    names = {"test_acc_tta": "TTA", "ema_acc": "average"}
    extra = [f"{names[k]} {' / '.join(f'{a:.2f}' for a in v)}" for k, v in top1.items() if k in names]
    return " / ".join(f"{a:.2f}" for a in top1["test_acc"]) + (f" ({'; '.join(extra)})" if extra else "")


def table(rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = ["| variant | overrides | " + " | ".join(f"seed {s}: top-1 per epoch" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for v in VARIANTS:
        mine = {r["seed"]: r for r in rows if r["variant"] == v}
        if mine:
            cells = [_cell(mine[s]["top1"]) if s in mine else "-" for s in seeds]
            over = ", ".join(f"{k}={val}" for k, val in VARIANTS[v].items()) or "(the recipe)"
            lines.append(f"| {v} | {over} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet5")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/recipe-sweep.jsonl", help="results, one JSON line per run (appended)")
    p.add_argument("--table", action="store_true", help="print the Markdown table of --out and stop")
    a = p.parse_args()
    out = Path(a.out)
    rows = [json.loads(s) for s in out.read_text().splitlines() if s.strip()] if out.is_file() else []
    if a.table:
        print(table([r for r in rows if (r["model"], r["dataset"], r["epochs"]) == (a.model, a.dataset, a.epochs)]))
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["model"], r["dataset"], r["epochs"], r["variant"], r["seed"]) for r in rows}
    for seed in [int(s) for s in a.seeds.split(",")]:
        for v in a.variants.split(","):
            if v not in VARIANTS:
                p.error(f"unknown variant {v!r}: use one of {', '.join(VARIANTS)}")
            if (a.model, a.dataset, a.epochs, v, seed) in done:
                continue
            r = run(a.model, a.dataset, a.epochs, v, seed, a.data_dir)
            print(json.dumps(r), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
