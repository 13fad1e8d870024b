"""Checkpoints as input: a pickle never runs code, every edited metadata field or non-finite weight is one
line in predict, eval and export, a checkpoint without mean/std is read alike by all three, a class or
channel count that does not fit is refused on resume and fine-tuning, and a NaN loss names the last good
checkpoint only when there is one."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import load_checkpoint
from helpers import META, cli, nan_weights, one_line, write_ckpt
from helpers import one_line_error as _one_line_error


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: the file appearing would prove code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["pickle", "torch.save"])
def test_code_running_pth_is_refused_at_every_door(tmp_path, capsys, fmt):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    sd = {"features.0.weight": _Evil(marker)}
    if fmt == "pickle":
        bad.write_bytes(pickle.dumps(sd, protocol=2))
    else:  # the zip container torch.save writes, with the same payload inside
        torch.save(sd, bad)
    assert not marker.exists()
    img = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(img)
    assert main(["train", "--model", "lenet5_relu", "--dataset", "digits", "--pretrained", str(bad),
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    _one_line_error(capsys, "refused to load")
    assert main(["eval", str(bad)]) == 2  # a bare .pth has no meta to rebuild the net from: refused unread
    _one_line_error(capsys, "plain PyTorch file")
    assert main(["predict", str(bad), str(img)]) == 2
    capsys.readouterr()
    with pytest.raises(CnnzooError, match="refused to load"):
        load_checkpoint(bad, model=cnnzoo.create_model("lenet5_relu"))
    assert not marker.exists()  # the payload never ran


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
    ("crop zero (published weights' transform)", {"resize": 36, "crop": 0}, None, "'crop' must be a whole number"),
    ("all-NaN weights", {}, nan_weights, "the weights are not finite (NaN or inf in"),
    ("one inf weight", {}, lambda sd: {**sd, "classifier.f6.bias": torch.full_like(sd["classifier.f6.bias"],
                                                                                    float("inf"))},
     "the weights are not finite (NaN or inf in classifier.f6.bias)"),
]


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


def test_predict_eval_export_read_a_checkpoint_without_mean_alike(tmp_path, capsys, png):
    """Class 5: one checkpoint reader: a checkpoint without mean/std gets its named data set's (predict raised
    KeyError: 'mean' where eval and export worked); without a named data set predict says what is missing."""
    run = write_ckpt(tmp_path / "run", meta={k: v for k, v in META.items() if k not in ("mean", "std")})
    assert ck.read_meta(run)["mean"] == [pytest.approx(0.3055, abs=0.05)]
    assert cli(["predict", str(run), str(png)]) == 0, capsys.readouterr().err
    assert cli(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    capsys.readouterr()
    other = write_ckpt(tmp_path / "other", meta={**{k: v for k, v in META.items() if k not in ("mean", "std")},
                                                   "dataset": "folder:/nowhere"})
    one_line(capsys, cli(["predict", str(other), str(png)]), "has no 'mean'/'std'")


def _rgb_folder(root: Path, classes: int, per_class: int = 4) -> Path:
    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            px = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g).numpy()
            Image.fromarray(px).save(root / f"c{c}" / f"{i}.png")
    return root


def test_class_count_changed_since_the_run_is_refused_on_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    data, run = _rgb_folder(tmp_path / "pets", 3), tmp_path / "run"
    base = ["train", "--model", "lenet5_relu", "--dataset", f"folder:{data}", "--out", str(run),
            "--no-progress", "--batch-size", "4"]
    assert main([*base, "--max-steps", "1"]) == 0
    capsys.readouterr()
    _rgb_folder(data, 4)  # a fourth class folder appears
    assert main([*base, "--resume"]) == 2
    _one_line_error(capsys, "was trained with 3 classes but")
    assert ck.read_state(run / "last")[0]["step"] == 1  # the run was left as it was


def test_wrong_channel_count_for_a_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    data = _rgb_folder(tmp_path / "rgb", 2)
    grey = tmp_path / "grey.pth"
    torch.save(cnnzoo.create_model("lenet5_relu", in_chans=1).state_dict(), grey)
    # fine-tuning 1-channel weights on RGB images: the net's channel count comes from the weights
    assert main(["train", "--model", "lenet5_relu", "--dataset", f"folder:{data}", "--pretrained", str(grey),
                 "--out", str(tmp_path / "ft"), "--no-progress"]) == 2
    _one_line_error(capsys, "takes 1-channel images but")
    # loading those weights into a 3-channel net names the mismatching tensor
    with pytest.raises(CnnzooError, match="features.0.weight|wrong shape|does not fit"):
        cnnzoo.load_pretrained(cnnzoo.create_model("lenet5_relu", in_chans=3), grey)


def test_a_nan_loss_names_a_checkpoint_only_when_there_is_one(tmp_path):
    from cnnzoo.training.loop import NonFiniteLossError, check_finite

    with pytest.raises(NonFiniteLossError) as e:
        check_finite(torch.tensor(1), tmp_path, 0, 1e30)
    assert "no checkpoint was saved" in str(e.value) and "starting weights" in str(e.value)
    assert "last good" not in str(e.value)
    write_ckpt(tmp_path)
    ck.write_checkpoint(tmp_path, "last", cnnzoo.create_model("lenet5").state_dict(), META)
    with pytest.raises(NonFiniteLossError, match=f"the last good checkpoint is {tmp_path / 'last'}: lower --lr"):
        check_finite(torch.tensor(12), tmp_path, 1, 1e30)
    ck.write_checkpoint(tmp_path, "last", nan_weights(cnnzoo.create_model("lenet5").state_dict()), META)
    with pytest.raises(NonFiniteLossError, match="holds NaN/inf weights too") as e:  # saved after diverging
        check_finite(torch.tensor(12), tmp_path, 1, 1e30)
    assert "last good" not in str(e.value)


def _digits_run(out, **kw):
    return cnnzoo.train("lenet5", "digits", img_size=28, epochs=2, batch_size=64, train_subset=256, test_subset=128,
                        out=out, save_every_s=None, progress=False, verbose=False, **kw)


def test_state_json_holds_the_resolved_config_and_one_from_before_still_resumes_exactly(tmp_path):
    """state.json's config is the run's resolved config, every derived value filled in (channels, pad, flips,
    normalisation, TTA views); a state.json written before it held them (only the recipe, in_chans and the
    model's kwargs) still resumes to the same weights."""
    import dataclasses
    import json

    from cnnzoo.training.resolved import RunConfig

    full = _digits_run(tmp_path / "full")
    cfg = full.config
    assert (cfg["in_chans"], cfg["img_size"], cfg["pad"], cfg["hflip"], cfg["tta"], cfg["tta_views"]) == \
        (1, 28, 2, False, "flip", "off")  # digits: the recipe's pad, no flips and so no mirrored views
    assert list(cfg["mean"]) == [0.3055] and cfg["weights_source"] is None
    run = RunConfig.from_dict(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.pad = 0  # type: ignore[misc]
    _digits_run(tmp_path / "cut", max_steps=5)  # 4 steps per epoch: stops in the second
    state = tmp_path / "cut" / "last" / "state.json"
    st = json.loads(state.read_text())
    old = {k: v for k, v in st["config"].items() if k not in ("mean", "std", "weights_source", "tta_views")}
    st["config"] = {**old, "hflip": None}  # as written before
    state.write_text(json.dumps(st))
    done = _digits_run(tmp_path / "cut", resume=True)
    assert done.steps == full.steps == 8 and done.config == full.config
    a, b = ck.read_weights(tmp_path / "full" / "last"), ck.read_weights(tmp_path / "cut" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["test_acc"] for h in done.history] == [h["test_acc"] for h in full.history]
