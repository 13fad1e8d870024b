"""Multiply-accumulate counts (MACs) on the meta device, with the formulas of ``torch.utils.flop_counter``.

Convention (torchvision's ``_ops`` and the registry's ``macs``): MACs are the multiply-adds of
convolutions and matrix products (``Linear``), one image, eval mode; biases, BatchNorm, activations,
pooling and element-wise additions are not counted. ``FlopCounterMode`` counts each multiply-add as two
FLOPs; we apply its own per-op formulas (``flop_registry``) in a small dispatch mode of ours, so
MACs = FlopCounterMode's total / 2 exactly (the tests check it against FlopCounterMode itself), and we
report FLOPs = 2 x MACs. Why not FlopCounterMode directly: its dispatch mode imports ``torch._dynamo``
on first use (1-5 s), which alone would break the 5 s budget of ``cnnzoo summary``. How other counters
(torchinfo, fvcore, thop, ptflops) differ: docs/analysis.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from ._common import check_input_size, default_input_size, resolve_model, shape_forward


class _MacCounter(TorchDispatchMode):
    """Adds each op's FLOPs (FlopCounterMode's formulas) to every module running it, like FlopCounterMode."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # never runs under torch.compile: skip the torch._dynamo import
        return False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # imported here: torch.utils.flop_counter imports triton where installed (slow), which `rf` and
        # `list` do not need
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.total = 0
        self.per_module: dict[str, int] = {}

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        def pre(module: nn.Module, args: Any) -> None:
            self.stack.append(self.names.get(id(module), "\0"))  # \0: a module outside the model

        def post(module: nn.Module, args: Any, out: Any) -> None:
            if self.stack:
                self.stack.pop()

        h1, h2 = register_module_forward_pre_hook(pre), register_module_forward_hook(post)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func.overloadpacket)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
            self.total += flops
            for name in set(self.stack):
                self.per_module[name] = self.per_module.get(name, 0) + flops
        return out


def macs_by_module(
    model: nn.Module, input_size: Sequence[int], contexts: Any = None,
) -> tuple[int, dict[str, int]]:
    """(total MACs, MACs per module name incl. its children; '' = whole model) for one image of
    ``input_size`` (C, H, W). ``contexts`` is an optional factory of an extra context manager entered
    with the counter (the summary's shape hooks), so one meta forward serves both.
    """
    size = check_input_size(input_size)
    holder: dict[str, _MacCounter] = {}

    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        counter = holder["c"] = _MacCounter(model)
        with counter.hooks(), counter, (contexts() if contexts else contextlib.nullcontext()):
            yield

    shape_forward(model, size, ctx)
    c = holder["c"]
    per_module = {k: v // 2 for k, v in c.per_module.items() if k != "\0"}
    return c.total // 2, per_module


def count_macs(model: nn.Module | str, input_size: Sequence[int] | None = None) -> int:
    """Conv + linear multiply-accumulates of one forward pass of one image (= FlopCounterMode total / 2).

    Runs on the meta device: no arithmetic, so EfficientNet-B7 at 600x600 takes well under a second.
    ``model`` may be a module, a registered name or ``path/to/file.py:factory``.
    """
    model = resolve_model(model, device="meta")
    size = default_input_size(model) if input_size is None else input_size
    return macs_by_module(model, size)[0]
