"""Output paths: every command's writer refuses to replace what a user owns (a device, FIFO, socket, folder
or someone else's file) unless ``--overwrite`` says so, and a full disk, a failed export or an unwritable
``--out`` gives one line on stderr and leaves no partial file behind."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import load_checkpoint
from cnnzoo.utils.files import atomic_write_text, check_output_path
from helpers import META, cli, one_line, write_ckpt
from helpers import one_line_error as _one_line_error
from helpers import snapshot as _snapshot


def test_unwritable_output_fails_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    from cnnzoo.training import setup

    def no_data(*a, **k):
        raise AssertionError("data loading started before the output folder was checked")

    monkeypatch.setattr(setup, "load_dataset", no_data)
    monkeypatch.setattr(setup, "dataset_info", no_data)
    (tmp_path / "a-file").write_text("x")
    for out in ["/proc/cnnzoo-run", str(tmp_path / "a-file"), str(tmp_path / "a-file" / "run")]:
        assert main(["train", "--model", "lenet5", "--dataset", "digits", "--out", out]) == 2, out
        _one_line_error(capsys, "cannot write to output directory")


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


def test_export_that_fails_verification_leaves_no_file(tmp_path, monkeypatch, capsys):
    from cnnzoo.deploy import exporting

    run = write_ckpt(tmp_path / "run")
    monkeypatch.setattr(exporting, "_run_torchscript", lambda path, x: torch.full((3, 10), float("nan")))
    one_line(capsys, cli(["export", str(run), "--format", "torchscript"]), "differs from PyTorch by nan")
    assert sorted(os.listdir(run)) == ["best"]


@pytest.fixture
def full_disk(tmp_path):
    """A real 200 KiB tmpfs (CI runs as root) as a factory: ``full_disk(kib)`` mounts one and returns it."""
    mounted: list[Path] = []

    def mount(kib: int = 200) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs",
                                                str(where)], capture_output=True).returncode != 0:
            pytest.skip("mounting a small tmpfs needs root (CI has it); the write path is simulated in "
                        "test_checkpoint_write_on_a_full_disk_simulated")
        mounted.append(where)
        return where

    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)


def _leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.startswith((".tmp", ".part")) or n.endswith(".old"))


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(full_disk):
    disk = full_disk(400)  # room for one LeNet-5 checkpoint (244 KB), not for its next version beside it
    net = cnnzoo.create_model("lenet5")
    ck.write_checkpoint(disk / "run", "last", net.state_dict(), META)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    with pytest.raises(OSError) as e:  # SafetensorError("No space left on device") as the OSError it is
        ck.write_checkpoint(disk / "run", "last", net.state_dict(), META)
    assert e.value.errno == 28 and "model.safetensors" in e.value.filename
    model, _ = load_checkpoint(disk / "run", prefer="last")
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())  # the previous one, intact
    assert _leftovers(disk / "run") == []


def test_checkpoint_write_on_a_full_disk_simulated(tmp_path, monkeypatch):
    """The same without root: safetensors' own error for a full disk becomes an OSError with the path."""
    import safetensors.torch
    from safetensors import SafetensorError

    ck.write_checkpoint(tmp_path / "run", "last", cnnzoo.create_model("lenet5").state_dict(), META)

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match="No space left on device"):
        ck.write_checkpoint(tmp_path / "run", "last", {}, META)
    assert load_checkpoint(tmp_path / "run", prefer="last")[1]["model"] == "lenet5"
    assert _leftovers(tmp_path / "run") == []


def test_train_on_a_full_disk_is_one_line_with_the_free_space(full_disk, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    disk = full_disk(200)
    rc = cli(["train", "--model", "lenet5", "--dataset", "digits", "--max-steps", "1", "--out",
              str(disk / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "No space left on device" in err[0] and "free there" in err[0] and str(disk) in err[0], err
    assert _leftovers(disk / "run") == []


@pytest.mark.parametrize("cmd", ["export", "predict --csv", "eval --out"])
def test_outputs_on_a_full_disk_are_one_line_and_leave_no_file(full_disk, tmp_path, capsys, png, cmd):
    run = write_ckpt(tmp_path / "run")
    disk = full_disk(64)
    with open(disk / "filler", "wb", buffering=0) as f:  # fill it: not even a small CSV fits
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    argv = {"export": ["export", str(run), "--out", str(disk / "m.onnx")],
            "predict --csv": ["predict", str(run), str(png), "--csv", str(disk / "s.csv")],
            "eval --out": ["eval", str(run), "--out", str(disk / "ev")]}[cmd]
    rc = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
    left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.name != "filler" and p.is_file())
    assert left in ([], ["ev/confusion.png"], ["ev/eval.json"]) if cmd == "eval --out" else left == [], left
    assert not [p for p in disk.rglob(".tmp*")]
