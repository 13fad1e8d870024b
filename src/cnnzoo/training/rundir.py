"""A run folder belongs to one run: a lock file, a refused empty ``--out``, and no silent overwrite.

Two ``cnnzoo train --out DIR`` started a second apart would otherwise both exit 0 with only one result left
in DIR. :class:`RunLock` makes the folder's owner explicit: ``DIR/.cnnzoo.lock`` is created atomically
(``O_CREAT | O_EXCL``) and holds the owner's pid, host, process start time and start date. A second run on the
same folder gets a one-line :class:`~cnnzoo.errors.CnnzooError` naming the first's pid (the CLI exits 2). A lock
whose process is gone (same host, pid not alive, or alive but a different process that reused the pid) is
stale: the next run takes it over. The lock is released on exit and on exceptions (``with`` block); a SIGKILL
leaves it behind, stale, which is what the take-over is for.

:func:`check_out_arg` refuses ``--out ""`` (not a silent "no --out"). :func:`plan_run_dir` says what a run may
do with the folder it is given: resume, start fresh, or stop, so that ``--resume`` never quietly starts over
on top of ``best/`` or ``metrics.jsonl`` from an earlier run, and a fresh run never replaces them unasked.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CnnzooError
from .config import RunOptions, TrainConfig

if TYPE_CHECKING:
    from .distributed import DistContext

LOCK_NAME = ".cnnzoo.lock"
_TAKEOVER_GUARD_AGE_S = 30.0  # a take-over guard older than this was left by a process killed mid take-over
_HALF_WRITTEN_AGE_S = 10.0  # an unreadable lock this old: its writer died between create and write
# what an earlier run leaves in its folder, besides the last/ checkpoint that --resume continues from
RESULT_NAMES = ("best", "best.old", "metrics.jsonl", "result.json")


def check_out_arg(out: str | os.PathLike | None, flag: str = "--out") -> Path | None:
    """``None`` when no folder was given; an empty or blank ``out`` is an error, not "use the default"."""
    if out is None:
        return None
    if not str(out).strip():
        raise CnnzooError(f"{flag} is empty: give a folder (e.g. {flag} runs/try1), or leave {flag} out for "
                          f"the default runs/MODEL-DATASET")
    return Path(out).expanduser()


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove it is writable before any work, or a one-line error naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise CnnzooError(f"cannot write to output directory {str(folder)!r} ({e.strerror or e}): "
                          f"pass a writable --out") from e


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux ``/proc``), or ``None`` elsewhere:
    with it, a pid reused by an unrelated process is not mistaken for the lock's owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    if len(fields) < 20 or fields[0] == "Z":  # a zombie has exited: it owns nothing
        return "zombie" if fields[:1] == ["Z"] else None
    return fields[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return _proc_start(pid) != "zombie"


@dataclass
class LockOwner:
    """What a lock file says about the run holding it."""

    pid: int
    host: str
    started: str  # local time, for the message
    proc_start: str | None = None

    def alive(self) -> bool | None:
        """True/False when it can be told from this host; ``None`` for another host's run."""
        if self.host != socket.gethostname():
            return None
        if not _pid_alive(self.pid):
            return False
        now = _proc_start(self.pid)
        return not (self.proc_start and now and now != self.proc_start)  # the pid was reused: stale

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


def read_owner(path: Path) -> LockOwner | None:
    """The owner a lock file names, or ``None`` if it is missing or unreadable (half written)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return LockOwner(int(d["pid"]), str(d["host"]), str(d.get("started", "?")), d.get("proc_start"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """Exclusive ownership of a run folder for the duration of a ``with`` block (or acquire/release).

    ``RunLock(dir).acquire()`` creates ``dir`` if needed and raises :class:`CnnzooError` naming the owner's pid
    when another live run holds it; a stale lock (its process is gone) is taken over, and ``taken_over``
    then names the dead owner. Not re-entrant: a second lock on the same folder in the same process is refused
    like any other.
    """

    def __init__(self, run_dir: str | os.PathLike, what: str = "run") -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.what = what
        self.taken_over: LockOwner | None = None
        self._held: str | None = None  # the text we wrote, to release only our own lock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> RunLock:
        if self._held is not None:
            return self
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CnnzooError(f"cannot write to output directory {str(self.dir)!r} ({e.strerror or e}): "
                              f"pass a writable --out") from e
        pid = os.getpid()
        text = json.dumps({"pid": pid, "host": socket.gethostname(), "proc_start": _proc_start(pid),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "what": self.what})
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            except OSError as e:
                raise CnnzooError(f"cannot create the lock file {str(self.path)!r} ({e.strerror or e}): "
                                  f"pass a writable --out") from e
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            except OSError as e:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                raise CnnzooError(f"cannot write the lock file {str(self.path)!r} ({e.strerror or e})") from e
            os.close(fd)
            self._held = text
            return self
        raise CnnzooError(f"could not lock {self.dir} (its lock file keeps changing): retry, or pick another --out")

    def _handle_existing(self) -> None:
        """Another lock is there: refuse if its run is alive, take it over if stale."""
        try:
            text = self.path.read_text(encoding="utf-8")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: retry
        except OSError as e:
            raise CnnzooError(f"cannot read the lock file {str(self.path)!r} ({e.strerror or e})") from e
        owner = read_owner(self.path)
        if owner is None:
            if age < _HALF_WRITTEN_AGE_S:  # being written right now by a starting run
                raise CnnzooError(f"{self.dir} is being locked by another run right now: wait for it, or pick "
                                  f"another --out")
        else:
            alive = owner.alive()
            if alive is None:
                raise CnnzooError(f"{self.dir} is in use by another run ({owner.describe()}): wait for it; if "
                                  f"that run is gone, delete {self.path}")
            if alive:
                raise CnnzooError(f"{self.dir} is in use by another run ({owner.describe()}): wait for it to "
                                  f"finish, or pick another --out")
        self._take_over(text)
        self.taken_over = owner or LockOwner(-1, "?", "?")

    def _take_over(self, stale_text: str) -> None:
        """Remove a stale lock, if it is still the one judged stale; one process at a time (a guard file)."""
        guard = self.path.with_name(LOCK_NAME + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _TAKEOVER_GUARD_AGE_S:
                    guard.unlink(missing_ok=True)
            except OSError:
                pass
            time.sleep(0.01)
            return
        try:
            os.close(fd)
            try:
                if self.path.read_text(encoding="utf-8") == stale_text:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if it is still ours (never another run's)."""
        if self._held is None:
            return
        try:
            if self.path.read_text(encoding="utf-8") == self._held:
                self.path.unlink()
        except OSError:
            pass
        self._held = None

    @property
    def held(self) -> bool:
        return self._held is not None


@dataclass(frozen=True)
class RunPlan:
    """What a run does with its folder: ``resume_from`` (a ``last`` checkpoint) or a fresh start, and the one
    line to print about it (``note``; empty when there is nothing to say)."""

    resume_from: Path | None
    replace: tuple[str, ...] = ()  # earlier results to remove first (only with overwrite)
    note: str = ""


def earlier_results(run_dir: Path) -> list[str]:
    """Names of an earlier run's results in ``run_dir`` (``best``, ``metrics.jsonl`` ...), in a fixed order."""
    return [n for n in RESULT_NAMES if (run_dir / n).exists()]


def plan_run_dir(run_dir: str | os.PathLike, resume: bool, overwrite: bool) -> RunPlan:
    """Decide what a run may do with ``run_dir``, before any data is read.

    - ``resume`` with a ``last`` checkpoint: resume from it.
    - ``resume`` with nothing to resume from: a fresh run, said in one line; but if an earlier run's ``best/``
      or ``metrics.jsonl`` is there (its ``last/`` was removed), stop instead of replacing them (with
      ``overwrite`` too: they are replaced).
    - no ``resume`` and an earlier run (``last``, ``best`` or ``metrics.jsonl``): stop unless ``overwrite``.
    """
    from .checkpoint import find_resume

    run_dir = Path(run_dir)
    last = find_resume(run_dir)
    results = earlier_results(run_dir)
    if resume:
        if last is not None:
            return RunPlan(resume_from=last)
        if results and not overwrite:
            raise CnnzooError(f"nothing to resume in {run_dir}: it has no last/ checkpoint, but holds an earlier "
                              f"run's {', '.join(results)}; pass --overwrite to replace them, or another --out")
        return RunPlan(resume_from=None, replace=tuple(results),
                       note=f"nothing to resume in {run_dir}: starting a new run there")
    if last is not None or results:
        found = (["last"] if last is not None else []) + results
        if not overwrite:
            raise CnnzooError(f"{run_dir} already holds a run: pass --resume to continue it, --overwrite to replace "
                              f"it, or another --out (it has {', '.join(found)})")
        names = ("last", "last.old", *RESULT_NAMES)
        return RunPlan(resume_from=None, replace=tuple(n for n in names if (run_dir / n).exists()),
                       note=f"replacing the run in {run_dir} (--overwrite)")
    return RunPlan(resume_from=None)


# ------------------------------------------------------------------------------- a run's folder
def dataset_tag(dataset: str) -> str:
    """A data set's name in folder names: its own name, or a ``folder:PATH``'s folder name (the one naming
    rule of ``runs/MODEL-DATASET`` and ``runs/compare-DATASET``)."""
    if dataset.startswith("folder:"):
        return Path(dataset[len("folder:"):]).expanduser().resolve().name or "folder"
    return dataset


def default_out(cfg: TrainConfig) -> Path:
    """``runs/MODEL-DATASET``, or ``-2``, ``-3`` ... when that already holds a run."""
    from .checkpoint import find_resume

    base = Path("runs") / f"{cfg.model or 'model'}-{dataset_tag(cfg.dataset)}"
    out, i = base, 2
    while find_resume(out) is not None or earlier_results(out) or (out / LOCK_NAME).exists():
        out, i = base.with_name(f"{base.name}-{i}"), i + 1  # another run's folder, or one in use
    return out


def prepare_out(out: Path) -> None:
    """Create the run folder and prove it is writable before any training starts; clear stale temp folders."""
    from .checkpoint import clean_stale_tmp

    ensure_writable(out)
    clean_stale_tmp(out)


def open_run_dir(cfg: TrainConfig, opts: RunOptions, dist: DistContext,
                 say: Callable[[str], None] = lambda s: None) -> tuple[Path, Path | None, RunLock | None]:
    """The run folder (locked, made and proven writable), the checkpoint to resume from, if any, and the lock,
    which the caller releases when the run ends (rank 0 holds it; training/rundir.py).

    A second run on the same folder stops in one line naming the first's pid. A folder holding a run needs
    ``resume`` (continue) or ``overwrite`` (start again); ``resume`` with nothing to resume from starts a new
    run and says so, but never over an earlier run's best/ or metrics.jsonl (``plan_run_dir``)."""
    out_dir = check_out_arg(opts.out) or default_out(cfg)
    lock = RunLock(out_dir).acquire() if dist.rank == 0 else None  # before prepare_out cleans .tmp-* there
    try:
        if dist.rank == 0:
            prepare_out(out_dir)
        dist.barrier()
        plan = plan_run_dir(out_dir, opts.resume, opts.overwrite)
        dist.barrier()
        if dist.rank == 0:
            for name in plan.replace:
                p = out_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        dist.barrier()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if plan.note:
        say(plan.note)
    return out_dir, plan.resume_from, lock


def resumed_config(cfg: TrainConfig, explicit: dict, stored: dict, out_dir: Path) -> TrainConfig:
    """The stored run's config; the model, data set and weights asked for must match it; ``epochs`` may
    extend it."""
    old = TrainConfig.from_dict(stored.get("config", {}))
    for key in ("model", "dataset", "pretrained"):
        if explicit.get(key) and explicit[key] != getattr(old, key):
            raise CnnzooError(f"{out_dir} holds a run with {key}={getattr(old, key)!r}, not "
                              f"{explicit[key]!r}: drop --resume or pick another --out")
    if explicit.get("epochs") is not None:
        old = replace(old, epochs=int(explicit["epochs"]))  # a resumed run may be extended
    changed = recipe_changes(cfg, old, [k for k in explicit if k not in ("model", "dataset", "pretrained", "epochs")])
    if changed:  # a flag the resumed run would silently ignore (it continues its stored recipe)
        raise CnnzooError(f"{out_dir} holds a run trained with {changed[0][1]}; --resume continues that recipe, "
                          f"so {changed[0][2]} would be ignored: drop it, or start a new run (another --out, or "
                          f"--overwrite)")
    return old


def recipe_changes(new: TrainConfig, old: TrainConfig, keys) -> list[tuple[str, str, str]]:
    """``(field, old as flags, new as flags)`` for each of ``keys`` whose value differs between two recipes
    (compared as JSON, so a tuple and the list it was stored as are equal)."""
    def flag(k: str, v) -> str:
        return f"--{k.replace('_', '-')} {v}"

    out = []
    for k in keys:
        a, b = getattr(new, k, None), getattr(old, k, None)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append((k, flag(k, b), flag(k, a)))
    return out
