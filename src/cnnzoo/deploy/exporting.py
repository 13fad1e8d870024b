"""``export``: a trained checkpoint as ONNX (checked with onnxruntime) or TorchScript, BatchNorm folded.

The exported graph takes the *normalised* image batch ``(N, C, S, S)`` (N free, C and S the checkpoint's)
and returns logits; the preprocessing (size, mean, std, class names) is stored next to the weights: in the
ONNX file's ``metadata_props`` (key ``cnnzoo``) and in the TorchScript archive's extra file ``cnnzoo.json``.
Every export is verified: the saved file is loaded back and run on a batch of a *different* size than
the one traced (which proves the dynamic batch), and its output is compared with the original PyTorch
model's; the largest absolute difference is reported and must be below ``tol``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CnnzooError

FORMATS = ("onnx", "torchscript")
MIN_OPSET = 17


def max_opset() -> int:
    """The newest opset the TorchScript-based ONNX exporter writes (20 with torch 2.14); checked before any
    work, so ``--opset 99`` is one line instead of a traceback with the traced graph dumped on stdout."""
    try:
        from torch.onnx import _constants as c

        return int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", c.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):
        return MIN_OPSET


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # exported vs. the original (unfused) PyTorch model, on the verification batch
    fused_pairs: int  # BatchNorms folded into convolutions
    input_shape: tuple[int, int, int]  # (C, H, W); the batch dimension is dynamic
    opset: int | None = None

    def __str__(self) -> str:
        c, h, w = self.input_shape
        extra = f", opset {self.opset}" if self.opset else ""
        return (f"wrote {self.path} ({self.format}{extra}, input N x {c} x {h} x {w}, {self.fused_pairs} "
                f"BatchNorms folded); max abs diff vs PyTorch {self.max_abs_diff:.2e}")


def _strip_input_checks(net: nn.Module) -> None:
    """Drop cnnzoo's input-size pre-hooks: plain Python that a tracer would freeze (TracerWarning); the
    exported graph fixes C, H and W anyway."""
    from ..models.registry import InputCheck

    for m in net.modules():
        for key, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, InputCheck):
                del m._forward_pre_hooks[key]


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def prepare(model: nn.Module, fuse_bn: bool = True) -> nn.Module:
    """An eval-mode copy ready for tracing: BatchNorm folded (``cnnzoo.fuse``), input hooks removed."""
    import copy

    from .fusion import fuse

    net = fuse(model) if fuse_bn else copy.deepcopy(model).eval()
    _strip_input_checks(net)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class _FixedAdaptiveAvgPool(nn.Module):
    """``AdaptiveAvgPool2d`` for one input size as two fixed averaging matrices (``ph @ x @ pw.T``): the
    TorchScript-based ONNX exporter takes an adaptive pooling only where the input is a multiple of the
    output (a 1x1 map pooled up to VGG's 7x7 is not)."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("ph", _averaging(in_hw[0], out_hw[0]), persistent=False)
        self.register_buffer("pw", _averaging(in_hw[1], out_hw[1]).T.contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ph @ x @ self.pw


def _averaging(n: int, out: int) -> torch.Tensor:
    """(out, n): row i averages PyTorch's adaptive window floor(i n / out) .. ceil((i + 1) n / out)."""
    m = torch.zeros(out, n)
    for i in range(out):
        lo, hi = i * n // out, -(-(i + 1) * n // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _fix_adaptive_pools(net: nn.Module, x: torch.Tensor) -> None:
    """Swap each adaptive average pooling whose input (at ``x``'s size) is no multiple of its output for
    :class:`_FixedAdaptiveAvgPool`: the exported graph has a fixed image size anyway."""
    sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    pools = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]

    def record(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            sizes[name] = (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in pools]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in hooks:
            h.remove()
    for name, (i, o) in sizes.items():
        if i[0] % o[0] or i[1] % o[1]:
            net.set_submodule(name, _FixedAdaptiveAvgPool((int(i[0]), int(i[1])), (int(o[0]), int(o[1]))))


def _public_meta(meta: dict) -> dict:
    keys = ("model", "num_classes", "in_chans", "img_size", "mean", "std", "classes", "dataset", "resize")
    return {k: meta.get(k) for k in keys}


def _export_onnx(net: nn.Module, x: torch.Tensor, path: Path, opset: int, meta: dict) -> None:
    """The TorchScript-based exporter (no onnxscript needed, dynamic axes by name); where it cannot take
    a net, the torch.export-based one (``dynamo=True``, which needs the onnxscript package)."""
    import onnx

    _fix_adaptive_pools(net, x)
    try:
        _torchscript_onnx(net, x, path, opset)
    except Exception as first:  # noqa: BLE001  (the exporter raises many types; the fallback says which)
        if importlib.util.find_spec("onnxscript") is None:
            reason = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
            raise CnnzooError(f"the ONNX exporter cannot take this net ({reason[:200]}); pip install onnxscript "
                              f"for torch's newer exporter, or use --format torchscript") from first
        _dynamo_onnx(net, x, path, opset)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "cnnzoo", json.dumps(_public_meta(meta))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _torchscript_onnx(net: nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        # deprecated upstream in favour of the torch.export-based exporter, which needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")  # strided slices (ResNet option A)
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _dynamo_onnx(net: nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(net, (x,), dynamo=True, opset_version=max(opset, 18), input_names=["input"],
                                output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (y,) = sess.run(["logits"], {"input": x.cpu().numpy()})
    return torch.from_numpy(y)


def _export_torchscript(net: nn.Module, x: torch.Tensor, path: Path, meta: dict) -> None:
    # torch marks torch.jit deprecated (FutureWarning) in favour of torch.export, but TorchScript files are
    # still what C++/mobile runtimes load; the warning is silenced here, not for the user's own code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.trace(net, (x,))
        torch.jit.save(ts, str(path), _extra_files={"cnnzoo.json": json.dumps(_public_meta(meta))})


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _logits(torch.jit.load(str(path))(x))


def _check_format(format: str, opset: int) -> str:
    """The format's canonical name, its opset and packages checked before any work."""
    fmt_ = format.lower().replace("-", "")
    if fmt_ in ("ts", "jit"):
        fmt_ = "torchscript"
    if fmt_ not in FORMATS:
        raise CnnzooError(f"unknown export format {format!r}: use onnx or torchscript")
    if fmt_ == "onnx":
        from ..utils.ranges import Range

        Range(int, lo=MIN_OPSET, hi=max_opset()).check("the ONNX opset (--opset)", opset)
    if fmt_ == "onnx" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        raise CnnzooError("--format onnx needs onnx and onnxruntime: pip install 'cnnzoo[export]'")
    return fmt_


def export(
    checkpoint: str | os.PathLike,
    format: str = "onnx",
    out: str | os.PathLike | None = None,
    opset: int = MIN_OPSET,
    fuse_bn: bool = True,
    tol: float = 1e-4,
    seed: int = 0,
    overwrite: bool = False,
) -> ExportResult:
    """Export a checkpoint (run folder, ``best``/``last`` folder or ``model.safetensors``) to ONNX or
    TorchScript, with BatchNorm folded into the convolutions, and verify the file against PyTorch.

    ``out`` defaults to ``<run folder>/<model>.onnx`` (``.pt`` for TorchScript); an existing file there that
    this process did not write is replaced only with ``overwrite``. Raises :class:`CnnzooError` when the
    exported model's output differs from PyTorch's by ``tol`` or more.
    """
    from ..training import find_checkpoint, load_checkpoint
    from ..utils.files import check_output_path

    if out is not None:  # before any work
        check_output_path(out, overwrite=overwrite, what="--out")

    fmt_ = _check_format(format, opset)
    model, meta = load_checkpoint(checkpoint, device="cpu")
    if out is None:
        run_dir = find_checkpoint(checkpoint).parent
        out = run_dir / f"{meta.get('model') or 'model'}.{'onnx' if fmt_ == 'onnx' else 'pt'}"
    return export_model(model, meta, out, fmt_, opset=opset, fuse_bn=fuse_bn, tol=tol, seed=seed,
                        overwrite=overwrite)


def export_model(model: nn.Module, meta: dict, out: str | os.PathLike, format: str = "onnx", opset: int = MIN_OPSET,
                 fuse_bn: bool = True, tol: float = 1e-4, seed: int = 0, overwrite: bool = False) -> ExportResult:
    """:func:`export` for a model in memory: ``meta`` needs ``in_chans`` and ``img_size`` (the input the
    file takes; the batch stays free) and may carry the preprocessing stored with it."""
    from ..utils.files import atomic_write, check_output_path

    fmt_ = _check_format(format, opset)
    path = check_output_path(out, overwrite=overwrite, what="--out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnzooError(f"cannot create {str(path.parent)!r} ({e.strerror or e}): pass a writable --out") \
            from e

    c, s = int(meta["in_chans"]), int(meta["img_size"])
    g = torch.Generator().manual_seed(seed)
    x_trace = torch.randn(2, c, s, s, generator=g)
    x_check = torch.randn(3, c, s, s, generator=g)  # another batch size: the batch dimension must be dynamic
    net = prepare(model, fuse_bn)
    n_fused = len(getattr(net, "fused_pairs", []))
    diffs: list[float] = []

    def write(tmp: Path) -> None:
        with torch.no_grad():
            if fmt_ == "onnx":
                _export_onnx(net, x_trace, tmp, opset, meta)
                y = _run_onnx(tmp, x_check)
            else:
                _export_torchscript(net, x_trace, tmp, meta)
                y = _run_torchscript(tmp, x_check)
            ref = _logits(model.eval()(x_check))
        diffs.append((y.float() - ref.float()).abs().max().item())
        if not diffs[0] < tol:  # checked before the file takes its name: a failed export leaves nothing behind
            raise CnnzooError(f"the exported {fmt_} model differs from PyTorch by {diffs[0]:.2e} (>= {tol:g}); "
                              f"try --no-fuse, or report it as a bug")

    try:
        path = atomic_write(path, write, overwrite=overwrite, what="--out")
    except OSError as e:  # a full disk or no permission: one line naming the path and the space left
        from ..utils.oserr import os_error_line

        raise CnnzooError(f"cannot write the exported model: {os_error_line(e)}") from e
    diff = diffs[0]
    return ExportResult(path=path, format=fmt_, max_abs_diff=diff, fused_pairs=n_fused, input_shape=(c, s, s),
                        opset=opset if fmt_ == "onnx" else None)
