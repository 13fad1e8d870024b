"""Big photo folders: first-run decode speed and memory, cached start, and training from the memory map.

For each folder size it makes a synthetic folder (``make_photo_folder.py``) if absent, then runs each stage in
a fresh process while sampling ``/proc/PID/status`` of that process and its children every 0.1 s:

- ``decode``: load the training split into an empty cache (decode, cache write, pixel statistics);
- ``cached``: the same load again (the cache is memory-mapped);
- ``train``: ``cnnzoo train --model resnet18 --dataset folder:... --max-steps N`` end to end;
- ``steps``: training steps of the same net from the memory-mapped set and from an in-RAM copy of the same
  images, interleaved (the data path's cost).

It prints one JSON line per stage (peak anonymous memory of the process tree as the sum of ``Pss_Anon``, which
splits pages that forked workers share, the main process's peak resident set ``VmHWM``, which also counts the
memory-mapped cache's pages, wall seconds, images/s) and appends them to ``--json``.

    python benchmarks/big_folder.py --images 10000 40000 --img-size 224 --work /tmp/cnnzoo-big
    python benchmarks/big_folder.py --images 2000 --python OLD_CHECKOUT/.venv/bin/python --stages decode
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

DECODE = """
import os, sys, time
from cnnzoo.data import load_dataset
t = time.perf_counter()
ds = load_dataset("folder:" + sys.argv[1], "train", img_size=int(sys.argv[2]))
print("RESULT", len(ds), time.perf_counter() - t, ds.mean, flush=True)
"""

STEPS = """
import sys, time, torch
from cnnzoo import create_model
from cnnzoo.data import load_dataset
from cnnzoo.data.batches import BatchPrep
ds = load_dataset("folder:" + sys.argv[1], "train", img_size=int(sys.argv[2]))
steps, batch, n = int(sys.argv[3]), 8, min(1024, len(ds))
ram = ds.subset(torch.arange(n)).images.clone()
mapped = ds.images[:n]
net = create_model("resnet18", num_classes=ds.num_classes)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
prep = BatchPrep(ds, ds.img_size, 3, torch.device("cpu"), 28, True, False, ds.mean, ds.std)
g = torch.Generator().manual_seed(0)
def run(images):
    t = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        z = torch.zeros(batch, dtype=torch.long)
        x = prep.sample(images, idx, z + 28, z + 28, torch.rand(batch, generator=g) < 0.5)
        loss = torch.nn.functional.cross_entropy(net(x), ds.labels[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    return steps * batch / (time.perf_counter() - t)
net.train(); run(ram)  # warm-up
rates = {"mapped": [], "ram": []}
for _ in range(3):
    rates["mapped"].append(run(mapped)); rates["ram"].append(run(ram))
print("RESULT", rates, flush=True)
"""


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def _status_kb(pid: int, key: str, file: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_sampled(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``, sampling the peak anonymous memory of its process tree and its own peak RSS."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_anon = peak_hwm = 0
    while p.poll() is None:
        # proportional shares: forked decode workers share the parent's pages copy-on-write
        peak_anon = max(peak_anon, sum(_status_kb(q, "Pss_Anon", "smaps_rollup") for q in _tree(p.pid)))
        peak_hwm = max(peak_hwm, _status_kb(p.pid, "VmHWM"))
        time.sleep(0.1)
    out = p.stdout.read() if p.stdout else ""
    res = next((ln for ln in out.splitlines() if ln.startswith("RESULT")), None)
    return {"rc": p.returncode, "wall_s": round(time.perf_counter() - t, 1), "peak_anon_mb": peak_anon // 1024,
            "peak_rss_mb": peak_hwm // 1024, "result": res, "tail": out[-400:] if p.returncode else ""}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[10000])
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnzoo-big")
    ap.add_argument("--python", default=sys.executable, help="the interpreter (a venv) of the code to measure")
    ap.add_argument("--stages", nargs="+", default=["decode", "cached", "train", "steps"])
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    for n in a.images:
        folder = a.work / f"photos-{n}"
        if not (folder / "val").is_dir():
            subprocess.run([sys.executable, str(HERE / "make_photo_folder.py"), str(folder), "--images", str(n)],
                           check=True)
        cache = a.work / f"cache-{n}"
        env = {**os.environ, "CNNZOO_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
        for stage in a.stages:
            if stage == "decode":
                shutil.rmtree(cache, ignore_errors=True)
            if stage in ("decode", "cached"):
                cmd = [a.python, "-c", DECODE, str(folder), str(a.img_size)]
            elif stage == "train":
                out = a.work / f"run-{n}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [a.python, "-m", "cnnzoo", "train", "--model", "resnet18", "--dataset", f"folder:{folder}",
                       "--img-size", str(a.img_size), "--max-steps", str(a.train_steps), "--batch-size", "8",
                       "--test-subset", "64", "--out", str(out), "--no-progress"]
            else:
                cmd = [a.python, "-c", STEPS, str(folder), str(a.img_size), str(a.train_steps)]
            r = run_sampled(cmd, env)
            row = {"images": n, "img_size": a.img_size, "stage": stage, **r}
            if stage == "decode" and r["result"]:
                _, count, secs, _ = r["result"].split(" ", 3)
                row["decode_img_s"] = round(int(count) / float(secs), 1)
                row["cache_mb"] = sum(f.stat().st_size for f in cache.rglob("*.npy")) // (1 << 20)
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
