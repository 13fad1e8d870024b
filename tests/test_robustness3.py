"""Robustness, third round: nothing a user owns is replaced or deleted, and every door checks its input the
same way. One table-driven test per class, each fixed once where every command passes through it:

1. writers (``cnnzoo.utils.files``: ``check_output_path`` + ``atomic_write``): every command's output file;
2. folders cnnzoo does not own (run/compare marker, ``cache --clear``);
3. resume checks its rows against the files, and a changed recipe flag is said;
4. pretrained weights (``none`` means none, cached files verified, run folders accepted);
5. arguments and resources (one value per BatchNorm channel, memory before allocating, devices, the Python API).
Each bad case gives exit status 2 and one line on stderr, and leaves what was there as it was.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import checkpoint as ck
from cnnzoo.utils.files import atomic_write_text, check_output_path

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
    """Exit status 2 and exactly one line on stderr holding ``needle``."""
    out, err = capsys.readouterr()
    err = err.strip()
    assert rc == 2, (rc, out[-500:], err[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


def write_ckpt(root: Path, meta: dict | None = None, weights: dict | None = None) -> Path:
    torch.manual_seed(0)
    ck.write_checkpoint(root, "best", weights or cnnzoo.create_model("lenet5").state_dict(), meta or META)
    return root


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "seven.png"
    Image.new("L", (28, 28), 90).save(p)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_ckpt(tmp_path_factory.mktemp("ck") / "run")


# ------------------------------------------------------------------------------------ 1. writers
def _fifo(p: Path) -> str:
    os.mkfifo(p)
    return "a FIFO"


def _socket(p: Path) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()
    return "a socket"


def _user_file(p: Path) -> str:
    p.write_text("the user's own\n")
    return "already exists and was not written by this cnnzoo run: pass --overwrite"


def _link_to_user_file(p: Path) -> str:
    (p.parent / "theirs.txt").write_text("the user's own\n")
    p.symlink_to(p.parent / "theirs.txt")
    return "(a symlink to"


def _link_to_fifo(p: Path) -> str:
    os.mkfifo(p.parent / "pipe")
    p.symlink_to(p.parent / "pipe")
    return "is a FIFO"


def _folder(p: Path) -> str:
    p.mkdir()
    (p / "keep.txt").write_text("x")
    return "is a folder, not a file name"


def _dangling(p: Path) -> str:
    p.symlink_to(p.parent / "nowhere" / "x")
    return "which does not exist"


HOSTILE = {"fifo": _fifo, "socket": _socket, "user file": _user_file, "symlink to a user file": _link_to_user_file,
           "symlink to a FIFO": _link_to_fifo, "folder": _folder, "dangling symlink": _dangling}


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: its kind and, for regular files, its bytes (symlinks not followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode),
                                           p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p)
                                           if p.is_symlink() else None)
    return out


def _argv(cmd: str, run: Path, png: Path, target: Path) -> list[str]:
    return {"export --out": ["export", str(run), "--out", str(target)],
            "export torchscript": ["export", str(run), "--format", "torchscript", "--out", str(target)],
            "predict --csv": ["predict", str(run), str(png), "--csv", str(target)],
            "erf --out": ["erf", "lenet5", "--n", "1", "--out", str(target)],
            "eval --out": ["eval", str(run), "--out", str(target.parent)]}[cmd]


WRITERS = ["export --out", "export torchscript", "predict --csv", "erf --out", "eval --out"]


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("cmd", WRITERS)
def test_writers_never_replace_what_is_at_the_target(tmp_path, capsys, monkeypatch, run_dir, png, cmd, hostile):
    """Class 1: a device/FIFO/socket/folder or a user's file at an output path is refused in one line before any
    work, and left exactly as it was (nothing else appears there either)."""
    if cmd == "eval --out" and hostile == "folder":
        pytest.skip("eval --out names a folder")
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("eval.json" if cmd == "eval --out" else "result.bin")
    words = HOSTILE[hostile](target)
    before = _snapshot(out)
    import cnnzoo.deploy.inference as inference

    monkeypatch.setattr(inference, "predict", lambda *a, **k: pytest.fail("classified before checking --csv"))
    one_line(capsys, cli(_argv(cmd, run_dir, png, target)), words)
    assert _snapshot(out) == before


@pytest.mark.parametrize("cmd", WRITERS)
def test_overwrite_writes_through_a_symlink_and_keeps_it(tmp_path, capsys, run_dir, png, cmd):
    """With --overwrite a user's file is replaced, and a symlink's target is written: the link stays a link."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("eval.json" if cmd == "eval --out" else "result.bin")
    _link_to_user_file(target)
    if cmd == "erf --out":
        argv = _argv(cmd, run_dir, png, target)[:-1] + [str(target.with_suffix(".png"))]
        target.with_suffix(".png").symlink_to(out / "theirs.txt")
        target = target.with_suffix(".png")
    else:
        argv = _argv(cmd, run_dir, png, target)
    assert cli(argv + ["--overwrite"]) == 0, capsys.readouterr().err
    assert target.is_symlink() and (out / "theirs.txt").read_bytes() != b"the user's own\n"
    assert not list(out.glob(".tmp-*"))


def test_the_same_process_may_rewrite_its_own_file_but_not_a_users(tmp_path):
    """'Written by this run' is the file's identity (device, inode, time, size) as renamed into place: a rewrite
    of it is allowed, a file put there since is not; the replaced file's permissions are kept."""
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    os.chmod(p, 0o600)
    atomic_write_text(p, "two")
    assert p.read_text() == "two" and stat.S_IMODE(p.stat().st_mode) == 0o600
    p.unlink()
    p.write_text("user")
    with pytest.raises(CnnzooError, match="pass --overwrite"):
        check_output_path(p, overwrite=False, what="--out")
    assert p.read_text() == "user"
    with pytest.raises(CnnzooError, match="is empty"):
        check_output_path(" ", overwrite=True, what="--csv")


# ------------------------------------------------------------------------------ 4. pretrained weights
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


def _nan_sd(sd: dict) -> dict:
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}


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


def test_truncated_or_empty_timm_safetensors_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from cnnzoo.models import hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    repo = tmp_path / "hf" / "models--timm--resnet18d.ra2_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for data in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"):
        (snap / "model.safetensors").write_bytes(data)
        with pytest.raises(CnnzooError, match="unreadable") as e:
            cnnzoo.create_model("resnet18d", pretrained=True)
        assert "\n" not in str(e.value) and f"delete {snap / 'model.safetensors'}" in str(e.value)
    assert hub.published_weights("resnet18d").cache_path == repo


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
    ck.write_checkpoint(tmp_path, "last", _nan_sd(cnnzoo.create_model("lenet5").state_dict()), META)
    with pytest.raises(NonFiniteLossError, match="holds NaN/inf weights too") as e:  # saved after diverging
        check_finite(torch.tensor(12), tmp_path, 1, 1e30)
    assert "last good" not in str(e.value)


# ------------------------------------------------------------------------- 5. arguments and resources
@pytest.mark.parametrize("flag", [{"batch_size": 1}, {"train_subset": 1}, {"precise_bn": 1}],
                         ids=["batch-size 1", "train-subset 1", "precise-bn 1"])
def test_batchnorm_with_one_value_per_channel_is_one_line(tmp_path, flag):
    """Class 5: resnet18 at 32 px ends in a 1x1 map, so one image per batch leaves BatchNorm one value per
    channel: one CnnzooError naming the flags (compare records the same line as the reason)."""
    opts = {"batch_size": 16, "train_subset": 32, **flag}
    with pytest.raises(CnnzooError, match="BatchNorm got one value per channel") as e:
        cnnzoo.train("resnet18", "digits", img_size=32, epochs=1, max_steps=1, out=tmp_path / "r", progress=False,
                     verbose=False, **opts)
    assert "\n" not in str(e.value) and "--" + next(iter(flag)).replace("_", "-") in str(e.value)


@pytest.mark.parametrize("argv,words", [
    (["benchmark", "lenet5", "--batch-size", "100000", "--runs", "1"], "--batch-size 100000 at 32x32"),
    (["erf", "resnet18", "--input-size", "3", "4000", "4000", "--out", "{tmp}/e.png"], "--input-size 3 4000 4000"),
])
def test_size_flags_are_checked_against_free_memory_before_allocating(tmp_path, capsys, monkeypatch, argv, words):
    from cnnzoo.utils import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 1 << 30)  # 1 GiB free
    rc = cli([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert "more than the 1.0 GiB free" in one_line(capsys, rc, words)


@pytest.mark.parametrize("argv", [
    ["train", "--model", "lenet5", "--dataset", "digits", "--device", "mps", "--out", "{tmp}/r"],
    ["train", "--model", "lenet5", "--dataset", "digits", "--device", "cuda:7", "--out", "{tmp}/r"],
    ["eval", "{run}", "--device", "xla"],
    ["predict", "{run}", "{png}", "--device", "mps"],
])
def test_only_devices_that_work_here_are_accepted(tmp_path, capsys, run_dir, png, argv):
    if torch.backends.mps.is_available() or torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run_dir)).replace("{png}", str(png))
            for a in argv]
    one_line(capsys, cli(argv), "does not work here: use cpu")
    assert not (tmp_path / "r").exists()


API = [  # (call, words of the one CnnzooError)
    (lambda: cnnzoo.create_model(None), "a model name must be text, got None"),
    (lambda: cnnzoo.create_model(5), "a model name must be text, got 5"),
    (lambda: cnnzoo.model_info(None), "a model name must be text"),
    (lambda: cnnzoo.list_models(5), "list_models takes a shell-style pattern"),
    (lambda: cnnzoo.create_model("lenet5", num_classes=10.5), "num_classes must be a whole number >= 1"),
    (lambda: cnnzoo.create_model("lenet5", num_classes=True), "num_classes must be a whole number >= 1"),
    (lambda: cnnzoo.create_model("lenet5", drop_rate=0.5), "lenet5 takes no argument drop_rate"),
    (lambda: cnnzoo.create_model("resnet18", depth=99), "resnet18 takes no argument depth: its arguments are"),
    (lambda: cnnzoo.create_model("resnet20_cifar", depth=99), "resnet20_cifar cannot be built with depth=99"),
    (lambda: cnnzoo.create_model("lenet5", in_chans=2**40), "GiB of weights, more than the"),
    (lambda: cnnzoo.create_model("resnet18", num_classes=10**9), "GiB of weights, more than the"),
]


@pytest.mark.parametrize("call,words", API, ids=[w for _, w in API])
def test_the_python_api_checks_its_arguments(call, words):
    with pytest.raises(CnnzooError) as e:
        call()
    assert words in str(e.value) and "\n" not in str(e.value)


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


# ---------------------------------------------------------------- 3. resume checks rows against the files
@pytest.fixture(scope="module")
def cmp1(tmp_path_factory) -> Path:
    """A finished one-model comparison (LeNet-5 on digits, one short epoch)."""
    out = tmp_path_factory.mktemp("cmp") / "cmp1"
    cnnzoo.compare(models="lenet5", dataset="digits", epochs=1, train_subset=256, lr=0.002, out=out,
                   progress=False, verbose=False)
    return out


def test_resume_of_a_copied_comparison_points_into_the_copy(cmp1, tmp_path):
    """Class 3: after ``cp -a cmp1 cmp2`` a resume of cmp2 skips the finished model and every path it writes
    (leaderboard, best checkpoint, report) is cmp2's."""
    import json
    import shutil

    cmp2 = tmp_path / "cmp2"
    shutil.copytree(cmp1, cmp2, symlinks=True)
    res = cnnzoo.compare(models="lenet5", dataset="digits", epochs=1, train_subset=256, lr=0.002, out=cmp2,
                         resume=True, progress=False, verbose=False)
    assert res.best["checkpoint"] == str(cmp2 / "models" / "lenet5" / "best")
    text = (cmp2 / "leaderboard.json").read_text() + (cmp2 / "report.html").read_text(errors="replace")
    assert str(cmp1) not in text, "a path into the original folder"
    assert json.loads((cmp2 / "leaderboard.json").read_text())["rows"][0]["epochs_run"] == 1


def test_resume_trains_again_a_model_whose_checkpoint_is_gone(cmp1, tmp_path):
    import shutil

    cmp2 = tmp_path / "cmp2"
    shutil.copytree(cmp1, cmp2, symlinks=True)
    shutil.rmtree(cmp2 / "models" / "lenet5" / "best")
    res = cnnzoo.compare(models="lenet5", dataset="digits", epochs=1, train_subset=256, lr=0.002, out=cmp2,
                         resume=True, progress=False, verbose=False)
    assert res.best is not None and (cmp2 / "models" / "lenet5" / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize("cmd", ["compare", "train"])
def test_a_changed_recipe_flag_on_resume_is_one_line(cmp1, tmp_path, capsys, cmd):
    """Class 3: --resume continues the stored recipe; a different --lr is refused, never silently ignored."""
    import shutil

    cmp2 = tmp_path / "cmp2"
    shutil.copytree(cmp1, cmp2, symlinks=True)
    argv = (["compare", "--models", "lenet5", "--dataset", "digits", "--epochs", "1", "--train-subset", "256",
             "--out", str(cmp2)] if cmd == "compare" else
            ["train", "--model", "lenet5", "--dataset", "digits", "--out", str(cmp2 / "models" / "lenet5")])
    err = one_line(capsys, cli(argv + ["--resume", "--lr", "0.5", "--no-progress"]), "--lr 0.002")
    assert "--lr 0.5 would be ignored" in err


# ------------------------------------------------------------------ 2. folders cnnzoo does not own
def test_cache_clear_removes_only_what_cnnzoo_wrote_or_fetched(tmp_path, monkeypatch, capsys):
    """Class 2: with every cache pointed at folders holding a user's and other libraries' files, --clear all
    removes cnnzoo's decode entries, listing caches and the zoo nets' published weights, and nothing else."""
    user = tmp_path / "mine"
    monkeypatch.setenv("CNNZOO_CACHE", str(user))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    hub_dir, hf = tmp_path / "torch" / "hub" / "checkpoints", tmp_path / "hf"
    ours = [user / "pets-train-224-0123456789abcdef0123.npy", user / "pets-train-224-0123456789abcdef0123.json",
            user / "list-v1.json", user / "rf-v1.json", hub_dir / "resnet18-f37072fd.pth",
            hf / "models--timm--resnet18d.ra2_in1k" / "refs" / "main"]
    theirs = [user / "notes.txt", user / "settings.json", hub_dir / "my_finetune.pth",
              hf / "models--someorg--llm" / "refs" / "main", hf / "models--timm--vit_base_patch16_224.x" / "a"]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert cli(["cache", "--clear", "all"]) == 0
    assert [p for p in ours if p.exists()] == []
    assert all(p.is_file() for p in theirs) and user.is_dir() and hub_dir.is_dir()
    capsys.readouterr()
    one_line(capsys, cli(["cache", "--data-dir", str(tmp_path / "nonexistent")]), "is not a folder")


def test_compare_refuses_a_folder_holding_files_it_did_not_write(tmp_path, capsys):
    """Class 2: a compare folder is recognised by the marker cnnzoo writes (or a leaderboard.json of an older
    version); a folder holding a user's report.html and models/lenet5/result.json is refused, untouched."""
    out = tmp_path / "mine"
    for name in ("report.html", "leaderboard.md", "curves.png", "models/lenet5/result.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("the user's own")
    before = _snapshot(out)
    rc = cli(["compare", "--models", "lenet5", "--dataset", "digits", "--epochs", "1", "--out", str(out),
              "--no-progress"])
    one_line(capsys, rc, "holds files cnnzoo did not write")
    assert _snapshot(out) == before
