"""Per-layer summary: output shape, parameters and MACs per module, with totals and memory.

One forward pass on the meta device (no arithmetic) under ``FlopCounterMode`` and global forward hooks,
so it works on any ``nn.Module`` and takes well under a second even for EfficientNet-B7 at 600x600.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from ..utils import fmt
from ._common import check_input_size, default_input_size, model_dtype, resolve_model
from .flops import macs_by_module


@dataclass(frozen=True)
class SummaryRow:
    """One module: ``params`` counts its own and its children's parameters; ``macs`` likewise."""

    name: str  # dotted module path; '' for the whole model
    type: str
    depth: int
    output_shape: list | None  # per-image shape(s) (batch dimension dropped); None if it never ran
    params: int
    macs: int
    calls: int

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "depth": self.depth, "output_shape": self.output_shape,
                "params": self.params, "macs": self.macs, "calls": self.calls}


@dataclass(frozen=True)
class Summary:
    """What :func:`summary` returns; ``str()`` is the table the CLI prints, ``to_dict()`` its JSON."""

    model: str
    input_size: tuple[int, ...]
    depth: int
    rows: list[SummaryRow]
    total_params: int
    trainable_params: int
    macs: int  # conv + linear multiply-accumulates, one image
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int  # outputs of leaf modules for one image, each tensor once (in-place ops reuse it)
    input_bytes: int
    dtype: str
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs (one multiply and one add per MAC)."""
        return 2 * self.macs

    def row(self, name: str) -> SummaryRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "input_size": list(self.input_size), "depth": self.depth,
            "rows": [r.to_dict() for r in self.rows],
            "total_params": self.total_params, "trainable_params": self.trainable_params,
            "macs": self.macs, "flops": self.flops,
            "conventions": {"macs": "conv + linear multiply-accumulates, one image (torchvision _ops)",
                            "flops": "2 x macs"},
            "param_bytes": self.param_bytes, "buffer_bytes": self.buffer_bytes,
            "activation_bytes": self.activation_bytes, "input_bytes": self.input_bytes, "dtype": self.dtype,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        table = [
            ("  " * max(0, r.depth - 1) + (r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name or self.model),
             r.type, _shape_str(r.output_shape), f"{r.params:,}" if r.params else "-",
             fmt.human(r.macs) if r.macs else "-")
            for r in self.rows
        ]
        size = "x".join(map(str, self.input_size))
        lines = [f"{self.model}  input {size}  (depth {self.depth})", "",
                 fmt.table(table, ["layer", "type", "output", "params", "MACs"], align="llrrr"), ""]
        mib = 2.0 ** 20
        totals = [
            ("total params", f"{self.total_params:,}", fmt.human(self.total_params)),
            ("trainable params", f"{self.trainable_params:,}", fmt.human(self.trainable_params)),
            ("MACs", f"{self.macs:,}", f"{fmt.human(self.macs)}  conv + linear multiply-adds, one image"),
            ("FLOPs", f"{self.flops:,}", f"{fmt.human(self.flops)}  = 2 x MACs"),
            ("param memory", f"{self.param_bytes / mib:,.2f} MiB", f"{self.dtype}"
             + (f", + {self.buffer_bytes / mib:.2f} MiB buffers" if self.buffer_bytes else "")),
            ("activation memory", f"{self.activation_bytes / mib:,.2f} MiB",
             "leaf-module outputs, one image, one forward"),
            ("input memory", f"{self.input_bytes / mib:,.2f} MiB", ""),
        ]
        w0, w1 = max(len(t[0]) for t in totals), max(len(t[1]) for t in totals)
        lines += [f"{a.ljust(w0)}  {b.rjust(w1)}  {c}".rstrip() for a, b, c in totals]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _shape_str(shape: Any) -> str:
    if shape is None:
        return "-"
    if shape and isinstance(shape[0], list):
        return ", ".join("x".join(map(str, s)) for s in shape)
    return "x".join(map(str, shape)) or "scalar"


def _out_shapes(out: Any) -> list | None:
    tensors = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not tensors:
        return None
    shapes = [list(t.shape[1:]) for t in tensors]
    return shapes[0] if len(shapes) == 1 else shapes


def _count(params: Iterator[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def summary(model: nn.Module | str, input_size: Sequence[int] | None = None, depth: int = 3) -> Summary:
    """Per-module output shape, parameters and MACs down to ``depth`` levels, with totals.

    ``model`` may be a module, a registered name or ``path/to/file.py:factory``; names and files are built
    on the meta device (no weights allocated). ``input_size`` is (C, H, W), default the model's own.
    Totals: parameters (equal to torchinfo's), MACs (conv + linear, = FlopCounterMode total / 2),
    FLOPs = 2 x MACs, parameter/buffer bytes and the activation bytes of one forward pass of one image.
    """
    name = model if isinstance(model, str) else getattr(model, "cnnzoo_name", type(model).__name__)
    model = resolve_model(model, device="meta")
    size = check_input_size(default_input_size(model) if input_size is None else input_size)
    depth = max(0, int(depth))
    names = {id(m): n for n, m in model.named_modules()}
    leaves = {id(m) for m in model.modules() if next(m.children(), None) is None}
    shapes: dict[str, list | None] = {}
    calls: dict[str, int] = {}
    seen: dict[int, torch.Tensor] = {}  # leaf outputs by identity (in-place results counted once)

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        n = names.get(id(module))
        if n is None:
            return
        calls[n] = calls.get(n, 0) + 1
        shapes.setdefault(n, _out_shapes(out))
        if id(module) in leaves:
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    seen.setdefault(id(t), t)

    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        shapes.clear(), calls.clear(), seen.clear()
        handle = register_module_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    total_macs, per_module = macs_by_module(model, size, ctx)
    rows = []
    for n, m in model.named_modules():
        d = 0 if n == "" else n.count(".") + 1
        if d > depth:
            continue
        rows.append(SummaryRow(name=n, type=type(m).__name__, depth=d, output_shape=shapes.get(n),
                               params=_count(m.parameters()), macs=per_module.get(n, 0), calls=calls.get(n, 0)))
    dtype = model_dtype(model)
    notes = []
    unran = [r.name for r in rows if r.calls == 0 and r.name]
    if unran:
        notes.append(f"{len(unran)} module(s) did not run in eval mode (e.g. {unran[0]}): shape '-', no MACs")
    return Summary(
        model=name, input_size=size, depth=depth, rows=rows,
        total_params=_count(model.parameters()),
        trainable_params=_count(p for p in model.parameters() if p.requires_grad),
        macs=total_macs,
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        activation_bytes=sum(t.numel() * t.element_size() for t in seen.values()),
        input_bytes=int(torch.Size(size).numel()) * torch.empty((), dtype=dtype).element_size(),
        dtype=str(dtype).replace("torch.", ""), notes=notes,
    )


def batch_bytes(model: object, input_size: tuple[int, int, int], batch: int) -> int:
    """Bytes of ``batch`` inputs and their layer outputs in one forward pass, from :func:`cnnzoo.summary` on the
    meta device (a registered name, a file spec or a net built on the meta device; 0 for what it cannot size):
    what every size check adds up."""
    on_meta = isinstance(model, torch.nn.Module) and all(p.is_meta for p in model.parameters())
    if not (isinstance(model, str) or on_meta):
        return 0
    try:
        s = summary(model, input_size)
    except Exception:  # too small an input and the like: the command's own check says why, later
        return 0
    return batch * (s.activation_bytes + s.input_bytes)
