"""A run folder belongs to one run (``cnnzoo.training.rundir``), tested on its own."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnzoo.errors import CnnzooError
from cnnzoo.training import rundir
from cnnzoo.training.rundir import LOCK_NAME, RunLock, check_out_arg, plan_run_dir


def _hold(run_dir: str, ready, release) -> None:  # a child process that holds the lock until told
    with RunLock(run_dir):
        ready.set()
        release.wait(30)


def test_second_process_is_refused_with_the_first_pid_and_gets_it_after_release(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(tmp_path / "run"), ready, release))
    child.start()
    try:
        assert ready.wait(30)
        with pytest.raises(CnnzooError) as e:
            RunLock(tmp_path / "run").acquire()
        msg = str(e.value)
        assert f"pid {child.pid} on {socket.gethostname()}" in msg and "\n" not in msg
        assert "pick another --out" in msg
    finally:
        release.set()
        child.join(30)
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released on exit
    with RunLock(tmp_path / "run") as lock:  # and free for the next run
        assert lock.held and lock.taken_over is None


def test_two_processes_started_together_one_wins(tmp_path):
    """Both race for the lock at the same moment: exactly one gets it (O_CREAT | O_EXCL)."""
    code = ("import sys, time; from cnnzoo.training.rundir import RunLock\n"
            "try:\n    lock = RunLock(sys.argv[1]).acquire()\nexcept Exception as e:\n"
            "    print('refused', e); sys.exit(2)\ntime.sleep(1.5); lock.release(); print('won')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [(p.wait(60), p.stdout.read()) for p in procs]
    assert sorted(rc for rc, _ in outs) == [0, 2, 2], outs
    assert all("in use by another run (pid" in out for rc, out in outs if rc == 2)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                             "started": "2026-01-01 00:00:00"}))
    with RunLock(run) as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == dead.pid
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (run / LOCK_NAME).exists()


def test_a_killed_holder_leaves_a_stale_lock_that_the_next_run_takes(tmp_path):
    code = "import sys, time; from cnnzoo.training.rundir import RunLock; RunLock(sys.argv[1]).acquire(); " \
           "print('locked', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    with pytest.raises(CnnzooError, match=f"pid {p.pid}"):
        RunLock(tmp_path / "r").acquire()
    p.kill()
    p.wait()
    with RunLock(tmp_path / "r") as lock:
        assert lock.taken_over.pid == p.pid


@pytest.mark.parametrize("case", ["reused_pid", "half_written_old", "other_host"])
def test_lock_owner_edge_cases(tmp_path, case):
    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK_NAME
    if case == "reused_pid":  # our own pid, but recorded with another process start time: a reused pid
        lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "x",
                                    "proc_start": "1"}))
        if rundir._proc_start(os.getpid()) is None:
            pytest.skip("no /proc: start times cannot be compared")
        assert RunLock(run).acquire().taken_over.pid == os.getpid()
    elif case == "half_written_old":  # created, never written: its writer died long ago
        lock.write_text("")
        old = time.time() - 60
        os.utime(lock, (old, old))
        assert RunLock(run).acquire().taken_over.pid == -1
    else:  # another machine's run on a shared disk: cannot be judged, never taken
        lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "x"}))
        with pytest.raises(CnnzooError, match=f"if that run is gone, delete {lock}"):
            RunLock(run).acquire()


def test_released_on_exception_and_never_removes_another_runs_lock(tmp_path):
    with pytest.raises(RuntimeError), RunLock(tmp_path / "r"):
        raise RuntimeError("boom")
    assert not (tmp_path / "r" / LOCK_NAME).exists()
    lock = RunLock(tmp_path / "r").acquire()
    (tmp_path / "r" / LOCK_NAME).write_text("someone else's")  # replaced behind our back
    lock.release()
    assert (tmp_path / "r" / LOCK_NAME).read_text() == "someone else's"


def test_same_process_second_lock_is_refused(tmp_path):
    with RunLock(tmp_path / "r"), pytest.raises(CnnzooError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / "r").acquire()


def test_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CnnzooError, match="cannot write to output directory"):
        RunLock(tmp_path / "f" / "run").acquire()


@pytest.mark.parametrize("out,ok", [(None, True), ("", False), ("  ", False), ("runs/a", True)])
def test_check_out_arg(out, ok):
    if ok:
        assert check_out_arg(out) == (None if out is None else Path(out))
    else:
        with pytest.raises(CnnzooError, match="--out is empty"):
            check_out_arg(out)


def _fake_run(d: Path, *names: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        if n.endswith((".jsonl", ".json")):
            (d / n).write_text("{}\n")
        else:
            (d / n).mkdir()
            (d / n / "model.safetensors").write_bytes(b"x")
            (d / n / "state.json").write_text("{}")


# (what the folder holds, --resume, --overwrite) -> resumes from / error / note
PLANS = [
    ((), False, False, "fresh", ""),
    ((), True, False, "fresh", "nothing to resume in"),
    (("last", "best", "metrics.jsonl"), True, False, "last", ""),
    (("last", "best"), False, False, "error",
     "already holds a run: pass --resume to continue it, --overwrite to replace it, or another --out (it has last, "
     "best)"),
    (("last", "best"), False, True, "fresh", "replacing the run"),
    (("best", "metrics.jsonl"), True, False, "error", "no last/ checkpoint, but holds an earlier run's best, "
                                                     "metrics.jsonl"),
    (("best", "metrics.jsonl"), True, True, "fresh", "nothing to resume in"),
    (("metrics.jsonl",), False, False, "error", "(it has metrics.jsonl)"),
    (("result.json",), False, False, "error", "(it has result.json)"),
]


@pytest.mark.parametrize("held,resume,overwrite,expect,words", PLANS)
def test_plan_run_dir(tmp_path, held, resume, overwrite, expect, words):
    _fake_run(tmp_path / "r", *held)
    if expect == "error":
        with pytest.raises(CnnzooError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
            plan_run_dir(tmp_path / "r", resume, overwrite)
        assert "\n" not in str(e.value)
        return
    plan = plan_run_dir(tmp_path / "r", resume, overwrite)
    assert (plan.resume_from is not None) == (expect == "last")
    assert words in plan.note
    if overwrite:
        assert set(plan.replace) == set(held)


# ---------------------------------------------------------------- wired into train and compare (the CLI)
def _cli(argv: list[str]) -> int:
    from cnnzoo.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["train", "--model", "lenet5", "--dataset", "digits", "--batch-size", "16", "--no-progress"]


def test_second_train_on_the_same_folder_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "cnnzoo", *TRAIN, "--epochs", "50", "--out", str(run)],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / LOCK_NAME).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        for extra in ([], ["--resume"], ["--overwrite"]):  # none of them may touch a live run's folder
            assert _cli([*TRAIN, "--max-steps", "1", "--out", str(run), *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"is in use by another run (pid {first.pid} on" in err, err
    finally:
        first.kill()
        first.communicate()
    # the killed run left its lock behind: stale, taken over by the next run on the folder
    assert (run / LOCK_NAME).exists()
    assert _cli([*TRAIN, "--max-steps", "1", "--out", str(run), "--resume"]) == 0
    assert not (run / LOCK_NAME).exists()  # released when the run ended
    capsys.readouterr()


def test_train_refuses_an_empty_out_and_resume_never_replaces_earlier_results(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    assert _cli([*TRAIN, "--max-steps", "1", "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    run = tmp_path / "run"
    assert _cli([*TRAIN, "--max-steps", "1", "--epochs", "1", "--out", str(run)]) == 0
    shutil.rmtree(run / "last")  # an earlier run's best/ and metrics.jsonl, nothing to resume from
    before = {n: (run / n).stat().st_mtime_ns for n in ("best", "metrics.jsonl")}
    for extra in (["--resume"], []):
        assert _cli([*TRAIN, "--max-steps", "1", "--out", str(run), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "best, metrics.jsonl" in err, err
    assert {n: (run / n).stat().st_mtime_ns for n in before} == before
    assert not (run / LOCK_NAME).exists()  # a refused run releases the lock too
    # --resume on an empty folder starts a new run and says so
    assert _cli([*TRAIN, "--max-steps", "1", "--out", str(tmp_path / "new"), "--resume"]) == 0
    assert f"nothing to resume in {tmp_path / 'new'}: starting a new run there" in capsys.readouterr().out


def test_compare_on_a_folder_in_use_is_refused(tmp_path, capsys):
    with RunLock(tmp_path / "cmp"):
        assert _cli(["compare", "--models", "lenet5", "--dataset", "digits", "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"is in use by another run (pid {os.getpid()}" in err, err
    assert _cli(["compare", "--models", "lenet5", "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err
