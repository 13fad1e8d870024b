"""Run and compare folders: a training process killed at any moment (inside a checkpoint write too) resumes
to the same weights as an uninterrupted run, a resumed comparison checks its rows against the files and its
recipe against the flags, and compare refuses a folder holding files it did not write."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import load_checkpoint
from helpers import ENV, cli, one_line
from helpers import snapshot as _snapshot

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
