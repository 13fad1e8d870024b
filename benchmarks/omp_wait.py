"""Which OpenMP wait policy the CLI should set: training images/s on a quiet and on a loaded machine.

torch's CPU kernels run on libgomp threads. Between parallel regions they either spin (``ACTIVE``, or
libgomp's default of a bounded spin, ``GOMP_SPINCOUNT`` iterations, before sleeping) or sleep at once
(``PASSIVE``). Spinning saves the wake-up on a quiet machine; on a machine shared with other work a
spinning thread takes the time slice the thread holding the work needs. Each setting runs
``cnnzoo benchmark MODEL --mode train`` in its own process (libgomp reads its settings once, when torch
loads it), interleaved round by round, alone and beside ``--load N`` busy processes (pure-Python loops, one
core each, like another session's job). Report: median images/s per setting and condition.

    python benchmarks/omp_wait.py --rounds 4 --load 0,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# name -> environment: the policy and libgomp's spin count (unset keys are removed from the child's env)
SETTINGS: dict[str, dict[str, str | None]] = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "spin-10k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
    "spin-100k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "100000"},
    "default": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},  # libgomp's own: 300,000 spins
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None},
}
# torch is imported before the CLI's main(), so the child's own environment, not the CLI's default, is what
# libgomp reads
CHILD = "import sys, torch; from cnnzoo.cli import main; sys.exit(main(sys.argv[1:]))"


def one_run(setting: str, model: str, batch: int, size: int, runs: int) -> float:
    """Training images/s of one benchmark process under ``setting``."""
    env = dict(os.environ)
    for k, v in SETTINGS[setting].items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [sys.executable, "-c", CHILD, "benchmark", model, "--mode", "train", "--batch-size", str(batch),
           "--img-size", str(size), "--runs", str(runs), "--no-check", "--format", "json"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    return float(report["results"][0]["ours"]["images_per_s"])


def busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--runs", type=int, default=5, help="timed runs per benchmark process")
    p.add_argument("--rounds", type=int, default=4, help="processes per setting and condition, interleaved")
    p.add_argument("--load", default="0,2", help="comma-separated numbers of busy processes beside it")
    p.add_argument("--settings", default=",".join(SETTINGS))
    a = p.parse_args()
    names = a.settings.split(",")
    results: dict[str, dict[str, list[float]]] = {}
    for load in [int(x) for x in a.load.split(",")]:
        procs = busy(load)
        try:
            for r in range(a.rounds):
                order = names[r % len(names):] + names[:r % len(names)]  # rotate: no setting always first
                for s in order:
                    ips = one_run(s, a.model, a.batch_size, a.img_size, a.runs)
                    results.setdefault(f"load {load}", {}).setdefault(s, []).append(ips)
                    print(f"load {load} round {r} {s}: {ips:.1f} img/s", flush=True)
        finally:
            for q in procs:
                q.kill()
    print("| setting | " + " | ".join(f"{c}: median img/s (runs)" for c in results) + " |")
    print("|---|" + "---|" * len(results))
    for s in names:
        cells = [f"{statistics.median(results[c][s]):.1f} ({', '.join(f'{v:.0f}' for v in results[c][s])})"
                 for c in results]
        print(f"| {s} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
