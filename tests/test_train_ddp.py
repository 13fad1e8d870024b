"""DDP: a 2-process gloo run (launched with torchrun, as a user would) follows the single-process run with
the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import cnnzoo
from cnnzoo.training import read_meta, train

ARGS = dict(model="lenet5_relu", dataset="digits", epochs=3, batch_size=64, optimizer="sgd", lr=0.1, seed=5,
            warmup_epochs=0)
# the time-to-accuracy options too: the weight average, alternating flips, TTA counts all-reduced
EXTRA = dict(hflip=True, flip="alternate", ema=True, tta="flip-translate")


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    single = train(**ARGS, **EXTRA, train_subset=640, out=tmp_path / "single", device="cpu", progress=False,
                   verbose=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cnnzoo", "train", "--model", ARGS["model"], "--dataset", ARGS["dataset"],
           "--epochs", str(ARGS["epochs"]), "--warmup-epochs", "0", "--optimizer", "sgd",
           "--batch-size", str(ARGS["batch_size"]), "--lr", str(ARGS["lr"]), "--seed", str(ARGS["seed"]),
           "--train-subset", "640", "--device", "cpu", "--out", str(tmp_path / "ddp"), "--no-progress",
           "--hflip", "--flip", "alternate", "--ema", "--tta", "flip-translate"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "x2 processes" in p.stdout and p.stdout.count("training lenet5_relu") == 1  # only rank 0 speaks
    a = load_file(str(tmp_path / "single" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    torch.manual_seed(ARGS["seed"])  # the engine seeds, then builds the model: the same initial weights
    init = cnnzoo.create_model("lenet5_relu").state_dict()
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    # same data, order and augmentation per global batch: only float summation order differs (gradients are
    # averaged over the two halves of each batch), which grows to a few 1e-4 over 30 steps at lr 0.1
    assert diff < 0.01 * moved, (diff, moved)
    assert read_meta(tmp_path / "ddp" / "last")["step"] == single.steps == 30
    ea = load_file(str(tmp_path / "single" / "last" / "state.safetensors"))
    eb = load_file(str(tmp_path / "ddp" / "last" / "state.safetensors"))
    ema_keys = [k for k in ea if k.startswith("ema.")]
    assert len(ema_keys) == len(a) and max((ea[k] - eb[k]).abs().max().item() for k in ema_keys) < 0.01 * moved
    assert single.final_acc > 0.3  # it really trained in its 30 steps (chance: 0.1)

    hist = [json.loads(s) for s in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    for h, g in zip(hist, single.history, strict=True):  # metrics all-reduced over both ranks
        assert abs(h["test_acc"] - g["test_acc"]) < 0.01 and abs(h["train_loss"] - g["train_loss"]) < 1e-3
        assert abs(h["test_acc_tta"] - g["test_acc_tta"]) < 0.01 and abs(h["ema_acc_tta"] - g["ema_acc_tta"]) < 0.01
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "ddp").iterdir())
