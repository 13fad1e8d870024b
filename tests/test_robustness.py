"""Issue 7, robustness and safety: what the other test files do not already check.

Requirement -> where it is tested:
1. checkpoints never run code: ``test_registry.py::test_load_pretrained_refuses_code_execution`` (the reader);
   here, every CLI door a ``.pth`` can come through (``train --pretrained``, ``eval``, ``load_checkpoint``).
2. crash safety: here, a real ``python -m cnnzoo train`` killed with SIGKILL at several moments, some of
   them inside a checkpoint write. In-process exact mid-epoch resume and the swap fall-backs are in
   ``test_train.py::test_resume_after_interruption_gives_identical_weights`` / ``test_checkpoint_swap_and_fallbacks``.
3. bad images: ``test_data_folder.py::test_messy_folder_skips_and_converts`` (every file kind of the issue) and
   ``test_empty_class_folder_is_a_clear_error``; ``test_predict.py`` for predict's skipping.
4. bad arguments: ``test_train.py::test_bad_arguments_are_one_line_errors`` (unknown model/data set, too small,
   unwritable out, missing data); here the rest (channels, class count on resume, before-training, --debug,
   a real process's exit status and stderr).
5. numerical faults: ``test_train.py::test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint`` and
   ``test_compare.py::test_failing_models_get_a_row_and_the_rest_continue``.
6. fuzz: IDX bytes and decoder bytes in ``test_data.py`` / ``test_data_folder.py``; CLI argument combinations
   and the file-level readers (``read_idx``, ``load_image``) in ``test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import load_checkpoint

# One thread: bit-exact equality between two processes needs the same reduction order in every conv.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["--model", "lenet5", "--dataset", "digits", "--epochs", "8", "--batch-size", "16",
         "--train-subset", "160", "--seed", "7", "--no-progress"]  # 10 steps per epoch: a checkpoint every ~0.2 s


def _train_proc(out: Path) -> subprocess.Popen:
    # --resume from the first start: with no run in --out it starts a fresh one, so every segment is the same
    return subprocess.Popen([sys.executable, "-m", "cnnzoo", "train", *TRAIN, "--out", str(out), "--resume"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _writing(out: Path) -> bool:
    """A checkpoint write is under way (its ``.tmp-last-*``/``.tmp-best-*`` folder exists)."""
    try:
        return any(n.startswith((".tmp-last-", ".tmp-best-")) for n in os.listdir(out))
    except FileNotFoundError:
        return False


def _inode(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None


def _kill_at(proc: subprocess.Popen, out: Path, how: str, rng: random.Random) -> str | None:
    """SIGKILL ``proc`` at a moment of kind ``how`` (after its first checkpoint); returns what was under way,
    or None when the run finished first."""
    # wait for this segment's first checkpoint (each write swaps in a new `last` folder: a new inode), so
    # every segment makes progress and a kill is never before any checkpoint
    start = _inode(out / "last")
    while _inode(out / "last") in (start, None):
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    if how == "write":  # poll for the tmp folder and kill at once: inside save_file / fsync / the renames
        while not _writing(out):
            if proc.poll() is not None:
                return None
    else:
        time.sleep(rng.uniform(0.0, 0.4))
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "write" if _writing(out) or (out / "last.old").exists() else "between"


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    ref_dir, run = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = _train_proc(ref_dir)  # the reference runs beside the killed chain (2 cores)
    rng = random.Random(7)
    kills: list[tuple[str, int, int]] = []
    for how in ["write", "random", "write", "random", "write"]:
        proc = _train_proc(run)
        landed = _kill_at(proc, run, how, rng)
        if landed is None:  # finished before the kill point: the rest of the chain has nothing to kill
            proc.communicate()
            break
        proc.communicate()
        # what a kill leaves: a complete `last` (or `last.old` mid-swap) that loads without the dead process
        found = ck.find_resume(run)
        assert found is not None and found.name in ("last", "last.old"), sorted(os.listdir(run))
        model, meta = load_checkpoint(run, prefer="last")
        assert meta["model"] == "lenet5" and sum(p.numel() for p in model.parameters()) == 60850
        st, tensors = ck.read_state(found)
        assert st["config"]["seed"] == 7 and "rng.cpu" in tensors
        assert (meta["epoch"], meta["step"]) == (st["epoch"], st["step"])  # weights and state of one moment
        kills.append((landed, int(meta["epoch"]), int(st["step"])))
    done = _train_proc(run)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    ref_out, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err

    assert len(kills) >= 4, kills  # the chain really was killed (most segments run ~3 s, a kill lands in each)
    assert any(k[0] == "write" for k in kills), kills  # ... at least once inside a checkpoint write
    steps = [k[2] for k in kills]
    assert steps == sorted(steps), kills  # each segment resumed from where the last left off, never earlier
    a, b = ck.read_weights(ref_dir / "last"), ck.read_weights(run / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact, BN-free LeNet
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (ref_dir, run))
    assert rb["steps"] == ra["steps"] == 80 and rb["epochs_run"] == 8
    assert [h["test_acc"] for h in rb["history"]] == [h["test_acc"] for h in ra["history"]]
    assert rb["best_acc"] == ra["best_acc"] > 0.5
    left = sorted(n for n in os.listdir(run) if n.startswith(".tmp-") or n.endswith(".old"))
    assert left == []  # no half-written folder survives the final run
    (tmp_path / "kills.json").write_text(json.dumps(kills))
    print("kill points (where, epoch of last, step of last):", kills)


# ------------------------------------------------------------------------------ 1. no code from checkpoints
class _Evil:
    """Unpickling this calls ``open(marker, "w")``: the file appearing would prove code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


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


# ------------------------------------------------------------------------------------- 4. bad arguments
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


def test_missing_data_directory_says_where_files_go(tmp_path, capsys):
    # an existing but empty root is in test_train.py; here the root itself is missing
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, f"{tmp_path / 'nowhere' / 'mnist'}/train-images-idx3-ubyte.gz")


def test_debug_shows_the_traceback(capsys):
    assert main(["train", "--model", "resnet18x"]) == 2
    _one_line_error(capsys, "did you mean resnet18")
    with pytest.raises(CnnzooError, match="did you mean resnet18"):
        main(["--debug", "train", "--model", "resnet18x"])


def test_a_real_process_exits_2_with_one_line(tmp_path):
    # one process start is enough: the in-process cases above and in test_train.py share the same main()
    for argv, needle in [
        (["train", "--model", "resnet18x", "--out", str(tmp_path / "a")], "did you mean resnet18"),
    ]:
        p = subprocess.run([sys.executable, "-m", "cnnzoo", *argv], env=ENV, capture_output=True, text=True,
                           timeout=120)
        err = p.stderr.strip()
        assert p.returncode == 2 and p.stdout == "", (argv, p.stdout, err)
        assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_train_refuses_an_img_size_whose_batch_or_folder_cannot_fit_in_memory(tmp_path, monkeypatch, capsys):
    """A huge --img-size fails at once with one line that names the figure and the fix, before any decoding
    or epoch (instead of the OOM killer partway through), and leaves no run behind; within the memory the
    same run trains."""
    from cnnzoo.training import setup

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(setup, "available_memory", lambda device: 1 << 30)  # 1 GiB free
    # resnet18_cifar at 256 px: 9.4 GiB of layer outputs per batch of 32 (cnnzoo summary: 301 MiB an image)
    rc = main(["train", "--model", "resnet18_cifar", "--dataset", "digits", "--img-size", "256", "--batch-size",
               "32", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "--img-size 256 with --batch-size 32: resnet18_cifar needs about" in err
    assert "more than the 1.0 GiB free on cpu: use a smaller --img-size or --batch-size" in err
    assert not (tmp_path / "r" / "last").exists()
    # the same net at a size that fits trains
    res = cnnzoo.train("resnet18_cifar", "digits", img_size=8, batch_size=32, epochs=1, train_subset=64,
                       test_subset=32, out=None, progress=False, verbose=False)
    assert res.steps == 2
    # a folder decoded at 300 px: 2 training images x 3 x 300^2 bytes = 540 KB of cache on a disk with 100 KB free,
    # refused before decoding (the cache is memory-mapped, so it is checked against the disk, not RAM)
    from cnnzoo.data import folder

    monkeypatch.setattr(setup, "available_memory", lambda device: 1 << 40)
    monkeypatch.setattr(folder.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 10**5})())
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "f" / split / cls).mkdir(parents=True)
            Image.new("RGB", (20, 20), (10 * len(cls), 0, 0)).save(tmp_path / "f" / split / cls / "x.png")
    with pytest.raises(CnnzooError, match=r"2 images decoded at 300x300 need up to 540\.00KB of the decode cache"):
        cnnzoo.train("resnet18_cifar", f"folder:{tmp_path / 'f'}", img_size=300, epochs=1, out=None,
                     progress=False, verbose=False)
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing was decoded
