"""Issue 19, robustness second round: each class of failure fixed where every command passes through it.

Section -> where:
1. a run folder belongs to one run: ``tests/test_rundir.py`` (the lock and the resume/overwrite plan, alone);
2. a checkpoint validated as a whole (``training/ckpt_check.py``): here, every edited field through
   ``predict``, ``eval`` and ``export``, which leaves no file behind;
3. the OS says no (full disk, FIFOs, non-UTF-8 names, a missing ``$CNNZOO_DATA``): here;
4. every command checks its arguments the same way (``cnnzoo.ranges`` flags, one-line argparse errors): here;
5. data sets say what they did (class names matched by name, unique CSV ids, too small to split, val/test): here.
Each case must give exit status 2 and one line on stderr (or a reported skip), and leave nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


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


# ------------------------------------------------------------------- 2. a checkpoint validated as a whole
META = {"model": "lenet5", "model_kwargs": {}, "num_classes": 10, "in_chans": 1, "img_size": 32,
        "mean": [0.3055], "std": [0.3237], "classes": [str(i) for i in range(10)], "dataset": "digits",
        "resize": "shorter-side+center-crop", "data_img_size": 32, "data_in_chans": 1}


def write_ckpt(root: Path, meta: dict | None = None, weights: dict | None = None) -> Path:
    """A checkpoint written directly (no training: only its consistency matters here)."""
    torch.manual_seed(0)
    if weights is None:
        weights = cnnzoo.create_model("lenet5").state_dict()
    ck.write_checkpoint(root, "best", weights, META if meta is None else meta)
    return root


def _nan(sd: dict) -> dict:
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}


# (name, meta changes (None: drop the field), weights transform, words the one line must hold)
BAD_CKPTS = [
    ("fewer class names than outputs", {"classes": ["a", "b", "c"]}, None, "'classes' lists 3 names but"),
    ("class count vs head", {"num_classes": 7, "classes": list("abcdefg")}, None,
     "'num_classes' is 7 (and 7 class names) but the head's weights"),
    ("duplicate class names", {"classes": ["0"] * 10}, None, "'classes' names '0' twice"),
    ("mean as a string", {"mean": "0.5"}, None, "'mean' must be a list of 1 finite numbers"),
    ("mean of the wrong length", {"mean": [0.1, 0.2]}, None, "'mean' must be a list of 1"),
    ("std zero", {"std": [0.0]}, None, "'std' must be a list of 1 positive finite numbers"),
    ("std NaN", {"std": [float("nan")]}, None, "'std'"),
    ("img_size 0", {"img_size": 0}, None, "'img_size' must be a whole number >= 1 (got 0)"),
    ("img_size negative", {"img_size": -32}, None, "'img_size' must be a whole number >= 1 (got -32)"),
    ("img_size below the minimum", {"img_size": 8}, None, "'img_size' is 8, below lenet5's minimum input 28"),
    ("img_size as text", {"img_size": "32"}, None, "'img_size' must be a whole number"),
    ("img_size missing", {"img_size": None}, None, "'img_size' is missing"),
    ("data_img_size 0", {"data_img_size": 0}, None, "'data_img_size' must be"),
    ("in_chans vs the first conv", {"in_chans": 3}, None,
     "'in_chans' is 3 but the first conv's weights (features.c1.weight) take 1 channel(s): set in_chans to 1"),
    ("in_chans zero", {"in_chans": 0}, None, "'in_chans' must be a whole number >= 1"),
    ("unknown model_kwargs", {"model_kwargs": {"bogus": 1}}, None, "'model_kwargs' {'bogus': 1} does not fit"),
    ("model_kwargs not a mapping", {"model_kwargs": "x"}, None, "'model_kwargs' must be a mapping"),
    ("unknown model", {"model": "lenet6"}, None, "'model' names no registered model"),
    ("num_classes as text", {"num_classes": "ten"}, None, "'num_classes' must be a whole number"),
    ("all-NaN weights", {}, _nan, "the weights are not finite (NaN or inf in"),
    ("one inf weight", {}, lambda sd: {**sd, "classifier.f6.bias": torch.full_like(sd["classifier.f6.bias"],
                                                                                    float("inf"))},
     "the weights are not finite (NaN or inf in classifier.f6.bias)"),
]


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "seven.png"
    Image.new("L", (28, 28), 90).save(p)
    return p


@pytest.mark.parametrize("name,change,wt,words", BAD_CKPTS, ids=[c[0] for c in BAD_CKPTS])
def test_an_edited_checkpoint_is_one_line_in_predict_eval_export(tmp_path, capsys, png, name, change, wt,
                                                                  words):
    meta = {k: v for k, v in {**META, **change}.items() if v is not None}
    weights = cnnzoo.create_model("lenet5").state_dict()
    if wt is not None:
        if "f6" in str(words) and "classifier.f6.bias" not in weights:
            pytest.skip("lenet5's head is named differently")
        weights = wt(weights)
    run = write_ckpt(tmp_path / "run", meta, weights)
    before = sorted(os.listdir(run))
    for argv in (["predict", str(run), str(png)], ["eval", str(run)], ["export", str(run)],
                 ["export", str(run), "--format", "torchscript"]):
        err = one_line(capsys, cli(argv), words)
        assert err.startswith(f"cnnzoo {argv[0]}: error: ") and "model.safetensors" in err, err
    assert sorted(os.listdir(run)) == before  # export left no .onnx/.pt and no temp file
    with pytest.raises(CnnzooError, match="checkpoint field|not finite"):
        load_checkpoint(run)


def test_a_consistent_checkpoint_still_loads_and_exports(tmp_path, capsys, png):
    run = write_ckpt(tmp_path / "run")
    model, meta = load_checkpoint(run)
    assert meta["num_classes"] == 10
    assert main(["predict", str(run), str(png)]) == 0
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert (run / "lenet5.pt").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("opset,words", [("99", "the ONNX opset (--opset) must be a whole number in [17, "),
                                         ("16", "must be a whole number in [17, "),
                                         ("0", "--opset: must be a whole number >= 1, got 0")])
def test_export_opset_out_of_range_is_one_line_and_nothing_on_stdout(tmp_path, capsys, opset, words):
    run = write_ckpt(tmp_path / "run")
    one_line(capsys, cli(["export", str(run), "--opset", opset]), words)
    assert not any(n.endswith(".onnx") or n.startswith(".tmp") for n in os.listdir(run))


def test_export_that_fails_verification_leaves_no_file(tmp_path, monkeypatch, capsys):
    from cnnzoo import exporting

    run = write_ckpt(tmp_path / "run")
    monkeypatch.setattr(exporting, "_run_torchscript", lambda path, x: torch.full((3, 10), float("nan")))
    one_line(capsys, cli(["export", str(run), "--format", "torchscript"]), "differs from PyTorch by nan")
    assert sorted(os.listdir(run)) == ["best"]
