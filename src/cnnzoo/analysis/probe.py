"""Empirical check of a computed receptive field: which input pixels can change one output unit?

The net is made linear and positive -- float64, every weight a positive constant (1/fan-in), biases 0,
activations and normalisation replaced by the identity, max pooling by average pooling -- so no path can
cancel another and a pixel's gradient is non-zero exactly when some path connects it to the unit. The
bounding box of the non-zero input gradient of one unit of the last feature map is then its receptive
field, clipped by the image border, and must equal the traced one. Global context (global pools and
means, the squeeze-and-excitation gates they feed) is detached: the check is of the conv path, which is
what :func:`receptive_field` reports as r.

``fast=True`` evaluates the same positive linear net more cheaply: with constant weights every output
channel of a conv equals a 1-channel conv of the channel sum, so each conv is computed that way and the
result broadcast to its channel count. Grouped convs then mix all channels, which can only connect
pixels that the net's later dense layers connect anyway (the support of the unit is the union over
channels). This makes probes at inputs larger than the RF (no clipping) affordable on a CPU.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import CnnzooError
from ._common import check_input_size, default_input_size, eval_mode, resolve_model
from .receptive_field import RFInfo, trace_receptive_field, traced_forward

_IDENTITY = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "tanh", "tanh_", "sigmoid", "sigmoid_", "silu", "silu_",
    "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "gelu", "leaky_relu", "leaky_relu_", "elu",
    "elu_", "selu", "selu_", "celu", "celu_", "mish", "mish_", "softplus", "prelu", "rrelu", "rrelu_",
    "logsigmoid", "softsign", "tanhshrink", "threshold", "threshold_", "hardshrink", "softshrink",
    "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "batch_norm", "group_norm", "layer_norm", "instance_norm", "local_response_norm",
}
_GLOBAL_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm"}
_MAXPOOL_SIG = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in [
    ("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
    ("padding", 0), ("dilation", 1), ("ceil_mode", False), ("return_indices", False)]])


def _first_tensor(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs.get("input", next(iter(kwargs.values())))


class _Linearise(TorchFunctionMode):
    """Identity activations/norms, max -> average pooling, detached global context, optional thin convs."""

    def __init__(self, mode: str = "exact") -> None:
        super().__init__()
        self.mode = mode  # exact | thin | broadcast | materialise (see rf_probe)
        self.fast = mode != "exact"
        self._ones: dict[tuple, Tensor] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _IDENTITY:
            return _first_tensor(args, kwargs)
        if name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices"):
            b = _MAXPOOL_SIG.bind(*args, **kwargs)
            b.apply_defaults()
            a = b.arguments
            if any(d != 1 for d in ([a["dilation"]] if isinstance(a["dilation"], int) else a["dilation"])):
                raise CnnzooError("the probe cannot replace a dilated max pool by an average pool")
            out = F.avg_pool2d(a["input"], a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"])
            return (out, None) if a["return_indices"] or name == "max_pool2d_with_indices" else out
        if name in ("adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"):
            out = F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
            return (out, None) if name.endswith("indices") or kwargs.get("return_indices") else out
        if self.fast and name == "conv2d":
            return self._thin_conv(*args, **kwargs)
        if self.mode == "thin" and name == "linear":  # one channel in, all outputs equal
            x, w = _first_tensor(args, kwargs), (args[1] if len(args) > 1 else kwargs["weight"])
            return x.mean(-1, keepdim=True).expand(*x.shape[:-1], w.shape[0])
        out = func(*args, **kwargs)
        if isinstance(out, Tensor) and self._is_global(name, args, kwargs, out):
            # conv-path check: global context is dropped -- a constant 1 without gradient, so an SE gate
            # becomes 1 x map (merely detaching it would let the linearised gates square the activations
            # block after block until float64 overflows). Computed from ``out`` rather than ones_like so
            # the tracer still follows the path to the output.
            return out.detach() * 0.0 + 1.0
        return out

    @staticmethod
    def _is_global(name: str, args: tuple, kwargs: dict, out: Tensor) -> bool:
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if x is None or x.dim() < 3:
            return False
        if name == "adaptive_avg_pool2d":
            return out.shape[-2:].numel() == 1 and x.shape[-2:].numel() > 1
        if name in _GLOBAL_REDUCE:
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            if dims is None:
                return x.shape[-2:].numel() > 1
            dims = {d % x.dim() for d in ([dims] if isinstance(dims, int) else dims)}
            return {x.dim() - 2, x.dim() - 1} <= dims and x.shape[-2:].numel() > 1
        return False

    def _thin_conv(self, input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                   padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
        """The positive linear conv on the channel mean, broadcast to the conv's output channels.

        A constant normalised k x k kernel is a box filter: ``avg_pool2d`` (zero padding counted) computes
        it several times faster than a float64 convolution; dilated or 'same'-padded convs use conv2d.
        Mode ``thin`` returns the one channel (every channel is equal), ``broadcast`` a stride-0 view over
        the conv's output channels (a conv fed such a view skips the mean), ``materialise`` a real copy.
        """
        kh, kw = weight.shape[-2:]
        m = input[:, :1] if input.shape[1] > 1 and input.stride(1) == 0 else input.mean(1, keepdim=True)
        dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        pad = (padding, padding) if isinstance(padding, int) else padding
        if dil == (1, 1) and not isinstance(pad, str) and all(2 * p <= k for p, k in zip(pad, (kh, kw), strict=True)):
            y = F.avg_pool2d(m, (kh, kw), stride, tuple(pad), count_include_pad=True)
        else:
            key = (kh, kw, input.dtype, input.device)
            if key not in self._ones:
                self._ones[key] = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=input.dtype,
                                             device=input.device)
            y = F.conv2d(m, self._ones[key], None, stride, padding, dilation)
        if self.mode == "thin":
            return y
        y = y.expand(y.shape[0], weight.shape[0], *y.shape[2:])
        return y.contiguous() if self.mode == "materialise" else y


@dataclass(frozen=True)
class ProbeResult:
    """Bounding box of the non-zero input gradient of one unit, and the traced RF it should equal."""

    layer: str
    unit: tuple[int, ...]
    box: tuple[tuple[int, int], ...]  # ((first row, last row), (first col, last col)) with non-zero gradient
    expected: tuple[tuple[int, int], ...]  # the traced field of ``unit``, clipped to the pixels the net uses
    rf: RFInfo
    input_size: tuple[int, ...]

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(b - a + 1 for a, b in self.box)

    @property
    def expected_size(self) -> tuple[int, ...]:
        return tuple(b - a + 1 for a, b in self.expected)

    @property
    def clipped(self) -> bool:
        """Whether the image border cuts the field (then only the clipped box is checked)."""
        return self.expected_size != self.rf.r

    @property
    def ok(self) -> bool:
        return self.box == self.expected


def _positive_linear_weights(model: nn.Module) -> dict[str, Tensor]:
    """float64 stand-ins for every parameter and float buffer: weights 1/fan-in, biases 0, other vectors 1.

    Stride-0 expanded scalars, so nothing is copied: ``functional_call`` runs the user's module with them.
    """
    out: dict[str, Tensor] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        v = 1.0 / p[0].numel() if p.dim() >= 2 else (0.0 if name.endswith("bias") else 1.0)
        out[name] = torch.tensor(v, dtype=torch.float64).expand(p.shape)
    for name, b in model.named_buffers(remove_duplicate=False):
        if b.is_floating_point():  # running statistics and the like (BatchNorm is the identity here)
            out[name] = torch.ones((), dtype=torch.float64).expand(b.shape)
        elif b.is_meta and name.endswith("num_batches_tracked"):
            out[name] = torch.zeros((), dtype=b.dtype).expand(b.shape)
        elif b.is_meta:
            raise CnnzooError(f"the probe needs the real values of buffer {name!r}: build the model on the CPU")
        # integer/bool buffers (connection masks, counters) keep their values
    return out


class _Stop(Exception):
    pass


def _module_output(model: nn.Module, layer: str, call: Any, x: Tensor) -> Tensor:
    """Output of module ``layer`` during ``call(x)``; the rest of the forward pass is skipped."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise CnnzooError(f"the model has no module {layer!r}")
    captured: dict[str, Tensor] = {}

    def hook(m: nn.Module, a: Any, out: Any) -> None:
        captured["y"] = out[0] if isinstance(out, tuple | list) else out
        raise _Stop  # the head is not needed

    handle = modules[layer].register_forward_hook(hook)
    try:
        call(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "y" not in captured:
        raise CnnzooError(f"module {layer!r} did not run")
    return captured["y"]


def _unit(spec: str | Sequence[int], size: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(spec, str):
        pick = {"first": lambda n: 0, "last": lambda n: n - 1, "centre": lambda n: (n - 1) // 2,
                "center": lambda n: (n - 1) // 2}
        if spec not in pick:
            raise CnnzooError(f"unit must be 'first', 'centre', 'last' or indices, not {spec!r}")
        return tuple(pick[spec](n) for n in size)
    unit = tuple(int(u) for u in spec)
    if len(unit) != len(size) or any(not 0 <= u < n for u, n in zip(unit, size, strict=True)):
        raise CnnzooError(f"unit {unit} is outside the {'x'.join(map(str, size))} feature map")
    return unit


def rf_probe(
    model: nn.Module | str, input_size: Sequence[int] | None = None, layer: str | None = None,
    units: Sequence[str | Sequence[int]] = ("centre",), fast: bool = False,
) -> list[ProbeResult]:
    """Measure the receptive field of ``units`` of module ``layer``'s output (default: the last feature map
    found by :func:`receptive_field`) from the input gradient of the positive linearised net, and return
    each beside the traced value (see the module docstring).

    ``units`` are index tuples or 'first' / 'centre' / 'last'; all are measured in one backward pass (one
    image per unit). Probing 'first' and 'last' checks both ends of the field (r and start) with an input
    only about r/2 wide; 'centre' needs an input wider than r to see the whole field unclipped.
    """
    model = resolve_model(model)
    size = check_input_size(default_input_size(model) if input_size is None else input_size)
    rf = trace_receptive_field(model, size)  # the traced field of the unmodified net: what is checked
    if layer is not None and layer not in rf.modules:
        raise CnnzooError(f"the model has no module {layer!r} that outputs a map derived from the input")
    info = rf.final if layer is None else rf.module(layer)
    if info.jump is None:
        raise CnnzooError(f"{layer or 'the output'!r} is a flat tensor, not a feature map")
    chosen = [_unit(u, info.size) for u in units]
    weights = _positive_linear_weights(model)

    def call(inp: Tensor) -> Any:
        return torch.func.functional_call(model, weights, (inp,), strict=False)

    # fast: the cheapest form that the net's code accepts (one channel; channel-count-dependent code such as
    # a hard-coded view fails there: then channel views; in-place additions into those: then copies)
    modes = ["thin", "broadcast", "materialise"] if fast else ["exact"]
    for k, mode in enumerate(modes):
        x = torch.ones((len(chosen), *size), dtype=torch.float64, requires_grad=True)
        try:
            with eval_mode(model), _Linearise(mode):
                if layer is None:  # the last feature map, wherever the net makes it (module or plain function)
                    lin, y = traced_forward(model, x, call)
                    if (lin.final.r, lin.final.size) != (info.r, info.size):
                        raise CnnzooError("the linearised net traces differently from the net; pass layer=NAME")
                else:
                    y = _module_output(model, layer, call, x)
            break
        except (RuntimeError, ValueError, IndexError) as e:
            if k == len(modes) - 1 or isinstance(e, CnnzooError):
                raise
    if tuple(y.shape[2:]) != tuple(info.size):
        raise CnnzooError(f"the probed map {tuple(y.shape)} does not match the traced map {info.size}")
    # image i feeds only unit i's gradient: one backward for all units
    (grad,) = torch.autograd.grad(sum(y[(i, slice(None), *u)].sum() for i, u in enumerate(chosen)), x)
    results = []
    for i, unit in enumerate(chosen):
        support = grad[i].ne(0).any(0)
        box = []
        for axis in range(support.dim()):
            others = tuple(a for a in range(support.dim()) if a != axis)
            idx = support.any(dim=others).nonzero()
            box.append((int(idx.min()), int(idx.max())) if len(idx) else (0, -1))
        expected = tuple(info.interval(unit, clip=True))
        results.append(ProbeResult(layer=layer or rf.feature_module or "", unit=unit, box=tuple(box),
                                   expected=expected, rf=info, input_size=size))
    return results
