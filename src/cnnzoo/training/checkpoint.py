"""Checkpoints that survive a SIGKILL at any moment and can never run code when loaded.

Layout of a run directory ``DIR``::

    DIR/last/  model.safetensors   weights; safetensors metadata "cnnzoo" = JSON meta (model name, classes,
               state.safetensors   img_size, mean, std, dataset, epoch ...): all ``predict``/``export`` need
               state.json          optimizer tensors / RNG states, and epoch, step, history, config as JSON
    DIR/best/  the same, for the epoch with the best held-out accuracy

A checkpoint is written into ``DIR/.tmp-*`` (each file fsynced), then swapped in with renames:
``last -> last.old``, ``tmp -> last``, remove ``last.old``. A kill at any point leaves either ``last`` or
``last.old`` complete, and readers fall back to ``last.old`` when ``last`` is missing. Nothing is pickled:
weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CnnzooError
from .state import RunState

FORMAT_VERSION = 1
META_KEY = "cnnzoo"
WEIGHTS, STATE_TENSORS, STATE_JSON = "model.safetensors", "state.safetensors", "state.json"


# ------------------------------------------------------------------------------------------ writing
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cpu_tensors(d: dict[str, Tensor]) -> dict[str, Tensor]:
    # clone: safetensors refuses tensors that share memory (tied weights) or are non-contiguous views
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in d.items()}


def write_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    weights: dict[str, Tensor],
    meta: dict,
    state: dict | None = None,
    state_tensors: dict[str, Tensor] | None = None,
) -> Path:
    """Atomically (re)write ``run_dir/name`` (``"last"`` or ``"best"``); returns its path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final = run_dir / name
    tmp = run_dir / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        meta = {**meta, "format_version": FORMAT_VERSION}
        save_file(_cpu_tensors(weights), str(tmp / WEIGHTS),
                  metadata={"format": "pt", META_KEY: json.dumps(meta)})
        save_file(_cpu_tensors(state_tensors or {}), str(tmp / STATE_TENSORS), metadata={"format": "pt"})
        (tmp / STATE_JSON).write_text(json.dumps(state or {}, indent=1, default=_json_default))
        for f in (WEIGHTS, STATE_TENSORS, STATE_JSON):
            _fsync_file(tmp / f)
        _fsync_dir(tmp)
        _swap_in(tmp, final)
    except Exception as e:  # safetensors reports a full disk as SafetensorError: make it the OSError it is
        from ..utils.oserr import as_os_error

        os_err = None if isinstance(e, OSError) else as_os_error(e, tmp / WEIGHTS)
        if os_err is None:
            raise
        raise os_err from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():  # stale from an earlier crash; ``final`` is complete, so ``old`` is not needed
            shutil.rmtree(old)
        os.replace(final, old)
    # killed here: ``final`` is missing and ``old`` is complete; readers use ``old``
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def clean_stale_tmp(run_dir: str | os.PathLike) -> None:
    """Remove half-written ``.tmp-*`` checkpoint folders left by a killed run."""
    for p in Path(run_dir).glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# ------------------------------------------------------------------------------------------ reading
def _complete(d: Path) -> bool:
    return (d / WEIGHTS).is_file() and (d / STATE_JSON).is_file()


def find_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """The checkpoint folder for ``path``: a ``model.safetensors`` file, a checkpoint folder, or a run
    folder (then ``prefer`` = ``best`` or ``last``, falling back to the other and to ``*.old``)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".safetensors":
        return p.parent
    if p.is_dir() and (p / WEIGHTS).is_file():
        return p
    if p.is_dir():
        order = ["best", "best.old", "last", "last.old"] if prefer == "best" else ["last", "last.old", "best",
                                                                                    "best.old"]
        for name in order:
            if _complete(p / name):
                return p / name
        raise CnnzooError(f"{p} holds no checkpoint (no best/ or last/ with {WEIGHTS}): give a run folder "
                          f"written by `cnnzoo train` or a model.safetensors file")
    if p.is_file():  # an existing file of another kind: say so rather than "not found"
        what = "a plain PyTorch file without cnnzoo metadata" if p.suffix in (".pth", ".pt", ".bin", ".ckpt") \
            else "not a cnnzoo checkpoint"
        raise CnnzooError(f"{p} is {what}: give a run folder written by `cnnzoo train`, its best/ or last/, "
                          f"or its model.safetensors (plain weights go to train --pretrained)")
    if p.with_name(p.name + ".old").is_dir():  # DIR/last was being swapped when the run was killed
        return find_checkpoint(p.with_name(p.name + ".old"))
    raise CnnzooError(
        f"checkpoint {str(p)!r} not found: give a run folder, its best/ or last/, or a .safetensors file")


def find_resume(run_dir: str | os.PathLike) -> Path | None:
    """``run_dir/last`` if complete, else ``run_dir/last.old`` (a kill mid-swap), else ``None``."""
    for name in ("last", "last.old"):
        d = Path(run_dir) / name
        if _complete(d):
            return d
    return None


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON meta stored in a checkpoint's ``model.safetensors`` header (no tensors are read)."""
    from safetensors import SafetensorError, safe_open

    f = find_checkpoint(path) / WEIGHTS
    try:
        with safe_open(str(f), framework="pt") as sf:
            raw = (sf.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnzooError(f"{f} is not a readable safetensors file ({e}); the checkpoint is damaged") from e
    if raw is None:
        raise CnnzooError(f"{f} has no cnnzoo metadata (not written by `cnnzoo train`): load the weights "
                          f"with cnnzoo.load_pretrained(model, path) instead")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CnnzooError(f"{f} has damaged cnnzoo metadata ({e})") from e
    if not isinstance(meta, dict):
        raise CnnzooError(f"{f} has damaged cnnzoo metadata")
    from .ckpt_check import validate_meta  # every field checked in one place

    return validate_meta(meta, f)


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = find_checkpoint(path) / WEIGHTS
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CnnzooError(f"{f} is not a readable safetensors file ({e}); the checkpoint is damaged") from e


def read_state(ckpt_dir: Path) -> tuple[dict, dict[str, Tensor]]:
    """``state.json`` and ``state.safetensors`` of a checkpoint folder (for ``--resume``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = json.loads((ckpt_dir / STATE_JSON).read_text())
        tensors = load_file(str(ckpt_dir / STATE_TENSORS)) if (ckpt_dir / STATE_TENSORS).is_file() else {}
    except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as e:
        raise CnnzooError(f"{ckpt_dir} has a damaged training state ({e}); start a new run with --out") from e
    return state, tensors


def build_model(meta: dict, where: object = "checkpoint") -> nn.Module:
    """A fresh model of the architecture a checkpoint's meta describes (``where`` names it in errors)."""
    from ..models.registry import build_model as build_registered  # fresh weights: no hub, no feature tools

    name = meta.get("model")
    if not name:
        raise CnnzooError("the checkpoint was trained from a custom nn.Module, not a registered model: "
                          "build the model yourself and pass it as load_checkpoint(path, model=...)")
    try:
        return build_registered(name, num_classes=int(meta["num_classes"]), in_chans=int(meta["in_chans"]),
                                **(meta.get("model_kwargs") or {}))
    except (TypeError, CnnzooError) as e:  # model_kwargs the constructor does not take (or wrong values)
        if isinstance(e, CnnzooError) and "takes no argument" not in str(e):
            raise
        from .ckpt_check import build_error

        raise build_error(meta, where, e) from e


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, prefer: str = "best",
                    device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from a checkpoint's meta with ``create_model`` and load its weights.

    ``path`` is a run folder (``best`` preferred), a checkpoint folder or its ``model.safetensors``.
    Returns ``(model in eval mode, meta)``; meta holds ``model``, ``num_classes``, ``in_chans``,
    ``img_size``, ``mean``, ``std``, ``classes``, ``dataset``, ``resize``, ``epoch``.
    A ``.pth``/``.pt`` file is read with ``torch.load(weights_only=True)`` into the ``model`` you pass.
    """
    p = Path(path).expanduser()
    if p.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        if model is None:
            raise CnnzooError(f"{p} is a plain PyTorch file without cnnzoo metadata: pass the model to load "
                              f"it into, or use a checkpoint written by `cnnzoo train`")
        from ..models.pretrained import load_pretrained

        load_pretrained(model, p)
        return model.to(device).eval(), {}
    p = find_checkpoint(p, prefer)  # read_meta/read_weights alone would take best/ even for prefer="last"
    meta = read_meta(p)
    weights = read_weights(p)
    if model is None:
        model = build_model(meta, p / WEIGHTS)
    from .ckpt_check import validate_weights

    validate_weights(meta, weights, model, where=p / WEIGHTS)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CnnzooError(f"{find_checkpoint(p)} does not fit the model ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected keys, e.g. {what})")
    model.cnnzoo_meta = meta  # type: ignore[attr-defined]
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------- optimizer state
def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict, dict[str, Tensor]]:
    """Split ``opt.state_dict()`` into JSON (hyper-parameters, scalars) and tensors (momenta, moments)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optimizer.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return {"param_groups": sd["param_groups"], "scalars": scalars}, tensors


def unflatten_optimizer(opt: torch.optim.Optimizer, js: dict, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in js.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = js["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
            len(g["params"]) != len(o["params"]) for g, o in zip(groups, opt.param_groups, strict=True)):
        raise CnnzooError("the saved optimizer state does not match this model's parameters; "
                          "start a new run with --out instead of --resume")
    for g in groups:  # JSON turns tuples into lists; AdamW's betas must unpack either way
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    # saved tensors come back contiguous; give each state tensor its parameter's memory format again
    # (channels_last weights): torch's fused SGD/AdamW kernels walk parameter and state in memory order and
    # silently compute garbage when their strides differ (seen with torch 2.14 on the CPU)
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if isinstance(v, Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


# ----------------------------------------------------------------------------------- a run's state
def save_run(run_dir: str | os.PathLike, name: str, net: nn.Module, meta: dict, state: RunState, config: dict,
             extra: dict, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
             top1: float | None = None, extra_tensors: dict[str, Tensor] | None = None) -> Path:
    """Write ``run_dir/name`` for a run: weights with ``meta``, and as ``state.json`` / ``state.safetensors``
    the :class:`RunState`, ``config``, ``extra``, the optimizer, the GradScaler, the RNG states and
    ``extra_tensors`` (a weight average's)."""
    opt_js, tensors = flatten_optimizer(opt)
    tensors.update(extra_tensors or {})
    tensors["rng.cpu"] = torch.get_rng_state()
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    if dev.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(dev)
    st = {**state.to_json(), "config": config, **extra, "optimizer": opt_js,
          "scaler": scaler.state_dict() if scaler is not None else None}
    ck_meta = {**meta, "epoch": state.epoch, "epoch_step": state.epoch_step, "step": state.step, "top1": top1}
    return write_checkpoint(run_dir, name, net.state_dict(), ck_meta, st, tensors)


def restore_training(state: dict, tensors: dict[str, Tensor], opt: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, device: torch.device) -> None:
    """Put a saved run's optimizer, GradScaler and RNG states back (:func:`save_run` wrote them)."""
    unflatten_optimizer(opt, state["optimizer"], tensors)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
