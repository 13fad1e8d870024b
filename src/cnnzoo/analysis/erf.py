"""Effective receptive field (Luo et al., NeurIPS 2016, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks").

The gradient of the centre unit of the last feature map (summed over its channels) with respect to the
input, in absolute value summed over input channels and averaged over ``n`` inputs -- random N(0, 1)
images as in the paper, or images of a data set -- for the net's real weights (random or trained) and
real non-linearities, in eval mode. For nets without global context it is non-zero only inside the
theoretical receptive field (exactly: no path reaches further), and it concentrates in a roughly Gaussian
blob far smaller than it. Squeeze-and-excitation gates see the whole image, so for SE nets a little mass
lies outside the conv-path field as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CnnzooError
from ._common import check_input_size, default_input_size, eval_mode, resolve_model
from .probe import _module_output
from .receptive_field import RFInfo, trace_receptive_field, traced_forward

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ERFResult:
    """The ERF map and the theoretical field it lies in (pixel coordinates: rows, cols from 0)."""

    model: str
    input_size: tuple[int, ...]
    layer: str
    unit: tuple[int, ...]
    grid: np.ndarray  # (H, W): mean over inputs of |d unit / d pixel|, summed over input channels
    rf: RFInfo
    n: int
    source: str  # "random N(0,1)" or the data set's name

    @property
    def centre(self) -> tuple[float, ...]:
        """Input pixel at the centre of the unit's theoretical field."""
        return tuple(float(s + u * j) for s, u, j in zip(self.rf.start, self.unit, self.rf.jump, strict=True))

    @property
    def box(self) -> tuple[tuple[int, int], ...]:
        """The unit's theoretical field, clipped to the pixels the net uses: ((row0, row1), (col0, col1))."""
        return tuple(self.rf.interval(self.unit, clip=True))

    @property
    def peak(self) -> tuple[int, int]:
        r, c = np.unravel_index(int(np.argmax(self.grid)), self.grid.shape)
        return int(r), int(c)

    @property
    def mass_in_rf(self) -> float:
        """Fraction of the gradient mass inside the theoretical field (exactly 1 without global context)."""
        (r0, r1), (c0, c1) = self.box
        total = float(self.grid.sum())
        return float(self.grid[r0:r1 + 1, c0:c1 + 1].sum()) / total if total > 0 else 0.0

    def mass_within(self, side: int) -> float:
        """Fraction of the gradient mass in the ``side`` x ``side`` square centred on :attr:`centre`."""
        total = float(self.grid.sum())
        if total <= 0:
            return 0.0
        (r0, r1), (c0, c1) = self._square(side)
        return float(self.grid[r0:r1 + 1, c0:c1 + 1].sum()) / total

    def _square(self, side: int) -> tuple[tuple[int, int], tuple[int, int]]:
        half = (side - 1) / 2
        cy, cx = self.centre
        h, w = self.grid.shape
        return ((max(0, math.ceil(cy - half)), min(h - 1, math.floor(cy + half))),
                (max(0, math.ceil(cx - half)), min(w - 1, math.floor(cx + half))))

    def side(self, q: float = 0.9) -> int:
        """Side of the smallest centred square holding a fraction ``q`` of the mass (an ERF size in px)."""
        limit = 2 * max(self.grid.shape) + 1
        for s in range(1, limit + 1, 2):
            if self.mass_within(s) >= q - 1e-12:
                return s
        return limit

    def to_dict(self) -> dict:
        return {"model": self.model, "input_size": list(self.input_size), "layer": self.layer,
                "unit": list(self.unit), "centre": list(self.centre), "n": self.n, "source": self.source,
                "rf": self.rf.to_dict(), "rf_box": [list(b) for b in self.box], "peak": list(self.peak),
                "mass_in_rf": self.mass_in_rf, "side_50": self.side(0.5), "side_90": self.side(0.9)}

    def __str__(self) -> str:
        r = "x".join(map(str, sorted(set(self.rf.r))))
        return (f"{self.model}: ERF of unit {self.unit} of {self.layer or 'the last feature map'} at "
                f"{'x'.join(map(str, self.input_size))}, {self.n} inputs ({self.source})\n"
                f"theoretical RF {r} px, centred at {tuple(round(c, 1) for c in self.centre)}; peak at {self.peak}\n"
                f"50 % of the gradient mass within {self.side(0.5)} px, 90 % within {self.side(0.9)} px "
                f"(centred squares); {100 * self.mass_in_rf:.1f} % inside the theoretical RF")

    def save_png(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Heat map with the theoretical RF (dashed) and the 90 %-mass square (dotted); Agg backend. An existing
        file this process did not write is replaced only with ``overwrite``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        from ..utils.files import atomic_write, check_output_path

        kind = Path(path).suffix[1:].lower() or "png"  # the format of the name given (a symlink's, not its target's)
        path = check_output_path(path, overwrite=overwrite, what="--out")
        h, w = self.grid.shape
        fig = Figure(figsize=(6, 5.2), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        im = ax.imshow(self.grid, cmap="inferno", extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="mean |d unit / d pixel|")
        (y0, y1), (x0, x1) = self.rf.interval(self.unit)  # unclipped: the square may leave the image
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="cyan", lw=1.5,
                               ls="--", label=f"theoretical RF {y1 - y0 + 1} px"))
        s90 = self.side(0.9)
        (a0, a1), (b0, b1) = self._square(s90)
        ax.add_patch(Rectangle((b0 - 0.5, a0 - 0.5), b1 - b0 + 1, a1 - a0 + 1, fill=False, ec="white", lw=1.2,
                               ls=":", label=f"90 % of the mass ({s90} px)"))
        ax.plot([self.centre[1]], [self.centre[0]], "+", color="cyan", ms=8)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"{self.model}: effective receptive field\n{self.layer or 'last map'} unit {self.unit}, "
                     f"{self.n} inputs ({self.source})", fontsize=10)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.6)
        if kind not in fig.canvas.get_supported_filetypes():
            raise CnnzooError(f"--out {str(path)!r}: matplotlib cannot write .{kind} files: use .png, .pdf or .svg")
        try:
            return atomic_write(path, lambda tmp: fig.savefig(tmp, format=kind), overwrite=overwrite, what="--out")
        except OSError as e:
            raise CnnzooError(f"cannot write {path}: {e.strerror or e}") from e


def _load_checkpoint(model: nn.Module | str, checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """A model with the checkpoint's weights: a `cnnzoo train` checkpoint rebuilds its own architecture
    (its class count and channels); a plain torchvision/timm/cnnzoo weights file goes into ``model``."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise CnnzooError(f"checkpoint {str(path)!r} not found: give a run folder, a model.safetensors or a .pth file")
    meta = None
    if path.is_dir() or path.suffix == ".safetensors":
        try:
            from ..training.checkpoint import load_checkpoint, read_meta

            meta = read_meta(path)
        except (ImportError, CnnzooError):
            meta = None
    if meta is not None:
        if isinstance(model, str):
            from ..models.registry import resolve_name

            if meta.get("model") and resolve_name(model) != meta["model"]:
                raise CnnzooError(f"{path} is a {meta['model']} checkpoint, not {model}: pass the right MODEL")
        net, meta = load_checkpoint(path, model=model if isinstance(model, nn.Module) else None)
        return net, meta
    from ..models.pretrained import load_pretrained

    net = resolve_model(model)
    load_pretrained(net, path)
    return net, {}


def _inputs(data: Any, n: int, size: tuple[int, ...], mean: Sequence[float], std: Sequence[float],
            seed: int) -> tuple[Tensor, str]:
    """``n`` float inputs of ``size``: random N(0,1), or a random sample of a data set / image tensor."""
    g = torch.Generator().manual_seed(seed)
    if data is None:
        return torch.randn((n, *size), generator=g), "random N(0,1)"
    source = "images"
    if hasattr(data, "images"):  # cnnzoo.data.ImageSet
        source = getattr(data, "name", source)
        mean, std = getattr(data, "mean", mean), getattr(data, "std", std)
        data = data.images
    if not isinstance(data, Tensor) or data.dim() != 4:
        raise CnnzooError("data must be a data set name, an ImageSet or an (N, C, H, W) image tensor")
    if data.shape[1] != size[0]:
        raise CnnzooError(f"the images have {data.shape[1]} channels but the model takes {size[0]}")
    idx = torch.randperm(data.shape[0], generator=g)[:n]
    x = data[idx]
    if x.dtype == torch.uint8:
        m = torch.tensor(mean[: size[0]], dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std[: size[0]], dtype=torch.float32).view(1, -1, 1, 1)
        x = (x.float() / 255.0 - m) / s
    if tuple(x.shape[-2:]) != tuple(size[1:]):
        from torchvision.transforms.v2.functional import resize

        x = resize(x.float(), list(size[1:]), antialias=True)
    return x.float(), source


def effective_receptive_field(
    model: nn.Module | str, input_size: Sequence[int] | None = None, n: int = 32,
    checkpoint: str | Path | None = None, data: Any = None, batch_size: int = 8, seed: int = 0,
    layer: str | None = None, device: str | torch.device | None = None,
) -> ERFResult:
    """Luo et al.'s effective receptive field of the centre unit of the last feature map.

    ``model``: a module, registered name or ``path/to/file.py:factory``; ``checkpoint``: weights to load
    first (a `cnnzoo train` run folder / model.safetensors, or a torchvision/timm file); ``data``: None for
    random N(0, 1) inputs (the paper's setting), else a data set name, an ImageSet or an image tensor
    (uint8 images are normalised with the data set's or checkpoint's mean/std, ImageNet's by default).
    ``layer`` overrides the module whose output is probed. Returns an :class:`ERFResult`.
    """
    label = model if isinstance(model, str) else getattr(model, "cnnzoo_name", type(model).__name__)
    meta: dict = {}
    if checkpoint is not None:
        model, meta = _load_checkpoint(model, checkpoint)
    else:
        model = resolve_model(model)
    if any(t.is_meta for t in model.parameters()):
        raise CnnzooError("the ERF needs real weights: build the model on the CPU/GPU, not the meta device")
    if isinstance(data, str):
        from ..data import load_dataset

        data = load_dataset(data, split="test")
    images = getattr(data, "images", data)
    if input_size is None:  # the checkpoint's training size, else the images' own, else the model's default
        if meta.get("img_size"):
            input_size = (int(meta["in_chans"]), int(meta["img_size"]), int(meta["img_size"]))
        elif isinstance(images, Tensor) and images.dim() == 4:
            input_size = tuple(images.shape[1:])
        else:
            input_size = default_input_size(model)
    size = check_input_size(input_size)
    if n < 1:
        raise CnnzooError("n must be at least 1")
    rf = trace_receptive_field(model, size)
    info = rf.final if layer is None else rf.module(layer)
    if info.jump is None:
        raise CnnzooError(f"{layer or 'the output'!r} is a flat tensor, not a feature map")
    unit = tuple((k - 1) // 2 for k in info.size)
    mean = meta.get("mean") or IMAGENET_MEAN
    std = meta.get("std") or IMAGENET_STD
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    from ..utils.memory import check_fits
    from .summary import batch_bytes

    c, h, w = size  # the inputs held at once, and one batch's layer outputs with their gradients
    check_fits(n * c * h * w * 4 + 2 * batch_bytes(label, size, min(n, batch_size)), torch.device(device),
               f"--input-size {c} {h} {w} with --n {n}: the inputs and one batch's layer outputs",
               "use a smaller --input-size or --n")
    x_all, source = _inputs(data, n, size, mean, std, seed)
    acc = torch.zeros(size[1:], dtype=torch.float64)
    with eval_mode(model):
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i:i + batch_size].to(device).requires_grad_(True)
            if layer is None:  # the last feature map, wherever the net makes it
                y = traced_forward(model, x)[1]
            else:
                y = _module_output(model, layer, model, x)
            # samples are independent in eval mode: one backward gives every image's gradient
            (g,) = torch.autograd.grad(y[(slice(None), slice(None), *unit)].sum(), x)
            acc += g.detach().abs().sum(1).sum(0).double().cpu()
    label_layer = layer or rf.feature_module or ""
    return ERFResult(model=label, input_size=size, layer=label_layer, unit=unit, grid=(acc / x_all.shape[0]).numpy(),
                     rf=info, n=int(x_all.shape[0]), source=source)
