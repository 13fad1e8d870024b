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
    import cnnzoo.inference as inference

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
