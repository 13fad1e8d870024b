"""Helpers for the tests that drive the CLI: run ``main`` and check its one-line errors, write a checkpoint
without training, snapshot a folder to prove a command left it as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.training import checkpoint as ck

# One thread: bit-exact equality between two processes needs the same reduction order in every conv.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# The metadata a LeNet-5 trained on the embedded digits would save.
META = {"model": "lenet5", "model_kwargs": {}, "num_classes": 10, "in_chans": 1, "img_size": 32,
        "mean": [0.3055], "std": [0.3237], "classes": [str(i) for i in range(10)], "dataset": "digits",
        "resize": "shorter-side+center-crop", "data_img_size": 32, "data_in_chans": 1}


def cli(argv: list[str]) -> int:
    """``main``'s exit status, argparse's ``SystemExit`` included."""
    try:
        return main(argv)
    except SystemExit as e:
        return 0 if e.code is None else int(e.code)


def one_line(capsys, rc: int, needle: str) -> str:
    """The command failed with status 2 and exactly one line on stderr holding ``needle``, nothing on stdout."""
    out, err = capsys.readouterr()
    err = err.strip()
    assert rc == 2, (rc, out[-500:], err[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert out == "", out[-500:]
    return err


def one_line_error(capsys, needle: str) -> str:
    """stderr holds exactly one line, with ``needle`` and no traceback (the exit status is checked by the caller)."""
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def write_ckpt(root: Path, meta: dict | None = None, weights: dict | None = None) -> Path:
    """A checkpoint written directly (no training: only its consistency matters here)."""
    torch.manual_seed(0)
    if weights is None:
        weights = cnnzoo.create_model("lenet5").state_dict()
    ck.write_checkpoint(root, "best", weights, META if meta is None else meta)
    return root


def nan_weights(sd: dict) -> dict:
    """``sd`` with every floating-point tensor filled with NaN."""
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: its kind and, for regular files, its bytes (symlinks not followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode),
                                           p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p)
                                           if p.is_symlink() else None)
    return out
