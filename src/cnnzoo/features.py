"""Multi-scale feature maps of any cnnzoo net: timm's ``features_only`` with receptive fields.

A *stage* ends where the stride changes: of the modules a net lists in ``stage_modules()`` (forward order),
the last one at each stride (timm's convention, so ResNet-50 gives the stem's ReLU and layer1..4, at strides
2, 4, 8, 16, 32). :func:`feature_info` traces the net once on the meta device with cnnzoo's own receptive
field analysis, so every stage comes with its channels, reduction (= the jump, the product of the strides
before it), module name, map size, and its receptive field and jump in input pixels.

:class:`FeatureNet` (``create_model(name, features_only=True, out_indices=...)``) returns those maps as a
list. It registers the net's own modules under their own names, less the head, so its ``state_dict`` keys
are the net's (minus the classifier) and checkpoints load with ``load_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from . import fmt
from .analysis import default_input_size, receptive_field
from .errors import CnnzooError

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
    net (``cnnzoo.layers.Backbone``) does."""
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


def _stage_modules(model: nn.Module) -> list[str]:
    stage_modules = getattr(model, "stage_modules", None)
    try:
        names = stage_modules() if callable(stage_modules) else None
    except NotImplementedError:
        names = None
    if not names:
        raise CnnzooError(f"{type(model).__name__} does not list its stage modules: multi-scale features need a "
                          f"cnnzoo net (or a cnnzoo.layers.Backbone subclass with stage_modules())")
    return list(names)


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


class _Tap:
    """Forward hook that keeps a module's output (a class, not a closure, so the net deep-copies and pickles)."""

    def __init__(self, name: str, store: dict[str, Tensor]) -> None:
        self.name, self.store = name, store

    def __call__(self, module: nn.Module, args: Any, out: Tensor) -> None:
        self.store[self.name] = out


def _prune_after(model: nn.Module, last: str, head: Sequence[str]) -> list[str]:
    """Replace the siblings that run after the module ``last`` by identities; their dotted names."""
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name)
    if parent_name and not isinstance(parent, nn.Sequential):
        return []
    names = [n for n, _ in parent.named_children()]
    pruned = []
    for n in names[names.index(child) + 1:]:
        full = f"{parent_name}.{n}" if parent_name else n
        if full not in head and not isinstance(parent.get_submodule(n), nn.Identity):
            setattr(parent, n, nn.Identity())
            pruned.append(full)
    return pruned


class FeatureNet(nn.Module):
    """A net that returns the feature maps of the stages ``out_indices`` as a list (timm's ``features_only``).

    The net's modules, less its head (``head_modules()`` and the classifier), are registered here under their
    own names; the net's ``forward_features`` runs them and forward hooks take the stage outputs. What runs
    after the last stage asked for (the next siblings in its ``Sequential``, or on the net itself, whose
    ``forward_features`` is a chain of its children in every family) becomes an identity, as timm truncates
    its features-only nets: no work and no weights for it. ``feature_info`` lists the stages returned.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None,
                 input_size: Sequence[int] | None = None, name: str = "") -> None:
        super().__init__()
        info = feature_info(model, input_size, name)
        indices = take_indices(out_indices, len(info), info.model)
        self.feature_info, self.out_indices = info.select(indices), indices
        head = (*model.head_modules(), model.classifier_name)
        model.reset_classifier(0)
        self._dropped = (*head, *_prune_after(model, self.feature_info.module_name()[-1], head))
        for name, child in model.named_children():
            if name not in self._dropped:
                self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in model.named_buffers(recurse=False):
            self.register_buffer(name, b)
        self._net = (model,)  # held outside the module tree: its modules are registered above, keys unchanged
        self._store: dict[str, Tensor] = {}
        for name in dict.fromkeys(self.feature_info.module_name()):
            model.get_submodule(name).register_forward_hook(_Tap(name, self._store))

    def forward(self, x: Tensor) -> list[Tensor]:
        self._store.clear()
        self._net[0].forward_features(x)
        out = [self._store[name] for name in self.feature_info.module_name()]
        self._store.clear()
        return out

    def train(self, mode: bool = True) -> FeatureNet:
        self._net[0].train(mode)  # the wrapped net's own flag too (its forward_features may read it)
        self.training = mode
        return self

    def convert_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """The net's own key mapping, then the keys of the head (and of the layers after the last stage)
        dropped: a full checkpoint loads strictly."""
        convert = getattr(self._net[0], "convert_state_dict", None)
        if callable(convert):
            sd = convert(sd)
        head = tuple(f"{name}." for name in self._dropped)
        return {k: v for k, v in sd.items() if not k.startswith(head)}
