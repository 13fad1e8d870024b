"""Multi-scale feature maps of any cnnzoo net: timm's ``features_only`` with receptive fields.

A *stage* ends where the stride changes: of the modules a net lists in ``stage_modules()`` (forward order),
the last one at each stride (timm's convention, so ResNet-50 gives the stem's ReLU and layer1..4, at strides
2, 4, 8, 16, 32). :func:`feature_info` traces the net once on the meta device with cnnzoo's own receptive
field analysis, so every stage comes with its channels, reduction (= the jump, the product of the strides
before it), module name, map size, and its receptive field and jump in input pixels.

:class:`FeatureNet` (``create_model(name, features_only=True, out_indices=...)``) returns those maps as a
list. It owns the net's modules under their own names, less the head, and runs them itself, so its
``state_dict`` keys are the net's (minus the classifier) and checkpoints load with ``load_pretrained``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from ..analysis import default_input_size, receptive_field
from ..errors import CnnzooError
from ..utils import fmt

__all__ = ["FeatureInfo", "FeatureNet", "feature_info", "take_indices"]

_KEYS = ("index", "module", "num_chs", "reduction", "rf", "jump", "size", "global_context")


class FeatureInfo(Sequence):
    """One dict per stage (timm's ``feature_info``): ``index``, ``module``, ``num_chs``, ``reduction``,
    ``rf`` and ``jump`` (input pixels), ``size`` (H, W at ``input_size``) and ``global_context`` (some path
    into the map went through global pooling, e.g. squeeze-and-excitation)."""

    def __init__(self, stages: list[dict[str, Any]], input_size: tuple[int, ...], model: str = "") -> None:
        self.stages, self.input_size, self.model = stages, tuple(input_size), model

    def __getitem__(self, i: Any) -> Any:
        return self.stages[i]

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.stages)

    def get(self, key: str) -> list[Any]:
        return [s[key] for s in self.stages]

    def channels(self) -> list[int]:
        return self.get("num_chs")

    def reduction(self) -> list[int]:
        return self.get("reduction")

    def module_name(self) -> list[str]:
        return self.get("module")

    def rf(self) -> list[int]:
        return self.get("rf")

    def jump(self) -> list[int | float]:
        return self.get("jump")

    def get_dicts(self, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return [{k: s[k] for k in (keys or _KEYS)} for s in self.stages]

    def select(self, indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo([self.stages[i] for i in indices], self.input_size, self.model)

    def __str__(self) -> str:
        rows = [(s["index"], s["module"], "x".join(map(str, (s["num_chs"], *s["size"]))), s["num_chs"],
                 s["reduction"], s["rf"], s["jump"], "global" if s["global_context"] else "") for s in self]
        size = "x".join(map(str, self.input_size))
        table = fmt.table(rows, ["index", "module", "shape", "channels", "reduction", "rf", "jump", "ctx"],
                          align="rlrrrrrl")
        return f"{self.model}  input {size}  ({len(self)} stages)\n\n{table}"


def feature_info(model: nn.Module, input_size: Sequence[int] | None = None, name: str = "") -> FeatureInfo:
    """The net's stages (see the module docstring), traced on the meta device at ``input_size`` (C, H, W;
    default the net's own). ``model`` must list its candidate modules in ``stage_modules()``, as every cnnzoo
    net (``cnnzoo.models.layers.Backbone``) does."""
    names = _stage_modules(model)
    size = tuple(default_input_size(model) if input_size is None else input_size)
    channels: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, Tensor) and out.dim() >= 3:
                channels[name] = int(out.shape[1])
        return hook

    handles = [model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    try:
        traced = receptive_field(model, size)
    finally:
        for h in handles:
            h.remove()
    last: dict[float, str] = {}  # stride -> the last candidate at that stride (dicts keep first-seen order)
    for n in names:
        info = traced.modules.get(n)
        if n in channels and info is not None and info.jump is not None:
            last[max(info.jump)] = n
    stages = []
    for i, (jump, n) in enumerate(last.items()):
        info = traced.modules[n]
        stages.append({"index": i, "module": n, "num_chs": channels[n], "reduction": int(jump),
                       "rf": max(info.r), "jump": jump, "size": tuple(info.size),
                       "global_context": info.global_context})
    return FeatureInfo(stages, size, name or getattr(model, "cnnzoo_name", type(model).__name__))


def _listed(model: nn.Module, method: str, why: str) -> list[str]:
    """The module names ``model.method()`` lists (a Backbone's ``stage_modules`` or ``feature_chain``); one line
    saying ``why`` they are needed when the net has no such list."""
    fn = getattr(model, method, None)
    try:
        names = fn() if callable(fn) else None
    except NotImplementedError:
        names = None
    if not names:
        raise CnnzooError(f"{type(model).__name__} does not list its {why}: multi-scale features need a cnnzoo "
                          f"net (or a cnnzoo.models.layers.Backbone subclass with {method}())")
    return list(names)


def _stage_modules(model: nn.Module) -> list[str]:
    return _listed(model, "stage_modules", "stage modules")


def take_indices(out_indices: int | Sequence[int] | None, n: int, name: str) -> tuple[int, ...]:
    """Stage indices as timm reads ``out_indices``: None = all, an int k = the last k, else the indices given
    (negative ones count from the end). Anything outside the net's stages raises a one-line error."""
    hint = f"{name} has {n} stages: use indices 0..{n - 1} (or -{n}..-1); `cnnzoo summary {name} --features` " \
           f"lists them"
    if out_indices is None:
        return tuple(range(n))
    if isinstance(out_indices, bool) or not isinstance(out_indices, int | Sequence) or isinstance(out_indices, str):
        raise CnnzooError(f"out_indices must be stage indices, got {out_indices!r}; {hint}")
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise CnnzooError(f"out_indices={out_indices} asks for the last {out_indices} stages; {hint}")
        return tuple(range(n - out_indices, n))
    bad = [i for i in out_indices if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
    if bad or not out_indices:
        raise CnnzooError(f"out_indices {tuple(out_indices)} outside the net's stages; {hint}")
    return tuple(i % n for i in out_indices)


def _truncated(module: nn.Module, path: str, last: str) -> tuple[nn.Module, list[str]]:
    """``module`` (at dotted ``path``) cut after the module ``last`` inside it: a ``Sequential`` rebuilt from
    its children up to the one that holds ``last`` (itself cut), under their own names. Also the dotted
    names of the children left out (their checkpoint keys are dropped)."""
    if last == path or not isinstance(module, nn.Sequential):
        return module, []
    kept: OrderedDict[str, nn.Module] = OrderedDict()
    dropped: list[str] = []
    done = False
    for n, child in module.named_children():
        full = f"{path}.{n}"
        if done:
            dropped.append(full)
            continue
        kept[n], more = _truncated(child, full, last)
        dropped += more
        done = last == full or last.startswith(full + ".")
    return nn.Sequential(kept), dropped


class FeatureNet(nn.Module):
    """A net that returns the feature maps of the stages ``out_indices`` as a list (timm's ``features_only``).

    It takes over the modules the net's ``forward_features`` runs one after the other (``feature_chain()``),
    under their own names, and its forward runs them itself (its own children, in order, walking into a
    ``Sequential`` that holds a stage), keeping the stage outputs: as timm's ``FeatureListNet`` and
    torchvision's ``IntermediateLayerGetter``. So a module replaced on the feature net (``SyncBatchNorm``,
    frozen BatchNorm, ``f.layer4 = nn.Identity()``) is the one that runs, and no hook or shared state is
    left for ``torch.export`` to rewrite. Nothing after the last stage asked for is kept (timm truncates its
    features-only nets too), nor the head; ``state_dict`` keys are the net's, less those.

    The maps come in the order of ``out_indices``, as ``feature_info`` lists them (timm's ``feature_info``
    order; timm's own maps follow the forward order instead, which differs only for unsorted indices).
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None,
                 input_size: Sequence[int] | None = None, name: str = "") -> None:
        super().__init__()
        info = feature_info(model, input_size, name)
        indices = take_indices(out_indices, len(info), info.model)
        self.feature_info, self.out_indices = info.select(indices), indices
        self._family = type(model)  # for its ``convert_state_dict`` (a class: no module of the net is held)
        chain = _feature_chain(model)
        taps = self.feature_info.module_name()
        last = max(taps, key=lambda n: info.module_name().index(n))  # the deepest stage asked for
        head = last.split(".")[0]
        if head not in chain:
            raise CnnzooError(f"{type(model).__name__}: stage {last!r} is not in its feature_chain() {chain}")
        self._chain = tuple(chain[:chain.index(head) + 1])
        self._taps = tuple(taps)
        self._dropped = [n for n, _ in model.named_children() if n not in self._chain]
        for n in self._chain:
            child, dropped = _truncated(model.get_submodule(n), n, last if n == head else n)
            self.add_module(n, child)
            self._dropped += dropped
        for t in self._taps:
            _check_reachable(self, t)

    def forward(self, x: Tensor) -> list[Tensor]:
        found: dict[str, Tensor] = {}
        for name in self._chain:
            x = _run(self.get_submodule(name), name, x, self._taps, found)
        return [found[name] for name in self._taps]

    def convert_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """The net's own key mapping (its family's ``convert_state_dict``, run with this feature net as the
        net: the same modules under the same names), then the keys of the head and of what follows the
        last stage dropped: a full checkpoint loads strictly."""
        convert = inspect.getattr_static(self._family, "convert_state_dict", None)
        if isinstance(convert, staticmethod | classmethod):
            sd = self._family.convert_state_dict(sd)
        elif callable(convert):
            sd = convert(self, sd)
        drop = tuple(f"{name}." for name in self._dropped)
        return {k: v for k, v in sd.items() if not k.startswith(drop)}


def _feature_chain(model: nn.Module) -> list[str]:
    names = _listed(model, "feature_chain", "feature_chain()")
    if any(True for _ in model.parameters(recurse=False)) or any(True for _ in model.buffers(recurse=False)):
        raise CnnzooError(f"{type(model).__name__} holds tensors of its own: a features-only net takes over "
                          f"only its modules")
    return list(names)


def _check_reachable(net: nn.Module, path: str) -> None:
    """A stage must be a chain module or reached through ``Sequential`` s only (what ``_run`` walks)."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        if not isinstance(net.get_submodule(".".join(parts[:i])), nn.Sequential):
            raise CnnzooError(f"stage {path!r} sits inside {'.'.join(parts[:i])!r}, which is not a Sequential: "
                              f"a features-only net cannot take its output")


def _run(module: nn.Module, path: str, x: Tensor, taps: Sequence[str], found: dict[str, Tensor]) -> Tensor:
    """``module(x)``, or its children one by one when a stage sits inside it; stage outputs go to ``found``."""
    if isinstance(module, nn.Sequential) and any(t.startswith(path + ".") for t in taps):
        for n, child in module.named_children():
            x = _run(child, f"{path}.{n}", x, taps, found)
    else:
        x = module(x)
    if path in taps:
        found[path] = x
    return x
