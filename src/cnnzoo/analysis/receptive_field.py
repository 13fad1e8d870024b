"""Receptive fields traced through the real graph of any ``nn.Module``.

How: one forward pass on the meta device (shapes only) under a ``TorchDispatchMode`` that sees every
ATen operation the net runs, whatever its Python control flow (GoogLeNet's eval/train branches, LeNet's
input padding, a user's ``if``), and attaches to each tensor that depends on the input a receptive-field
state per spatial axis (H, W):

- ``lo``, ``hi``: the first and last input pixel seen by unit 0 of the map (pixel centres at 0..W-1;
  negative values lie in the padding), so r = hi - lo + 1 and start (centre of unit 0) = (lo + hi) / 2;
- ``j``: the jump (effective stride), input pixels between neighbouring units.

A conv or pool with kernel k, stride s, padding p, dilation d (effective kernel k' = d(k-1)+1) maps
(lo, hi, j) to (lo - p j, hi + (k'-1-p) j, s j); padding ops shift lo/hi; element-wise ops, residual
additions and channel concatenations take the hull of the fields that meet (the largest RF over the
paths, exact even when the paths' centres differ). Operations that mix the whole map -- global pooling,
means, flattening a map before a Linear, normalisation statistics -- are recorded as global context: the
tensor is flagged, and where such a tensor gates a map (squeeze-and-excitation) the map keeps its
conv-path field and the flag. The net's RF is that of the last spatial feature map before the head.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..errors import CnnzooError
from ..utils import fmt
from ._common import check_input_size, default_input_size, resolve_model, shape_forward


class UnknownLayerError(CnnzooError, KeyError):
    """A layer name that is not in the traced net (still a ``KeyError`` for callers that caught that)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------------
# state carried by each tensor


@dataclass(frozen=True)
class _State:
    node: int  # id of the event that produced this field
    axes: tuple[int, ...] | None  # tensor dims holding the spatial axes; None once the map is flattened
    size: tuple[int, ...]  # units per spatial axis (for flat tensors: of the last map)
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    j: tuple[float, ...]
    vlo: tuple[float, ...] = ()  # first and last input pixel that some unit of the map really uses
    vhi: tuple[float, ...] = ()  # (inside the image; floor-mode strides can leave trailing pixels unused)
    glob: bool = False  # some path into this tensor went through global context
    gate: bool = False  # the same global value at every position (a broadcast SE gate): lo/hi is the hull

    @property
    def r(self) -> tuple[int, ...]:
        return tuple(int(h - l + 1) for l, h in zip(self.lo, self.hi, strict=True))

    def hull(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(lo, hi) of the union of all units' fields: what something that sees the whole map sees."""
        if self.gate or self.axes is None:
            return self.lo, self.hi
        return self.lo, tuple(h + (n - 1) * j for h, n, j in zip(self.hi, self.size, self.j, strict=True))


@dataclass
class _Event:
    id: int
    op: str
    module: str
    kind: str  # input | conv | pool | pad | global | flatten | gate | merge | unsupported
    inputs: tuple[int, ...]
    state: _State
    note: str = ""
    params: dict = field(default_factory=dict)


_FACTORY = {  # outputs that do not depend on the input's values
    "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
    "new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided", "empty", "zeros", "ones", "full",
    "scalar_tensor", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
    "_local_scalar_dense", "fill", "zero", "normal", "uniform", "random", "exponential", "geometric",
    "cauchy", "log_normal", "bernoulli", "detach_", "_has_compatible_shallow_copy_type",
}
_CONV = {"convolution", "_convolution", "convolution_overrideable", "_convolution_mode"}
_POOL = {
    "max_pool1d": 1, "max_pool1d_with_indices": 1, "avg_pool1d": 1,
    "max_pool2d": 2, "max_pool2d_with_indices": 2, "avg_pool2d": 2,
    "max_pool3d": 3, "max_pool3d_with_indices": 3, "avg_pool3d": 3,
}
_ADAPTIVE = {
    "adaptive_avg_pool1d": 1, "adaptive_max_pool1d": 1, "_adaptive_avg_pool2d": 2, "adaptive_avg_pool2d": 2,
    "adaptive_max_pool2d": 2, "_adaptive_avg_pool3d": 3, "adaptive_avg_pool3d": 3, "adaptive_max_pool3d": 3,
}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean",
           "logsumexp", "nansum", "nanmean", "argmax", "argmin", "any", "all", "norm", "linalg_vector_norm"}
_MIX_ALONG = {"_softmax", "_log_softmax", "softmax", "log_softmax", "cumsum", "cumprod", "sort", "logcumsumexp"}
_VIEW = {"view", "_unsafe_view", "reshape", "_reshape_alias", "squeeze", "unsqueeze", "flatten", "alias",
         "unflatten", "as_strided", "view_as", "reshape_as"}
_PERMUTE = {"permute", "transpose", "t", "movedim", "swapaxes"}
_PAD = {"constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
        "replication_pad2d", "replication_pad3d", "_pad_circular", "pad"}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot", "einsum", "_addmm_activation"}
_SPATIAL_SHUFFLE = {"flip", "roll", "rot90", "index", "index_select", "gather", "scatter", "scatter_add",
                    "take", "index_put", "pixel_shuffle", "pixel_unshuffle", "im2col", "col2im",
                    "grid_sampler_2d", "unfold", "upsample_nearest1d", "upsample_nearest2d",
                    "upsample_nearest3d", "upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bilinear2d_aa",
                    "_upsample_nearest_exact2d", "upsample_linear1d", "upsample_trilinear3d", "select", "narrow"}


def _ints(v: Any, n: int, default: Any) -> list[int]:
    if v is None or (isinstance(v, list | tuple) and len(v) == 0):
        v = default
    if isinstance(v, int | float):
        return [int(v)] * n
    v = [int(x) for x in v]
    return v * n if len(v) == 1 else v


def _prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


def _find_axis(in_shape: Sequence[int], out_shape: Sequence[int], a: int) -> int | None:
    """Where input dim ``a`` ends up after a view, or None if it was merged/split (same size and the same
    number of elements after it: the dim was neither merged with nor split from its neighbours)."""
    size, suffix = in_shape[a], _prod(in_shape[a + 1:])
    for b in range(len(out_shape)):
        if out_shape[b] == size and _prod(out_shape[b + 1:]) == suffix:
            return b
    return None


class _Tracer(TorchDispatchMode):
    """Propagates receptive-field states through every ATen op; records conv/pool/global events."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # never runs under torch.compile: skip the torch._dynamo import
        return False

    def __init__(self, model: nn.Module, nsp: int) -> None:
        super().__init__()
        self.nsp = nsp
        self.states: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.events: list[_Event] = []
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.module_out: dict[str, _State] = {}
        self.node_modules: dict[int, list[str]] = {}
        self.node_tensor: dict[int, Tensor] = {}  # latest feature map carrying each field (for probes)
        self.warnings: list[str] = []
        self._keep: list[Tensor] = []  # keeps traced tensors alive so ids are not reused

    # -- module bookkeeping (global hooks, active only inside ``hooks()``)
    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        def pre(module: nn.Module, args: Any) -> None:
            self.stack.append(self.names.get(id(module), type(module).__name__))

        def post(module: nn.Module, args: Any, out: Any) -> None:
            name = self.stack.pop() if self.stack else ""
            if id(module) not in self.names:
                return
            st = next((self.states.get(t) for t in tree_leaves(out)
                       if isinstance(t, Tensor) and self.states.get(t) is not None), None)
            if st is not None:
                self.module_out[name] = st
                if st.axes is not None:  # modules that output a feature map (hook them to probe it)
                    self.node_modules.setdefault(st.node, []).append(name)

        h1, h2 = register_module_forward_pre_hook(pre), register_module_forward_hook(post)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()

    def start(self, x: Tensor) -> None:
        n = self.nsp
        st = _State(node=0, axes=tuple(range(x.dim() - n, x.dim())), size=tuple(x.shape[-n:]),
                    lo=(0.0,) * n, hi=(0.0,) * n, j=(1.0,) * n, vlo=(0.0,) * n,
                    vhi=tuple(float(v - 1) for v in x.shape[-n:]))
        self.events = [_Event(0, "input", "", "input", (), st)]
        self.states[x] = st
        self.node_tensor[0] = x

    def _event(self, op: str, kind: str, inputs: Sequence[_State], state: _State, note: str = "",
               **params: Any) -> _State:
        eid = len(self.events)
        state = replace(state, node=eid)
        module = self.stack[-1] if self.stack else ""
        self.events.append(_Event(eid, op, module, kind, tuple(dict.fromkeys(s.node for s in inputs)), state,
                                  note, params))
        return state

    # -- dispatch
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
        ins = [(t, s) for t in tree_leaves((args, kwargs))
               if isinstance(t, Tensor) and (s := self.states.get(t)) is not None]
        if not ins:
            return out
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if base in _FACTORY:
            for t in outs:
                self.states.pop(t, None)
            return out
        if not outs:
            return out
        try:
            new = self._propagate(base, args, kwargs, ins, outs)
        except Exception as e:  # a rule that does not fit this op's arguments: say so, stay conservative
            self.warnings.append(f"{base}: could not follow ({type(e).__name__}: {e}); treated as global")
            new = {0: self._unsupported(base, ins, outs[0])}
        for i, st in new.items():
            self.states[outs[i]] = st
            self._keep.append(outs[i])
            if st.axes is not None and base not in ("detach", "alias", "lift_fresh"):
                # (autograd detaches results it saves for backward: those copies are not the net's tensor)
                self.node_tensor[st.node] = outs[i]
        return out

    def _propagate(self, name: str, args: tuple, kwargs: dict, ins: list, outs: list[Tensor]) -> dict[int, _State]:
        x = args[0] if args and isinstance(args[0], Tensor) else None
        sx = self.states.get(x) if x is not None else None
        o = outs[0]
        if name in _CONV and sx is not None and sx.axes is not None and len(ins) == 1:
            return {0: self._conv(name, args, x, sx, o)}
        if name in _POOL and sx is not None and sx.axes is not None:
            kd = _POOL[name]
            k = _ints(args[1], kd, 1)
            s = _ints(args[2] if len(args) > 2 else None, kd, k)
            p = _ints(args[3] if len(args) > 3 else 0, kd, 0)
            d = _ints(args[4] if "max" in name and len(args) > 4 else 1, kd, 1)
            if all(v == 1 for v in k + s):  # a pool over channels only (LocalResponseNorm): spatially pointwise
                return self._pointwise(name, ins, outs)
            kind = "maxpool" if "max" in name else "avgpool"
            st = self._window(sx, x.dim(), kd, k, s, p, d, o)
            if st is None:
                return {0: self._unsupported(name, ins, o)}
            st = self._event(kind, "pool", [sx], st, kernel=k, stride=s, padding=p, dilation=d)
            return {i: st for i in range(len(outs))}
        if name in _ADAPTIVE and sx is not None and sx.axes is not None:
            return {i: st for i, st in enumerate([self._adaptive(name, x, sx, o)] * len(outs))}
        if name in _REDUCE and sx is not None:
            return self._reduce(name, args, kwargs, x, sx, ins, outs)
        if name in _MIX_ALONG and sx is not None and sx.axes is not None:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if isinstance(dim, int) and dim % x.dim() in sx.axes:
                return {0: self._flag(name, sx, f"{name} along a spatial axis")}
            return self._pointwise(name, ins, outs)
        if name in ("native_group_norm", "native_layer_norm", "native_batch_norm", "_native_batch_norm_legit",
                    "instance_norm") and sx is not None and sx.axes is not None:
            if self._stats_over_map(name, args, x, sx):
                st = self._flag(name, sx, "normalisation statistics over the map")
                return {i: st for i in range(len(outs)) if outs[i].shape == x.shape} or {0: st}
            return self._pointwise(name, ins, outs)
        if name in _VIEW and sx is not None:
            return {0: self._view(name, x, sx, o)}
        if name in _PERMUTE and sx is not None:
            return {0: self._permute(name, args, x, sx, o)}
        if name in _PAD and sx is not None and sx.axes is not None:
            return {0: self._pad(name, args, x, sx, o)}
        if name == "slice" and sx is not None and sx.axes is not None:
            dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % x.dim()
            if dim in sx.axes:
                return {0: self._slice(args, x, sx, o, dim)}
            return self._pointwise(name, ins, outs)
        if name == "copy" and len(args) > 1 and isinstance(args[1], Tensor):
            src = self.states.get(args[1])
            return {0: src} if src is not None else {}
        if name in ("cat", "stack"):
            return self._cat(name, args, kwargs, ins, o)
        if name in _SPATIAL_SHUFFLE:
            if name in ("flip", "roll", "index_select", "gather", "scatter", "scatter_add", "select", "narrow") \
                    and sx is not None and sx.axes is not None:
                dims = args[1] if name in ("index_select", "gather", "scatter", "scatter_add", "select",
                                           "narrow", "flip") else (args[2] if len(args) > 2 else [])
                dims = [dims] if isinstance(dims, int) else list(dims or [])
                if not any(d % x.dim() in sx.axes for d in dims):
                    return self._pointwise(name, ins, outs)
            return {0: self._unsupported(name, ins, o)}
        return self._pointwise(name, ins, outs)

    # -- rules
    def _window(self, st: _State, ndim: int, kd: int, k: list, s: list, p: list, d: list, o: Tensor) -> _State | None:
        lo, hi, j, vlo, vhi = list(st.lo), list(st.hi), list(st.j), list(st.vlo), list(st.vhi)
        first = ndim - kd
        for i, a in enumerate(st.axes):
            rel = a - first
            if rel < 0:
                return None  # the op treats a spatial axis as batch/channel
            kk, ss, pp, dd = k[rel], s[rel], p[rel], d[rel]
            n_in, n_out = st.size[i], o.shape[a]
            # taps of the first and last output unit that land on real (non-padding) input units
            first_taps = [t for t in range(-pp, -pp + dd * kk, dd) if 0 <= t < n_in]
            last_taps = [t for t in range((n_out - 1) * ss - pp, (n_out - 1) * ss - pp + dd * kk, dd) if 0 <= t < n_in]
            if first_taps:
                vlo[i] = max(vlo[i], lo[i] + first_taps[0] * j[i])
            if last_taps:
                vhi[i] = min(vhi[i], hi[i] + last_taps[-1] * j[i])
            keff = dd * (kk - 1) + 1
            lo[i] = lo[i] - pp * j[i]
            hi[i] = hi[i] + (keff - 1 - pp) * j[i]
            j[i] = j[i] * ss
        return replace(st, lo=tuple(lo), hi=tuple(hi), j=tuple(j), vlo=tuple(vlo), vhi=tuple(vhi),
                       size=tuple(o.shape[a] for a in st.axes))

    def _conv(self, name: str, args: tuple, x: Tensor, sx: _State, o: Tensor) -> _State:
        w = args[1]
        kd = w.dim() - 2
        k = list(w.shape[2:])
        if name == "_convolution_mode":  # F.conv2d(padding='same'|'valid')
            s, d = _ints(args[3], kd, 1), _ints(args[5], kd, 1)
            # 'same' pads d(k-1) in total, the odd one on the right (as torch does)
            p = [(di * (ki - 1)) // 2 for ki, di in zip(k, d, strict=True)] if args[4] == "same" else [0] * kd
            transposed = False
        else:
            s, p, d = _ints(args[3], kd, 1), _ints(args[4], kd, 0), _ints(args[5], kd, 1)
            transposed = bool(args[6])
        if transposed:
            self.warnings.append("transposed convolution: receptive field not defined by this tool")
            return self._unsupported("conv_transpose", [(x, sx)], o)
        st = self._window(sx, x.dim(), kd, k, s, p, d, o)
        if st is None:
            return self._unsupported(name, [(x, sx)], o)
        groups = int(args[8]) if len(args) > 8 else 1
        return self._event("conv", "conv", [sx], st, kernel=k, stride=s, padding=p, dilation=d, groups=groups)

    def _adaptive(self, name: str, x: Tensor, sx: _State, o: Tensor) -> _State:
        lo, hi, j = list(sx.lo), list(sx.hi), list(sx.j)
        notes, glob_axes, ident = [], 0, 0
        for i, a in enumerate(sx.axes):
            n, m = x.shape[a], o.shape[a]
            if m == n:
                ident += 1
            elif m == 1:
                glob_axes += 1
                hi[i] = hi[i] + (n - 1) * j[i]
            else:  # windows [floor(u n/m), ceil((u+1) n/m)): uniform only when m divides n
                widths = [math.ceil((u + 1) * n / m) - math.floor(u * n / m) for u in range(m)]
                hi[i] = hi[i] + (max(widths) - 1) * j[i]
                j[i] = j[i] * n / m
                if n % m:
                    notes.append("non-uniform windows: r is the widest")
        st = replace(sx, lo=tuple(lo), hi=tuple(hi), j=tuple(j), size=tuple(o.shape[a] for a in sx.axes),
                     glob=sx.glob or glob_axes > 0)
        op = "adaptive " + ("maxpool" if "max" in name else "avgpool")
        size = "x".join(str(x.shape[a]) for a in sx.axes)
        out = "x".join(str(o.shape[a]) for a in sx.axes)
        if glob_axes == len(sx.axes):
            return self._event(op, "global", [sx], st, f"global pool {size} -> {out}")
        if ident == len(sx.axes):
            notes.append(f"identity at {size}")
        return self._event(op, "pool", [sx], st, "; ".join(notes), output_size=out)

    def _reduce(self, name: str, args: tuple, kwargs: dict, x: Tensor, sx: _State, ins: list,
                outs: list[Tensor]) -> dict[int, _State]:
        if name in ("norm", "linalg_vector_norm"):
            dims, keep = (args[2] if len(args) > 2 else kwargs.get("dim")), (args[3] if len(args) > 3 else False)
        else:
            dims = args[1] if len(args) > 1 and not isinstance(args[1], bool) else kwargs.get("dim")
            keep = next((a for a in args[2:] if isinstance(a, bool)), kwargs.get("keepdim", False))
        dims = None if dims is None else ([dims] if isinstance(dims, int) else list(dims))
        if not dims:
            dims = list(range(x.dim()))
        dims = [d % x.dim() for d in dims]
        if sx.axes is None:
            return self._pointwise(name, ins, outs)
        reduced = [i for i, a in enumerate(sx.axes) if a in dims and x.shape[a] > 1]
        if not reduced:
            return self._pointwise(name, ins, outs) if any(a not in dims for a in sx.axes) or keep \
                else {i: replace(sx, axes=None) for i in range(len(outs))}
        lo, hi = sx.hull()
        if keep:
            st = replace(sx, hi=hi, lo=lo, size=(1,) * len(sx.axes), glob=True)
        else:  # spatial axes gone: a flat vector per image
            st = replace(sx, axes=None, lo=lo, hi=hi, glob=True)
        size = "x".join(str(x.shape[a]) for a in sx.axes)
        st = self._event(f"global {name}", "global", [sx], st, f"{name} over the {size} map")
        return {i: st for i in range(len(outs))}

    def _stats_over_map(self, name: str, args: tuple, x: Tensor, sx: _State) -> bool:
        if name in ("native_batch_norm", "_native_batch_norm_legit"):
            training = args[5] if len(args) > 5 else False
            return bool(training) and any(x.shape[a] > 1 for a in sx.axes)
        if name == "native_layer_norm":
            nd = len(args[1])
            return any(a >= x.dim() - nd and x.shape[a] > 1 for a in sx.axes)
        return any(x.shape[a] > 1 for a in sx.axes)  # group norm / instance norm: per-channel stats over H, W

    def _flag(self, name: str, sx: _State, note: str) -> _State:
        """Global context that keeps the map (normalisation statistics, softmax over positions)."""
        return self._event(name, "global", [sx], replace(sx, glob=True), note)

    def _view(self, name: str, x: Tensor, sx: _State, o: Tensor) -> _State:
        if sx.axes is None:
            return sx
        new, lost = [], []
        for i, a in enumerate(sx.axes):
            b = _find_axis(x.shape, o.shape, a) if x.shape[a] > 1 else None
            if b is None and x.shape[a] == 1:  # size-1 axes: keep them if an equal axis is left where it was
                shift = o.dim() - x.dim()
                b = a + shift if 0 <= a + shift < o.dim() and o.shape[a + shift] == 1 else None
            (lost if b is None else new).append(i if b is None else b)
        if not lost:
            return replace(sx, axes=tuple(new))
        if all(sx.size[i] == 1 for i in lost):  # flattening a 1x1 map: every value keeps its field
            return replace(sx, axes=None)
        lo, hi = sx.hull()
        size = "x".join(map(str, sx.size))
        return self._event("flatten", "flatten", [sx], replace(sx, axes=None, lo=lo, hi=hi, glob=True),
                           f"flattens a {size} map: what follows sees every position")

    def _permute(self, name: str, args: tuple, x: Tensor, sx: _State, o: Tensor) -> _State:
        if sx.axes is None:
            return sx
        nd = x.dim()
        if name == "permute":
            dims = [d % nd for d in args[1]]
            return replace(sx, axes=tuple(dims.index(a) for a in sx.axes))
        if name in ("transpose", "swapaxes", "t"):
            d0, d1 = (0, 1) if name == "t" else (args[1] % nd, args[2] % nd)
            swap = {d0: d1, d1: d0}
            return replace(sx, axes=tuple(swap.get(a, a) for a in sx.axes))
        return self._unsupported(name, [(x, sx)], o)

    def _pad(self, name: str, args: tuple, x: Tensor, sx: _State, o: Tensor) -> _State:
        pad = list(args[1])
        lo, hi = list(sx.lo), list(sx.hi)
        nd = x.dim()
        for i, a in enumerate(sx.axes):
            e = nd - 1 - a  # pads are given from the last dim backwards: (left, right, top, bottom, ...)
            if 2 * e < len(pad):
                lo[i] -= pad[2 * e] * sx.j[i]
                hi[i] -= pad[2 * e] * sx.j[i]
        st = replace(sx, lo=tuple(lo), hi=tuple(hi), size=tuple(o.shape[a] for a in sx.axes))
        if st.lo == sx.lo and st.size == sx.size:
            return sx
        note = "" if name == "constant_pad_nd" else "padding copies border pixels: fields of border units differ"
        return self._event("pad", "pad", [sx], st, note, padding=pad[:2 * len(sx.axes)])

    def _slice(self, args: tuple, x: Tensor, sx: _State, o: Tensor, dim: int) -> _State:
        n = x.shape[dim]
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        step = args[4] if len(args) > 4 else 1
        start = max(0, min(n, start + n if start < 0 else start))
        i = sx.axes.index(dim)
        lo, hi, j, vlo, vhi = list(sx.lo), list(sx.hi), list(sx.j), list(sx.vlo), list(sx.vhi)
        last = start + (o.shape[dim] - 1) * step
        vlo[i] = max(vlo[i], lo[i] + start * j[i])
        vhi[i] = min(vhi[i], hi[i] + last * j[i])
        lo[i] += start * j[i]
        hi[i] += start * j[i]
        j[i] *= step
        st = replace(sx, lo=tuple(lo), hi=tuple(hi), j=tuple(j), vlo=tuple(vlo), vhi=tuple(vhi),
                     size=tuple(o.shape[a] for a in sx.axes))
        if (start, step) == (0, 1):
            return st
        return self._event("slice", "pad", [sx], st, f"slice start {start} step {step}")

    def _cat(self, name: str, args: tuple, kwargs: dict, ins: list, o: Tensor) -> dict[int, _State]:
        dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % o.dim()
        if name == "stack":  # a new dim at ``dim``: spatial axes at or after it move by one
            ins = [(t, s if s.axes is None else replace(s, axes=tuple(a + (a >= dim) for a in s.axes)))
                   for t, s in ins]
            return self._merge_into(name, ins, o, aligned=True)
        if any(s.axes is not None and dim in s.axes and o.shape[dim] != t.shape[dim] for t, s in ins):
            return {0: self._unsupported("cat along a spatial axis", ins, o)}
        return self._merge_into(name, ins, o)

    def _pointwise(self, name: str, ins: list, outs: list[Tensor]) -> dict[int, _State]:
        res: dict[int, _State] = {}
        for i, o in enumerate(outs):
            r = self._merge_into(name, ins, o, strict=len(outs) == 1)
            if 0 in r:
                res[i] = r[0]
        return res

    def _merge_into(self, name: str, ins: list, o: Tensor, strict: bool = True, aligned: bool = False
                    ) -> dict[int, _State]:
        """The field of ``o`` from element-wise/broadcast inputs (add, mul, cat, activations, BN...).

        Inputs whose map has ``o``'s size contribute their fields (hull: the largest over the paths);
        inputs broadcast over the map (1x1 maps, flat vectors, gates) are global context: flagged, and
        kept out of the field, which is the conv-path convention for squeeze-and-excitation.
        """
        contrib: list[_State] = []
        gates: list[_State] = []
        gate_axes: tuple[int, ...] | None = None
        axes_out: tuple[int, ...] | None = None
        for t, s in ins:
            if s.axes is None:
                gates.append(s)
                continue
            shift = 0 if aligned else o.dim() - t.dim()
            oa = tuple(a + shift for a in s.axes)
            if any(b < 0 or b >= o.dim() for b in oa):
                return {0: self._unsupported(name, ins, o)} if strict else {}
            osz = tuple(o.shape[b] for b in oa)
            if osz == s.size and not s.gate:
                contrib.append(s)
                axes_out = axes_out or oa
            elif s.gate or all(v == 1 for v in s.size):
                gates.append(s)
                gate_axes = gate_axes or oa
            else:
                return {0: self._unsupported(name, ins, o)} if strict else {}
        if contrib:
            lo = tuple(min(s.lo[k] for s in contrib) for k in range(self.nsp))
            hi = tuple(max(s.hi[k] for s in contrib) for k in range(self.nsp))
            if len({s.j for s in contrib}) > 1:
                self.warnings.append(f"{name}: maps with different jumps meet; kept the widest field's jump")
            widest = max(contrib, key=lambda s: sum(s.r))
            st = replace(widest, axes=axes_out, lo=lo, hi=hi, glob=any(s.glob for s in contrib) or bool(gates),
                         vlo=tuple(min(s.vlo[k] for s in contrib) for k in range(self.nsp)),
                         vhi=tuple(max(s.vhi[k] for s in contrib) for k in range(self.nsp)))
        else:  # only global values meet: the output is one too (a flat vector, a 1x1 map or a broadcast gate)
            lo = tuple(min(s.hull()[0][k] for s in gates) for k in range(self.nsp))
            hi = tuple(max(s.hull()[1][k] for s in gates) for k in range(self.nsp))
            if gate_axes is None:
                st = replace(gates[0], axes=None, lo=lo, hi=hi, glob=any(s.glob for s in gates))
            else:
                size = tuple(o.shape[b] for b in gate_axes)
                broadcast = any(v > 1 for v in size)
                st = replace(gates[0], axes=gate_axes, size=size, lo=lo, hi=hi,
                             glob=broadcast or any(s.glob for s in gates), gate=broadcast or gates[0].gate)
            contrib, gates = gates, []
        nodes = {s.node for s in contrib + gates}
        if len(nodes) == 1:
            return {0: replace(st, node=nodes.pop())}
        kind = "gate" if gates else "merge"
        return {0: self._event(name, kind, contrib + gates, st, "gated by global context" if gates else "")}

    def _unsupported(self, name: str, ins: list, o: Tensor) -> _State:
        states = [s for t, s in ins]
        lo = tuple(min(s.hull()[0][k] for s in states) for k in range(self.nsp))
        hi = tuple(max(s.hull()[1][k] for s in states) for k in range(self.nsp))
        st = replace(states[0], axes=None, lo=lo, hi=hi, glob=True)
        if name in _MATMUL:
            return self._event(name, "global", states, st, f"{name} mixes spatial positions")
        self.warnings.append(f"{name} changes the spatial layout in a way this tool does not follow: "
                             "treated as global context")
        return self._event(name, "unsupported", states, st, "not followed: treated as global")


# ---------------------------------------------------------------------------------------------------
# results


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 3)


@dataclass(frozen=True)
class RFInfo:
    """Receptive field of one feature map, per spatial axis (H, W)."""

    r: tuple[int, ...]  # receptive field size in input pixels
    jump: tuple[int | float, ...] | None  # input pixels between neighbouring units (None once flattened)
    start: tuple[int | float, ...]  # centre of unit 0 in input pixel coordinates (pixel centres 0..W-1)
    size: tuple[int, ...]  # units of the map
    global_context: bool  # some path into it went through global pooling / gating / flattening
    used: tuple[tuple[int, int], ...] = ()  # (first, last) input pixel some unit uses, per axis

    def interval(self, unit: Sequence[int], clip: bool = False) -> list[tuple[int, int]]:
        """[(first, last)] input pixel seen by ``unit`` (one index per axis); with ``clip``, only pixels
        inside the image that the net really uses (what a gradient probe measures)."""
        jump = self.jump or (0,) * len(self.r)
        out = [(int(s + u * j - (r - 1) / 2), int(s + u * j + (r - 1) / 2))
               for s, u, j, r in zip(self.start, unit, jump, self.r, strict=True)]
        if clip and self.used:
            out = [(max(a, ua), min(b, ub)) for (a, b), (ua, ub) in zip(out, self.used, strict=True)]
        return out

    def to_dict(self) -> dict:
        return {"r": list(self.r), "jump": None if self.jump is None else list(self.jump),
                "start": list(self.start), "size": list(self.size), "global_context": self.global_context,
                "used": [list(u) for u in self.used]}


def _info(st: _State) -> RFInfo:
    return RFInfo(r=st.r, jump=None if st.axes is None else tuple(_num(v) for v in st.j),
                  start=tuple(_num((l + h) / 2) for l, h in zip(st.lo, st.hi, strict=True)), size=tuple(st.size),
                  global_context=st.glob, used=tuple((int(a), int(b)) for a, b in zip(st.vlo, st.vhi, strict=True)))


@dataclass(frozen=True)
class RFRow:
    """One conv/pool/global-context layer on the path to the output (or the final 'RF' row)."""

    name: str
    op: str
    kind: str
    info: RFInfo
    note: str = ""
    params: dict = field(default_factory=dict)

    @property
    def r(self) -> tuple[int, ...]:
        return self.info.r

    @property
    def jump(self) -> tuple[int | float, ...] | None:
        return self.info.jump

    @property
    def start(self) -> tuple[int | float, ...]:
        return self.info.start

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "kind": self.kind, **self.info.to_dict(), "note": self.note,
                **{k: v for k, v in self.params.items()}}


def _sq(v: Sequence | None) -> str:
    if v is None:
        return "-"
    vals = [str(_num(x)) for x in v]
    return vals[0] if len(set(vals)) == 1 else "x".join(vals)


@dataclass(frozen=True)
class ReceptiveField:
    """What :func:`receptive_field` returns. ``rf``/``jump`` are the net's (its last feature map's)."""

    model: str
    input_size: tuple[int, ...]
    rows: list[RFRow]
    final: RFInfo
    feature_module: str | None  # module whose output is the last feature map (hook it to probe the net)
    modules: dict[str, RFInfo]
    global_context: list[str]
    warnings: list[str]

    @property
    def rf(self) -> int:
        """The net's receptive field (the larger axis if they differ)."""
        return max(self.final.r)

    @property
    def jump(self) -> int | float:
        return max(self.final.jump or (0,))

    @property
    def start(self) -> tuple[int | float, ...]:
        return self.final.start

    def module(self, name: str) -> RFInfo:
        """RF of a module's output (any module that ran, e.g. ``'layer1'``); an unknown name is a one-line
        :class:`UnknownLayerError` listing the nearest names (``erf --layer nosuch.layer``)."""
        if name not in self.modules:
            import difflib

            names = [n for n in self.modules if n]
            near = difflib.get_close_matches(str(name), names, n=3, cutoff=0.4) or names[-3:]
            raise UnknownLayerError(f"{self.model} has no layer {name!r} with a map derived from the input: the "
                                    f"nearest are {', '.join(near)} (`cnnzoo summary {self.model}` lists module names)")
        return self.modules[name]

    def to_dict(self) -> dict:
        return {"model": self.model, "input_size": list(self.input_size), "rf": self.rf, "jump": _num(self.jump),
                "final": self.final.to_dict(), "feature_module": self.feature_module,
                "rows": [r.to_dict() for r in self.rows], "global_context": self.global_context,
                "warnings": self.warnings,
                "conventions": "pixel coordinates 0..W-1 (pixel centres); start = centre of unit 0; r includes "
                               "padding; branches/residuals take the hull; global context flagged"}

    def __str__(self) -> str:
        table = []
        for r in self.rows:
            flag = "global" if r.info.global_context else ""
            table.append((r.name or "(root)", r.op, _sq(r.info.size), _sq(r.r), _sq(r.jump), _sq(r.start), flag,
                          r.note))
        size = "x".join(map(str, self.input_size))
        out = [f"{self.model}  input {size}", "",
               fmt.table(table, ["layer", "op", "out", "r", "jump", "start", "ctx", "note"], align="llrrrrll"), ""]
        out.append(f"receptive field {_sq(self.final.r)}, jump {_sq(self.final.jump)}, start {_sq(self.final.start)}"
                   f" (last feature map{', ' + self.feature_module if self.feature_module else ''})")
        if self.global_context:
            out.append("global context (flagged, not in r): " + "; ".join(self.global_context))
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)


def _op_label(ev: _Event) -> str:
    """'conv 3x3/2 p1', 'maxpool 3x3/2 p1', 'conv 3x3 p2 d2 g32'."""
    p = ev.params
    if "kernel" not in p:
        return ev.op
    k = p["kernel"]
    label = f"{ev.op} " + ("x".join(map(str, k)) if len(set(k)) > 1 or len(k) != 2 else f"{k[0]}x{k[0]}")
    if any(v != 1 for v in p["stride"]):
        label += f"/{_sq(p['stride'])}"
    if any(p["padding"]):
        label += f" p{_sq(p['padding'])}"
    if any(v != 1 for v in p["dilation"]):
        label += f" d{_sq(p['dilation'])}"
    if p.get("groups", 1) != 1:
        label += f" g{p['groups']}"
    return label


_ROW_KINDS = {"conv", "pool", "pad", "global", "flatten", "gate", "unsupported"}


@contextlib.contextmanager
def _tracing(model: nn.Module, nsp: int, holder: dict) -> Iterator[_Tracer]:
    tracer = holder["t"] = _Tracer(model, nsp=nsp)
    with tracer.hooks():
        root_hook = model.register_forward_pre_hook(lambda m, a: tracer.start(a[0]) if a else None, prepend=True)
        try:
            with tracer:
                yield tracer
        finally:
            root_hook.remove()


def trace_receptive_field(model: nn.Module, input_size: Sequence[int], name: str = "") -> ReceptiveField:
    """Trace ``model`` once on ``input_size`` (C, H, W) on the meta device and build the result."""
    size = check_input_size(input_size)
    holder: dict[str, _Tracer] = {}
    out = shape_forward(model, size, lambda: _tracing(model, len(size) - 1, holder))
    return _result(model, size, name, holder["t"], out)[0]


def traced_forward(model: nn.Module, x: Tensor, call: Any = None, name: str = "") -> tuple[ReceptiveField, Tensor]:
    """Run ``call(x)`` (default ``model(x)``) for real under the tracer and return the result and the tensor
    that is the last feature map, with its autograd history: gradient probes start from it whether or not
    a module outputs it (a user's ``forward`` may make it with plain functions)."""
    holder: dict[str, _Tracer] = {}
    with _tracing(model, x.dim() - 2, holder):
        out = (call or model)(x)
    result, node = _result(model, tuple(x.shape[1:]), name, holder["t"], out)
    return result, holder["t"].node_tensor[node]


def _result(model: nn.Module, size: tuple[int, ...], name: str, tr: _Tracer, out: Any) -> tuple[ReceptiveField, int]:
    outs = [tr.states.get(t) for t in tree_leaves(out) if isinstance(t, Tensor)]
    outs = [s for s in outs if s is not None]
    if not outs:
        raise CnnzooError("the model's output does not depend on its input: nothing to trace")
    ev = tr.events
    # the path to the output: every event the output's field came through
    on_path: set[int] = set()
    todo = [outs[0].node]
    while todo:
        n = todo.pop()
        if n not in on_path:
            on_path.add(n)
            todo.extend(ev[n].inputs)

    # the last feature map: walk back from the output through the head -- flat tensors, global ops and
    # adaptive pools (identity at the default size, a non-uniform resampling at others: not the net's RF)
    def in_head(x: _Event) -> bool:
        return x.state.axes is None or x.kind == "global" or x.op.startswith("adaptive")

    e = ev[outs[0].node]
    while in_head(e) and e.inputs:
        e = max((ev[i] for i in e.inputs), key=lambda x: (x.state.axes is not None, sum(x.state.r)))
    final_state = e.state if not in_head(e) else outs[0]
    mods = [m for m in tr.node_modules.get(final_state.node, []) if m] or []  # outermost last; not the root
    rows = [RFRow(name=x.module, op=_op_label(x), kind=x.kind, info=_info(x.state), note=x.note, params=x.params)
            for x in ev if x.id in on_path and x.kind in _ROW_KINDS]
    final = _info(final_state)
    rows.append(RFRow(name=mods[-1] if mods else "", op="RF", kind="final", info=final,
                      note="receptive field of the net (last feature map)"))
    result = ReceptiveField(
        model=name or getattr(model, "cnnzoo_name", type(model).__name__), input_size=size, rows=rows, final=final,
        feature_module=mods[-1] if mods else None,
        modules={k: _info(v) for k, v in tr.module_out.items()},
        global_context=_summarise_global(ev, on_path), warnings=list(dict.fromkeys(tr.warnings)),
    )
    return result, final_state.node


def _summarise_global(ev: list[_Event], on_path: set[int]) -> list[str]:
    """'3 x global mean over the map (squeeze-and-excitation gates)' style lines, one per kind."""
    counts: dict[str, int] = {}
    for x in ev:
        if x.id in on_path and x.kind in ("global", "flatten"):
            key = f"{x.op}: {x.note}" if x.kind == "flatten" else x.op
            counts[key] = counts.get(key, 0) + 1
    gates = sum(1 for x in ev if x.id in on_path and x.kind == "gate")
    lines = [f"{n} x {k}" if n > 1 else k for k, n in counts.items()]
    if gates:
        lines.append(f"{gates} map(s) gated by global context (e.g. squeeze-and-excitation)")
    return lines


def receptive_field(model: nn.Module | str, input_size: Sequence[int] | None = None) -> ReceptiveField:
    """Receptive field r, jump and start of every conv/pool layer on the path to the output, and the net's.

    ``model`` may be a module, a registered name or ``path/to/file.py:factory`` (built on the meta device);
    ``input_size`` is (C, H, W), default the model's own. The graph is traced as it really runs (eval mode,
    any control flow), so residual additions and Inception concatenations take the largest field over the
    paths that meet, and global context (global pooling, SE gates, flattened maps) is flagged.
    """
    label = model if isinstance(model, str) else ""
    model = resolve_model(model, device="meta")
    size = default_input_size(model) if input_size is None else input_size
    return trace_receptive_field(model, size, name=label)
