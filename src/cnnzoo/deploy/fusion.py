"""Fold BatchNorm into the convolution (or linear layer) that feeds it, for inference.

In eval mode BatchNorm is a fixed per-channel affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta``.
When ``x`` is the output of a convolution and nothing else reads that output, the map can be folded into the
convolution's weight and bias: one layer instead of two, the same function, less memory traffic.

Which (conv, bn) pairs are safe to fold is read from the model's data flow, not from its names:

1. ``torch.fx`` traces the forward pass; a pair folds when a BatchNorm's input is a conv's output, that
   output has no other reader, and each module is called exactly once. Works for any traceable
   ``nn.Module`` (torchvision-style ``Sequential`` blocks, ``conv1``/``bn1`` attributes, user models).
2. Models ``torch.fx`` cannot trace (data-dependent Python control flow) fall back to forward hooks on
   one example input: a BatchNorm whose input tensor *is* a conv's output is a candidate, and the folded
   model is checked against the original in float64; candidates that change the output are left unfolded.
   Without an example input only ``nn.Sequential`` neighbours (conv at i, BatchNorm at i + 1) are folded.

The folded model keeps its module tree (folded BatchNorms become ``nn.Identity``), its hooks (cnnzoo's
input-size check) and attributes, so it is a drop-in replacement for inference and export.
"""

from __future__ import annotations

import copy
import operator
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from ..models.layers import conv2d_out_hw

__all__ = ["fuse", "find_conv_bn_pairs", "fuse_activations", "ConvPointwise2d"]

Pair = tuple[str, str]  # (qualified name of the conv/linear, qualified name of the BatchNorm it feeds)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """Module types and shapes that fold: BN with running statistics after a conv/linear of matching width."""
    if not isinstance(bn, _BatchNorm) or bn.running_mean is None or bn.running_var is None:
        return False  # track_running_stats=False: eval BN uses batch statistics, not a fixed map
    if isinstance(conv, _ConvTransposeNd):
        return conv.groups == 1 and conv.out_channels == bn.num_features
    if isinstance(conv, _ConvNd):
        return conv.out_channels == bn.num_features
    if isinstance(conv, nn.Linear):
        return conv.out_features == bn.num_features and isinstance(bn, nn.BatchNorm1d)
    return False


def _pairs_fx(model: nn.Module) -> list[Pair]:
    """Foldable pairs from a ``torch.fx`` trace (raises whatever fx raises on untraceable models)."""
    from torch.fx import symbolic_trace

    gm = symbolic_trace(model)
    modules = dict(gm.named_modules())
    calls: dict[int, int] = {}  # id(module) -> number of call sites
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[id(modules[node.target])] = calls.get(id(modules[node.target]), 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if getattr(src, "op", None) != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        conv, bn = modules[src.target], modules[node.target]
        if len(src.users) == 1 and calls[id(conv)] == 1 and calls[id(bn)] == 1 and _foldable(conv, bn):
            pairs.append((src.target, node.target))
    return pairs


def _pairs_sequential(model: nn.Module) -> list[Pair]:
    """Conv at position i and BatchNorm at i + 1 of a plain ``nn.Sequential`` (its forward is a chain)."""
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential) or type(mod).forward is not nn.Sequential.forward:
            continue
        items = list(mod.named_children())
        for (n1, a), (n2, b) in zip(items, items[1:], strict=False):
            if _foldable(a, b):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + n1, prefix + n2))
    return pairs


def _pairs_hooks(model: nn.Module, example_input: Tensor) -> list[Pair]:
    """Candidates from one forward pass: a BatchNorm whose input tensor is a conv's output tensor."""
    names = {id(m): n for n, m in model.named_modules()}
    produced: dict[int, str] = {}  # id(output tensor) -> conv name
    seen: dict[str, int] = {}
    found: list[Pair] = []

    def on_conv(mod: nn.Module, args: tuple, out: Tensor) -> None:
        seen[names[id(mod)]] = seen.get(names[id(mod)], 0) + 1
        produced[id(out)] = names[id(mod)]

    def on_bn(mod: nn.Module, args: tuple, out: Tensor) -> None:
        seen[names[id(mod)]] = seen.get(names[id(mod)], 0) + 1
        if args and id(args[0]) in produced:
            found.append((produced[id(args[0])], names[id(mod)]))

    handles = []
    for m in model.modules():
        if isinstance(m, _ConvNd | nn.Linear):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, _BatchNorm):
            handles.append(m.register_forward_hook(on_bn))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    mods = dict(model.named_modules())
    return [(c, b) for c, b in found
            if seen[c] == 1 and seen[b] == 1 and _foldable(mods[c], mods[b])]


def _fold(model: nn.Module, pairs: list[Pair]) -> None:
    """Fold each BatchNorm into its conv in place (in float64 arithmetic); the BN becomes ``nn.Identity``."""
    mods = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        conv, bn = mods[conv_name], mods[bn_name]
        w, b = conv.weight, conv.bias
        bn_w = bn.weight.detach().double() if bn.weight is not None else None
        bn_b = bn.bias.detach().double() if bn.bias is not None else None
        with torch.no_grad():
            if isinstance(conv, nn.Linear):
                fw, fb = torch.nn.utils.fusion.fuse_linear_bn_weights(
                    w.detach().double(), None if b is None else b.detach().double(),
                    bn.running_mean.double(), bn.running_var.double(), bn.eps,
                    bn_w if bn_w is not None else torch.ones_like(bn.running_mean, dtype=torch.float64),
                    bn_b if bn_b is not None else torch.zeros_like(bn.running_mean, dtype=torch.float64))
            else:
                fw, fb = torch.nn.utils.fusion.fuse_conv_bn_weights(
                    w.detach().double(), None if b is None else b.detach().double(),
                    bn.running_mean.double(), bn.running_var.double(), bn.eps, bn_w, bn_b,
                    transpose=isinstance(conv, _ConvTransposeNd))
        conv.weight = nn.Parameter(fw.detach().to(w.dtype), requires_grad=w.requires_grad)
        conv.bias = nn.Parameter(fb.detach().to(w.dtype), requires_grad=w.requires_grad)
        parent_name, _, child = bn_name.rpartition(".")
        parent = mods[parent_name] if parent_name else model
        setattr(parent, child, nn.Identity())


def _same_output(a: nn.Module, b: nn.Module, x: Tensor) -> bool:
    """Equal outputs in float64 up to the float32 rounding of folded weights (copies are converted)."""
    a64, b64 = copy.deepcopy(a).double().eval(), copy.deepcopy(b).double().eval()
    with torch.no_grad():
        ya, yb = a64(x.double()), b64(x.double())
    if isinstance(ya, tuple | list):
        ya, yb = ya[0], yb[0]
    # a wrongly folded pair changes outputs by O(1); weight rounding only by ~1e-7 relative
    return (ya - yb).abs().max().item() <= 1e-5 * (1.0 + ya.abs().max().item())


def _example_input(model: nn.Module) -> Tensor | None:
    """A batch of two random images at the model's default size, when the model says its size."""
    cfg = getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and len(cfg.get("input_size", ())) == 3:
        c, h, w = cfg["input_size"]
        return torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    return None


def find_conv_bn_pairs(model: nn.Module, example_input: Tensor | None = None) -> list[Pair]:
    """The (conv, BatchNorm) module-name pairs of ``model`` that fold without changing its eval output.

    ``example_input`` (or the size in ``model.default_cfg``) is used only when ``torch.fx`` cannot trace
    the model. The model is not modified; it is put in eval mode for the trace and restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        try:
            return _pairs_fx(model)
        except Exception:  # fx raises many types (TraceError, TypeError, NotImplementedError, ...)
            pass
        x = example_input if example_input is not None else _example_input(model)
        if x is None:
            return _pairs_sequential(model)
        candidates = _pairs_hooks(model, x)
        trial = copy.deepcopy(model)
        _fold(trial, candidates)
        if _same_output(model, trial, x):
            return candidates
        kept: list[Pair] = []  # some candidate's conv output was also read elsewhere: keep only safe ones
        for pair in candidates:
            trial = copy.deepcopy(model)
            _fold(trial, [*kept, pair])
            if _same_output(model, trial, x):
                kept.append(pair)
        return kept
    finally:
        model.train(was_training)


def fuse(model: nn.Module, inplace: bool = False, example_input: Tensor | None = None) -> nn.Module:
    """Return ``model`` in eval mode with every BatchNorm folded into the conv/linear layer feeding it.

    The result computes the same function as ``model.eval()`` (to float rounding: within 1e-5 on the
    logits of the zoo's nets in float32) with fewer layers. ``inplace=False`` (the default) leaves
    ``model`` untouched and folds a deep copy. ``fused.fused_pairs`` lists what was folded.
    """
    pairs = find_conv_bn_pairs(model, example_input)
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    _fold(out, pairs)
    try:
        out.fused_pairs = pairs  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # a module that forbids new attributes: the fold still happened
        warnings.warn("could not record fused_pairs on the model", stacklevel=2)
    return out

# --- activations and residual adds inside the convolution (oneDNN, CPU inference) ---------------------------

_P = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None
Act = tuple[str, list[float], str | None]  # oneDNN post-op: name, scalars, algorithm


# activation modules oneDNN applies as a conv post-op, and the functional forms that mean the same module
_POST_OPS = {nn.ReLU: "relu", nn.SiLU: "swish", nn.Hardswish: "hardswish", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
_FUNCTIONAL = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6, F.silu: nn.SiLU,
               F.hardswish: nn.Hardswish, torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid, torch.tanh: nn.Tanh,
               F.tanh: nn.Tanh}


def _post_op(act: nn.Module) -> Act:
    """oneDNN's name, scalars and algorithm for an activation module that :func:`_act_of` accepted."""
    if isinstance(act, nn.Hardtanh):  # ReLU6 included
        return "hardtanh", [float(act.min_val), float(act.max_val)], None
    if isinstance(act, nn.GELU):
        return "gelu", [], act.approximate
    return next(name for cls, name in _POST_OPS.items() if isinstance(act, cls)), [], None


def _act_of(node: torch.fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The activation module ``node`` applies to its single tensor input (functional forms as a module)."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return m if isinstance(m, (*_POST_OPS, nn.Hardtanh, nn.GELU)) else None
    if node.op == "call_function" and len(node.args) == 1 and not set(node.kwargs) - {"inplace"}:
        cls = _FUNCTIONAL.get(node.target)  # type: ignore[call-overload]
        return cls() if cls else None
    return None


class ConvPointwise2d(nn.Conv2d):
    """An ``nn.Conv2d`` followed by ``+ other`` (a residual) and/or an activation, run as one oneDNN kernel.

    The add and the activation are applied to the conv's output while it is still in cache instead of in
    separate passes over memory (what Inductor's CPU fusion does). Same parameters and state-dict keys as
    the conv it replaces. The fused kernel runs for float32 CPU inference; anything else (autograd,
    autocast, CUDA, other dtypes) runs the plain ops, so the module computes the same function everywhere.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None, residual: bool) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.act_name, self.act_scalars, self.act_algorithm = _post_op(act) if act else (None, [], None)
        self.residual = residual
        self.act = act if act is not None else nn.Identity()  # the plain path (autograd, CUDA, ...)

    def _fast(self, x: Tensor, other: Tensor | None) -> bool:
        w = self.weight
        if not (x.device.type == "cpu" and x.dtype == w.dtype == torch.float32 and x.dim() == 4
                and w.device.type == "cpu" and not torch.is_autocast_enabled("cpu")):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                        or (other is not None and other.requires_grad)):
            return False
        if other is None:
            return True
        out = (x.shape[0], self.out_channels, *conv2d_out_hw(self, x.shape[2], x.shape[3]))
        return other.dtype == x.dtype and other.device == x.device and tuple(other.shape) == out

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if _P is not None and self._fast(x, other):
            if other is None:
                return _P(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                          self.act_name, self.act_scalars, self.act_algorithm or "")
            return _P.binary(x, other, self.weight, self.bias, self.padding, self.stride, self.dilation,
                             self.groups, "add", None, self.act_name, self.act_scalars, self.act_algorithm)
        y = self._conv_forward(x, self.weight, self.bias)
        return self.act(y if other is None else y + other)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", + residual" if self.residual else "") + (
            f", {self.act_name}" if self.act_name else "")


def _fusable_conv(m: nn.Module | None) -> bool:
    return (type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and len(m.kernel_size) == 2)


def fuse_activations(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Run each conv's activation, and a residual add before it, inside the conv's oneDNN kernel.

    For CPU inference, after :func:`fuse` has folded BatchNorm: a conv whose only reader is an activation
    (ReLU, ReLU6/Hardtanh, SiLU, Hardswish, Sigmoid, Tanh, GELU), or an add of another tensor of the same
    shape (optionally followed by an activation), becomes one :class:`ConvPointwise2d`. The patterns are
    read from a ``torch.fx`` trace, so this works for any traceable ``nn.Module``; a model fx cannot trace,
    or a PyTorch without oneDNN, is returned unchanged. The result is a ``torch.fx.GraphModule`` in eval
    mode that keeps the model's forward pre-hooks (cnnzoo's input-size check); ``fused_activations``
    counts the fused convs. Outputs equal the unfused model's to float rounding (oneDNN's own kernels).
    """
    src = model if inplace else copy.deepcopy(model)
    src.eval()
    if _P is None or not torch.backends.mkldnn.is_available():
        return src
    try:
        gm = torch.fx.symbolic_trace(src)
    except Exception:  # fx raises many types on untraceable code: nothing fused
        return src
    graph, mods = gm.graph, dict(gm.named_modules())
    for n in list(graph.nodes):  # folded BatchNorms are Identity: look through them
        if n.op == "call_module" and type(mods.get(str(n.target))) is nn.Identity and len(n.args) == 1:
            n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    calls: dict[str, int] = {}  # a conv called from several places keeps its plain form
    for n in graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    count = 0
    for n in list(graph.nodes):
        if (n.op != "call_module" or not _fusable_conv(mods.get(str(n.target))) or len(n.users) != 1
                or calls[str(n.target)] != 1):
            continue
        u = next(iter(n.users))
        act, other, drop = _act_of(u, mods), None, [u]
        if act is None:
            if not (u.op == "call_function" and u.target in (operator.add, operator.iadd, torch.add)
                    and len(u.args) == 2 and not u.kwargs):
                continue
            other = u.args[1] if u.args[0] is n else u.args[0]
            if not isinstance(other, torch.fx.Node) or other is n or (u.target is operator.iadd
                                                                     and u.args[0] is not n):
                continue
            if len(u.users) == 1:
                act = _act_of(next(iter(u.users)), mods)
                if act is not None:
                    drop.append(next(iter(u.users)))
        conv = mods[str(n.target)]
        parent_name, _, child = str(n.target).rpartition(".")
        setattr(gm.get_submodule(parent_name) if parent_name else gm, child,
                ConvPointwise2d(conv, act, other is not None))
        with graph.inserting_before(u):
            new = graph.call_module(str(n.target), (n.args[0],) if other is None else (n.args[0], other))
        drop[-1].replace_all_uses_with(new)
        for d in reversed(drop):
            graph.erase_node(d)
        graph.erase_node(n)
        count += 1
    graph.lint()
    gm.recompile()
    for k, v in vars(src).items():  # plain attributes (default_cfg, num_classes, fused_pairs, ...)
        if not k.startswith("_") and k not in vars(gm) and k != "training":
            setattr(gm, k, v)
    for hook in src._forward_pre_hooks.values():
        gm.register_forward_pre_hook(hook)
    gm.fused_activations = count  # type: ignore[assignment]
    return gm.eval()
