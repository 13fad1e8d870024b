"""``train --pretrained``: published weights through the hub path (a pre-filled torch hub cache, no network),
a new head, and the weights' own normalisation stored in the checkpoint; cached files hash- and finite-checked
before use, ``none`` meaning no weights everywhere, and a run folder taken as predict takes it."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import get_model_weights

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.models.hub import published_weights
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import train
from cnnzoo.training.checkpoint import read_meta, read_weights
from helpers import cli, one_line
from helpers import nan_weights as _nan_sd


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Random resnet18 weights cached under the name their own hash gives (the cached file is hash-checked),
    with the weights enum's URL pointed at that name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    name = f"resnet18-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.pth"
    monkeypatch.setattr(get_model_weights("resnet18").DEFAULT.value, "url", f"http://127.0.0.1:9/{name}")
    path = Path(published_weights("resnet18").cache_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue())
    return sd


def test_frozen_backbone_keeps_the_published_weights(tmp_path: Path, hub_cache: dict) -> None:
    out = tmp_path / "run"
    r = train("resnet18", "digits", pretrained="imagenet", freeze_backbone=True, epochs=1, train_subset=64,
              batch_size=32, img_size=32, out=out, progress=False, verbose=False)
    assert r.steps == 2
    w = read_weights(out / "last")
    assert torch.equal(w["conv1.weight"], hub_cache["conv1.weight"])  # loaded, then frozen
    assert w["fc.weight"].shape == (10, 512)  # a new 10-way head
    meta = read_meta(out / "last")
    pw = published_weights("resnet18")
    assert meta["mean"] == list(pw.mean) and meta["std"] == list(pw.std) and meta["in_chans"] == 3


def test_cli_names_the_missing_file_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    rc = main(["train", "--model", "resnet18", "--dataset", "digits", "--pretrained", "imagenet",
               "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and published_weights("resnet18").file_name in err[0]


def test_random_resized_crops_train_deterministically(tmp_path: Path) -> None:
    """--crop-scale: crops of the epoch's seeded boxes, the same run twice, and the fine-tuning recipe's."""
    from cnnzoo.data.batches import epoch_boxes
    from cnnzoo.training.config import resolve

    runs = [train("lenet5_relu", "digits", crop_scale=0.5, epochs=1, train_subset=128, batch_size=32, out=tmp_path / n,
                  progress=False, verbose=False) for n in ("a", "b")]
    assert runs[0].steps == 4 and runs[0].config["crop_scale"] == 0.5
    a, b = read_weights(tmp_path / "a" / "last"), read_weights(tmp_path / "b" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    boxes = epoch_boxes(0, 0, 500, 32, 32, 0.5, torch.device("cpu"))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (32 * 32)
    assert boxes.shape == (500, 4) and area.min() >= 0.45 and area.max() <= 1.0  # whole pixels round the area
    assert resolve({"dataset": "folder:/x", "pretrained": "imagenet"}).crop_scale == 0.08
    assert resolve({"dataset": "folder:/x"}).crop_scale is None


def test_freeze_bn_keeps_the_running_statistics(tmp_path: Path) -> None:
    from cnnzoo.models.factory import create_model

    torch.manual_seed(0)
    start = create_model("resnet20_cifar", num_classes=10, in_chans=1).state_dict()
    train("resnet20_cifar", "digits", freeze_bn=True, epochs=1, train_subset=64, batch_size=32, img_size=8,
          seed=0, out=tmp_path / "f", progress=False, verbose=False)
    w = read_weights(tmp_path / "f" / "last")
    stats = [k for k in w if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(w[k], start[k]) for k in stats)  # untouched, PreciseBN included
    assert not torch.equal(w["conv1.weight"], start["conv1.weight"])  # the weights did train


def test_weights_file_in_chans_come_from_the_first_conv_not_the_first_key(tmp_path: Path) -> None:
    """A safetensors file sorts its keys: GoogLeNet's ``aux1.conv.conv.weight`` (512 inputs) comes before
    ``conv1.conv.weight`` (3). The channel count of a --pretrained file is read from the net's first conv."""
    from safetensors.torch import save_file

    from cnnzoo import create_model
    from cnnzoo.training.resolved import first_conv_in_chans

    net = create_model("googlenet", num_classes=2)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    assert next(k for k in sorted(sd) if sd[k].dim() == 4).startswith("aux1.")
    assert first_conv_in_chans(dict(sorted(sd.items())), "googlenet", {}) == 3
    save_file(sd, tmp_path / "w.safetensors")
    r = train("googlenet", "digits", pretrained=str(tmp_path / "w.safetensors"), epochs=1, train_subset=16,
              test_subset=16, batch_size=16, img_size=32, out=tmp_path / "run", progress=False, verbose=False)
    assert r.steps == 1 and read_meta(tmp_path / "run" / "last")["in_chans"] == 3
    w = read_weights(tmp_path / "run" / "last")
    assert w["conv1.conv.weight"].shape == (64, 3, 7, 7) and w["fc.weight"].shape == (10, 1024)


@pytest.mark.parametrize("word", ["none", "false", "0", "None", " FALSE "])
def test_pretrained_none_means_no_weights_everywhere(word):
    """Class 4: every "does this run start from weights?" reads --pretrained the same way: the whole net
    learns at --lr (not x 0.1), a folder keeps its from-scratch recipe."""
    from cnnzoo.models.hub import parse_pretrained
    from cnnzoo.training.config import recipe_for, resolve
    from cnnzoo.training.setup import param_groups

    cfg = resolve({"model": "lenet5", "dataset": "digits", "pretrained": word})
    assert cfg.pretrained is None and parse_pretrained(word) is None
    groups = param_groups(cnnzoo.create_model("lenet5"), cfg, head=set())
    assert {g["lr"] for g in groups} == {cfg.lr} and all(g["name"].startswith("head") for g in groups)
    folder = resolve({"model": "lenet5", "dataset": "folder:/x", "pretrained": word})
    assert folder.lr == recipe_for("folder:/x")["lr"] != recipe_for("folder:/x", pretrained=True)["lr"]


def _tv_cache(monkeypatch, tmp_path, sd: dict, name: str | None = None) -> Path:
    """``sd`` saved in a torch hub cache as resnet18's published file (``name``: the file name it is saved
    under, default the one its own hash gives), the weights enum's URL pointed at that name."""
    import hashlib
    import io

    from torchvision.models import get_model_weights

    buf = io.BytesIO()
    torch.save(sd, buf)
    name = name or f"resnet18-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    monkeypatch.setattr(get_model_weights("resnet18").DEFAULT.value, "url", f"http://127.0.0.1:9/{name}")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(buf.getvalue())
    return folder / name


def _resnet18_sd(arch: str = "resnet18") -> dict:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(arch).state_dict()


CACHED = [  # (name, cached file maker, words)
    ("random weights under the published name",
     lambda mp, tmp: _tv_cache(mp, tmp, _resnet18_sd(), "resnet18-f37072fd.pth"), "do not match their SHA-256"),
    ("resnet34 weights under resnet18's name",
     lambda mp, tmp: _tv_cache(mp, tmp, _resnet18_sd("resnet34"), "resnet18-f37072fd.pth"),
     "do not match their SHA-256 f37072fd"),
    ("NaN weights whose hash matches their name", lambda mp, tmp: _tv_cache(mp, tmp, _nan_sd(_resnet18_sd())),
     "hold NaN or inf values"),
]


@pytest.mark.parametrize("name,make,words", CACHED, ids=[c[0] for c in CACHED])
def test_cached_weights_are_verified_before_use(tmp_path, monkeypatch, capsys, name, make, words):
    """Class 4: a cached file is hash-checked (torchvision's names carry the SHA-256's first hex digits) and
    finite-checked before use; the one line says which file to delete."""
    path = make(monkeypatch, tmp_path)
    rc = cli(["train", "--model", "resnet18", "--dataset", "digits", "--pretrained", "imagenet", "--epochs", "1",
              "--out", str(tmp_path / "r"), "--no-progress"])
    err = one_line(capsys, rc, words)
    assert f"delete {path}" in err and path.is_file()


def test_pretrained_run_folder_is_taken_as_predict_takes_it(tmp_path, run_dir):
    """Class 4: ``--pretrained RUN_DIR`` and ``RUN_DIR/best`` start from that run's weights."""
    from cnnzoo.models.hub import parse_pretrained
    from cnnzoo.models.pretrained import read_state_dict

    want = ck.read_weights(run_dir / "best")
    for p in (run_dir, run_dir / "best"):
        kind, path = parse_pretrained(str(p))
        sd = read_state_dict(path)
        assert kind == "path" and all(torch.equal(sd[k], v) for k, v in want.items())
    r = cnnzoo.train("lenet5", "digits", pretrained=str(run_dir), epochs=1, max_steps=1, train_subset=32,
                     batch_size=32, out=tmp_path / "ft", progress=False, verbose=False)
    assert r.steps == 1


def test_freeze_backbone_without_weights_and_nan_weights_are_one_line(tmp_path, capsys):
    rc = cli(["train", "--model", "lenet5", "--dataset", "digits", "--freeze-backbone", "--pretrained", "none",
              "--out", str(tmp_path / "r")])
    one_line(capsys, rc, "--freeze-backbone needs --pretrained")
    nan = tmp_path / "nan.safetensors"
    from safetensors.torch import save_file

    save_file(_nan_sd(cnnzoo.create_model("lenet5").state_dict()), str(nan))
    rc = cli(["train", "--model", "lenet5", "--dataset", "digits", "--pretrained", str(nan), "--epochs", "1",
              "--out", str(tmp_path / "r2"), "--no-progress"])
    one_line(capsys, rc, "holds NaN or inf weights")
    assert not (tmp_path / "r2" / "last").exists()
