"""Load weights that are already on disk: torchvision, timm or cnnzoo checkpoints.

Nothing is downloaded here (the published ImageNet weights, ``create_model(name, pretrained=True)``, are
fetched by :mod:`cnnzoo.models.hub` and loaded through :func:`load_state_dict_into`). ``.safetensors`` files
are read with safetensors; ``.pth``/``.pt``/``.bin`` files with ``torch.load(weights_only=True)``, which
refuses pickles that would run code. Keys from another
library are mapped by the model's ``convert_state_dict`` (defined by families whose names differ from
timm/torchvision); classifier weights whose class count differs from the model's are left freshly
initialised, which is what fine-tuning on a new data set wants.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CnnzooError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "ema", "state_dict_ema")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a weights file, unwrapped from common containers and ``module.`` (DDP) prefixes."""
    path = Path(path)
    if not path.is_file():
        raise CnnzooError(f"checkpoint {str(path)!r} not found: give a .safetensors or .pth file, or a run folder "
                          f"(its best/ or last/)")
    if path.suffix == ".safetensors" or (path.is_dir() and (path / "model.safetensors").is_file()):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CnnzooError(f"{path} is not a readable safetensors file ({e}); re-save or re-download it") from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            culprit = re.search(r"Unsupported global: (\S+ \S+)", str(e))
            if culprit is None:
                raise CnnzooError(f"{path} is not a readable PyTorch checkpoint (corrupt or not a torch.save "
                                  f"file); re-save it or use a .safetensors file") from e
            raise CnnzooError(
                f"refused to load {path}: it holds a pickled object ({culprit.group(1)}) that could run code "
                f"when loaded; re-save only the state_dict or convert it to .safetensors") from e
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CnnzooError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(sd, dict) and not any(isinstance(v, Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), dict)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CnnzooError(f"{path} holds no state_dict of tensors; save one with torch.save(model.state_dict())")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # NaN weights trained to a NaN loss that was blamed on the learning rate
        raise CnnzooError(f"{path} holds NaN or inf weights (in {bad}): it is damaged; use another weights file")
    return sd


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, list[str]]:
    """Load a torchvision/timm/cnnzoo checkpoint file into ``model``, mapping keys where names differ.

    Returns ``{"reset": [...]}``: the classifier keys left at their fresh initialisation because the
    checkpoint's class count differs from the model's. Any other mismatch raises a one-line error.
    """
    return load_state_dict_into(model, read_state_dict(path), origin=str(path), strict=strict)


def load_state_dict_into(model: nn.Module, sd: dict[str, Tensor], origin: str,
                         strict: bool = True) -> dict[str, list[str]]:
    """:func:`load_pretrained` for a state_dict already in memory (``origin`` names it in errors): keys
    mapped by ``model.convert_state_dict``, a classifier of another class count left fresh."""
    path = origin
    convert = getattr(model, "convert_state_dict", None)
    if callable(convert):
        sd = convert(sd)
    own = model.state_dict()
    reset = [k for k, v in sd.items() if k in own and v.shape != own[k].shape and _is_class_dim(v, own[k])]
    for k in reset:
        sd.pop(k)
    bad = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        k = bad[0]
        raise CnnzooError(
            f"{path}: {len(bad)} tensors have the wrong shape for this model, e.g. {k} is "
            f"{tuple(sd[k].shape)} in the file but {tuple(own[k].shape)} in the model "
            f"(wrong architecture or in_chans?)")
    missing = [k for k in own if k not in sd and k not in reset]
    unexpected = [k for k in sd if k not in own]
    if strict and (missing or unexpected):
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CnnzooError(f"{path} does not fit this model: {', '.join(detail)} keys; is it the same architecture?")
    model.load_state_dict(sd, strict=False)
    return {"reset": reset, "missing": missing, "unexpected": unexpected}


def _is_class_dim(theirs: Tensor, ours: Tensor) -> bool:
    """A classifier weight/bias: only the first (class) dimension differs."""
    return theirs.dim() == ours.dim() and theirs.dim() >= 1 and theirs.shape[1:] == ours.shape[1:]
