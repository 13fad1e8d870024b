"""Helpers shared by the analysis tools: load a model from a name or a user's file, and run a forward pass
on the meta device (shapes only, no arithmetic) with a fallback to a real pass for code the meta device
cannot run."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import CnnzooError

DEFAULT_INPUT_SIZE = (3, 224, 224)


def _is_file_spec(spec: str) -> tuple[str, str] | None:
    """``'path/to/net.py:factory'`` -> (path, factory); ``None`` for a registered model name."""
    path, sep, attr = spec.rpartition(":")
    if not sep or not path or not attr:
        return None
    if path.endswith(".py") or "/" in path or "\\" in path or Path(path).is_file():
        return path, attr
    return None


def _load_file_attr(path: str, attr: str) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CnnzooError(f"model file {path!r} not found: give MODEL as a registered name or path/to/file.py:factory")
    mod_name = f"cnnzoo_user_{file.stem}_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise CnnzooError(f"cannot import {path}: is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: any error is theirs to fix
        sys.modules.pop(mod_name, None)
        raise CnnzooError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items()
                       if not k.startswith("_") and (callable(v) or isinstance(v, nn.Module)))
        raise CnnzooError(f"{path} defines no {attr!r}; callables there: {', '.join(found[:8]) or 'none'}")
    return getattr(module, attr)


class _SkipInitOnMeta(TorchFunctionMode):
    """In-place ops on meta tensors (``normal_``, ``kaiming_normal_``, ``fill_``...) are no-ops.

    A meta tensor has no values, yet initialising one still runs PyTorch's Python reference kernels:
    skipping them is what makes building a large net on the meta device cheap (docs/analysis.md).
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            t = args[0] if args else kwargs.get("tensor", kwargs.get("input"))  # nn.init passes tensor=...
            if isinstance(t, torch.Tensor) and t.is_meta:
                return t
        return func(*args, **kwargs)


def resolve_model(spec: str | nn.Module, device: str | torch.device | None = None, **kwargs: Any) -> nn.Module:
    """A model from a registered name (``"resnet50"``), a user's file (``"path/to/net.py:factory"``) or a
    module (returned as is).

    ``factory`` may be a function or class returning an ``nn.Module`` (called with ``kwargs``) or a module
    instance. ``device="meta"`` builds the net without allocating or initialising weights, which is what
    shape-only tools (summary, rf, list) want: EfficientNet-B7 then builds in milliseconds. Code that
    cannot run on the meta device is retried on the CPU.
    """
    if isinstance(spec, nn.Module):
        return spec
    file_spec = _is_file_spec(spec)
    if file_spec is None:
        from ..models.registry import build_model, resolve_name

        resolve_name(spec)  # unknown names raise with suggestions before any building

        def build() -> Any:
            return build_model(spec, **kwargs)
    else:
        obj = _load_file_attr(*file_spec)

        def build() -> Any:
            if isinstance(obj, nn.Module):
                return obj
            if not callable(obj):
                raise CnnzooError(f"{spec}: {file_spec[1]!r} is neither an nn.Module nor a factory function")
            try:
                return obj(**kwargs)
            except CnnzooError:
                raise
            except Exception as e:
                raise CnnzooError(f"{spec}: calling {file_spec[1]}() failed: {type(e).__name__}: {e}") from e

    model = None
    if device is not None:
        try:
            meta = torch.device(device).type == "meta"
            with torch.device(device), (_SkipInitOnMeta() if meta else contextlib.nullcontext()), \
                    (_MetaShortcuts() if meta else contextlib.nullcontext()):
                model = build()
        except CnnzooError:
            raise
        except Exception:  # factory code the meta device cannot run: build it for real
            model = None
    if model is None:
        model = build()
    if not isinstance(model, nn.Module):
        raise CnnzooError(f"{spec} gave a {type(model).__name__}, not an nn.Module")
    return model


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """The model's own default (C, H, W) (``create_model`` sets ``default_cfg``), else 3x224x224."""
    cfg = getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and len(cfg.get("input_size", ())) == 3:
        return tuple(int(v) for v in cfg["input_size"])  # type: ignore[return-value]
    return DEFAULT_INPUT_SIZE


def check_input_size(input_size: Any) -> tuple[int, ...]:
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 1:
        raise CnnzooError(f"input size must be C H W with positive values (got {' '.join(map(str, size))})")
    return size


def model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration (dropout off, BN uses running stats, no aux heads), restored afterwards."""
    states = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in states:
            m.training = t


def _is_meta(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(t.is_meta for t in tensors)


class _MetaShortcuts(TorchDispatchMode):
    """Answers eval-mode BatchNorm, floating-point element-wise ops, concatenation, means/sums over dims
    and matrix products on meta tensors directly.

    The meta device runs these through PyTorch's Python reference kernels, whose first call imports
    ``torch._dynamo`` (1.5 s on an idle machine) and which made half of a shape-only pass (1 s of 2 s for
    ResNet-152). Shapes and dtypes of these ops are simple: broadcast shape, the inputs' dtype; in-place
    ops return their first argument. Anything else goes to PyTorch. Entered below the tracing modes,
    which still see every op and its outputs.
    """

    _REDUCE = {"mean", "sum", "amax", "amin"}
    _ELEMENTWISE = {"add", "sub", "mul", "div", "hardswish", "mish", "maximum", "minimum"}  # some lack the tag
    _BN = {"native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"}
    _NOT_SAME_DTYPE = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
                       "logical_xor", "isnan", "isinf", "isfinite", "isposinf", "isneginf", "signbit",
                       "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "to", "_to_copy", "copy"}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # never runs under torch.compile: skip the torch._dynamo import
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if name == "cat" and args and isinstance(args[0], list | tuple) and args[0] and not kwargs:
            ts = [t for t in args[0] if t.dim() > 1 or t.numel() > 0]  # torch.cat skips legacy empty 1-d tensors
            dim = (args[1] if len(args) > 1 else 0) % max(1, ts[0].dim()) if ts else 0
            if ts and all(t.is_meta and t.dtype == ts[0].dtype and t.dim() == ts[0].dim() for t in ts):
                shape = list(ts[0].shape)
                shape[dim] = sum(t.shape[dim] for t in ts)
                return ts[0].new_empty(shape)
        if x is not None and x.is_meta:
            if name in self._BN:
                training = args[5] if name != "_native_batch_norm_legit_no_training" and len(args) > 5 else False
                if not training:
                    return torch.empty_like(x), x.new_empty(0), x.new_empty(0)
            elif (torch.Tag.pointwise in func.tags or name.rstrip("_") in self._ELEMENTWISE) and not kwargs \
                    and name.rstrip("_") not in self._NOT_SAME_DTYPE:
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                others = [a for a in args if not isinstance(a, torch.Tensor)]
                if (all(t.is_meta and t.dtype == x.dtype for t in tensors) and x.is_floating_point()
                        and all(isinstance(a, int | float | bool) for a in others)):
                    if name.endswith("_"):
                        return x
                    return x.new_empty(torch.broadcast_shapes(*(t.shape for t in tensors)))
            elif name in ("mm", "addmm", "bmm") and all(a.is_meta and a.dtype == x.dtype for a in args[:3]
                                                        if isinstance(a, torch.Tensor)):
                a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
                return a.new_empty((*a.shape[:-1], b.shape[-1]))
            elif name in self._REDUCE and x.is_floating_point() and not kwargs.get("dtype"):
                dims = args[1] if len(args) > 1 else kwargs.get("dim")
                keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
                if isinstance(dims, list | tuple) and dims and isinstance(keep, bool):
                    dims = {d % x.dim() for d in dims}
                    shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keep or i not in dims]
                    return x.new_empty(shape)
        return func(*args, **kwargs)


def shape_forward(
    model: nn.Module, input_size: tuple[int, ...], contexts: Callable[[], contextlib.AbstractContextManager],
    batch: int = 1,
) -> Any:
    """``model(x)`` for one zero batch of ``input_size`` in eval mode without gradients, inside the context
    ``contexts()`` (a fresh one per attempt).

    First on the meta device (weights swapped for meta tensors with ``torch.func.functional_call``, so no
    arithmetic is done and nothing is copied); code the meta device cannot run (``.item()``, plain tensor
    attributes on the CPU) is re-run for real on the model's device. User errors (a too-small input) are
    raised as they are; other failures become a one-line :class:`CnnzooError`.
    """
    dtype = model_dtype(model)
    with eval_mode(model), torch.no_grad():
        x = torch.zeros((batch, *input_size), dtype=dtype, device="meta")
        first_error: Exception | None = None
        try:
            with _MetaShortcuts(), contexts():
                if _is_meta(model):
                    return model(x)
                swap = {k: torch.empty_like(v, device="meta") for k, v in
                        [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]}
                return torch.func.functional_call(model, swap, (x,), strict=False, tie_weights=True)
        except CnnzooError:
            raise
        except Exception as e:
            first_error = e
        if _is_meta(model):
            raise _forward_error(input_size, first_error)
        device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
        try:
            with contexts():
                return model(torch.zeros((batch, *input_size), dtype=dtype, device=device))
        except CnnzooError:
            raise
        except Exception as e:
            raise _forward_error(input_size, e) from e


def _forward_error(input_size: tuple[int, ...], e: Exception | None) -> CnnzooError:
    msg = str(e).strip().splitlines()[0] if e is not None and str(e).strip() else type(e).__name__
    size = "x".join(map(str, input_size))
    return CnnzooError(f"the model fails on a {size} input ({type(e).__name__}: {msg}); check --input-size")
