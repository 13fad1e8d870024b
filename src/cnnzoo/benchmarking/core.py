"""How fast a net trains and infers here, alone or side by side with torchvision's or timm's same net.

:func:`benchmark` times whole batches: a training step (forward, loss, ``zero_grad(set_to_none=True)``,
backward, SGD step) or an inference pass (``torch.inference_mode``, eval). Each figure is the median of
several timed runs after warm-up; with ``vs`` the reference net is built in the same process and the two
are timed interleaved (ours, theirs, theirs, ours, ...), so load from other processes hits both alike and
the ratio ours/theirs is meaningful even on a busy machine: it is the median over rounds of the two
nets' times within a round (:func:`paired_ratio`), not the ratio of two medians taken minutes apart.

Fast paths, all opt-out and all checked against the plain path on the benchmark's own input:

- inference: eval mode, ``torch.inference_mode``, BatchNorm folded into the convolutions
  (:func:`cnnzoo.fuse`) and, on the CPU, activations and residual adds run inside the conv kernels
  (:func:`cnnzoo.fuse_activations`), channels_last memory format where it pays on this kind of device;
- training: channels_last where it pays, ``zero_grad(set_to_none=True)``;
- CUDA: bf16 autocast, channels_last, ``cudnn.benchmark``, the batch copied once from pinned memory;
- ``compile=True``: ``torch.compile`` (opt-in: on this 2-core CPU it did not pay for training).

Conventions. FLOPs = 2 x MACs (cnnzoo's count: conv + linear multiply-adds of one eval forward pass,
:func:`cnnzoo.count_macs`); a training step counts 3x the forward FLOPs (forward, gradient w.r.t. the
input, gradient w.r.t. the weights; GoogLeNet's auxiliary heads are not counted). "peak" is the float32
GEMM throughput measured at start (best of several square matmuls), so ``peak_fraction`` says how much of
the machine's matrix-multiply speed the net turns into useful work. Peak memory is what one step adds at
its highest point above what was held before it (activations, gradients, workspaces): CUDA
``max_memory_allocated``; CPU the resident-set size sampled every half millisecond (approximate).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from . import fmt
from .errors import CnnzooError
from .policy import channels_last_default, fused_optimizer_ok, gemm_wgrad_default, speed_plan
from .training.batches import BatchPrep, epoch_plan
from .training.loop import logits_of, train_step

if TYPE_CHECKING:
    from .data import ImageSet

__all__ = ["benchmark", "BenchmarkReport", "BenchResult", "BenchSettings", "SideResult", "Variant",
           "gemm_peak_gflops", "reference_model", "paired_ratio", "loop_overhead", "pipeline_throughput",
           "REFERENCE_NAMES"]

MODES = ("train", "infer")

# cnnzoo name -> timm name, for ``vs="timm"`` (torchvision names come from each registry entry's
# ``reference``). Same architecture; timm's MobileNetV3 head is a 1x1 conv without BN where torchvision's is
# a Linear (same MACs), and timm's VGG head is a 7x7 conv "ConvMlp" (the same as the Linear at 224 only).
TIMM_NAMES: dict[str, str] = {
    **{n: n for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet18d", "resnet34d",
                      "resnet50c", "resnet50d", "resnet101d", "resnext50_32x4d", "wide_resnet50_2")},
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{n: n for n in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
    "mobilenet_v1": "mobilenetv1_100",
    "mobilenet_v1_125": "mobilenetv1_125",
    "mobilenet_v2": "mobilenetv2_100",
    "mobilenet_v3_large": "mobilenetv3_large_100",
    "mobilenet_v3_small": "mobilenetv3_small_100",
}
REFERENCE_NAMES = ("torchvision", "timm")

# ------------------------------------------------------------------------------------------ results
@dataclass
class SideResult:
    """One net's figures in one mode (ours, or the reference built by torchvision/timm)."""

    impl: str  # "cnnzoo" | "torchvision" | "timm"
    name: str  # the constructor's name in that library
    images_per_s: float
    latency_ms: float  # median time of one batch
    latency_ms_runs: list[float]  # every timed run (each the mean over ``inner`` batches)
    inner: int  # batches per timed run (several for very fast nets, so a run is long enough to time)
    peak_mem_mb: float | None
    gflops: float  # achieved GFLOP/s (see the module docstring for the convention)
    peak_fraction: float | None  # gflops / measured float32 GEMM peak
    channels_last: bool
    fused: bool
    compiled: bool
    amp: bool
    fused_opt: bool = False  # training step with torch's fused SGD kernel
    gemm_wgrad: int = 0  # training: convs whose weight gradient ran as one GEMM (cnnzoo.conv_grad)
    max_abs_diff: float | None = None  # fast path vs plain path on the same input (None: no fast path used)
    max_rel_diff: float | None = None  # the same, divided by the plain output's largest magnitude
    compile_s: float | None = None


@dataclass(frozen=True)
class Variant:
    """One more net to time interleaved with ours, to separate the effect of each fast path (e.g. the
    reference fused but contiguous). ``impl``: ``"ref"`` (the ``vs`` library's net) or ``"cnnzoo"``."""

    label: str
    impl: str = "ref"
    channels_last: bool = False
    fuse: bool = False
    fuse_act: bool = True  # with fuse on a CPU: also cnnzoo.fuse_activations (False: BatchNorm folding only)
    fused_opt: bool = False  # training: torch's fused SGD kernel (what cnnzoo.train uses) instead of the default
    gemm_wgrad: bool = False  # training: small-map weight gradients as one GEMM (cnnzoo.conv_grad)
    amp: bool | None = None  # bf16 autocast; None: as the benchmark's ``amp``


@dataclass
class BenchResult:
    """One (model, mode): our figures, the reference's, and the ratio ours / theirs in images per second."""

    model: str
    mode: str
    batch_size: int
    img_size: int
    in_chans: int
    device: str
    macs_per_image: int
    flops_per_image: int  # 2 x MACs (inference) or 6 x MACs (training step)
    ours: SideResult
    theirs: SideResult | None = None  # the reference as its users run it (contiguous, unfused)
    theirs_same: SideResult | None = None  # the reference with our fast paths applied (like for like)
    extra: dict[str, SideResult] = field(default_factory=dict)  # the ``extra`` variants, by label

    @property
    def ratio(self) -> float | None:
        """Ours / theirs in images per second, paired by round (see :func:`paired_ratio`)."""
        return paired_ratio(self.ours, self.theirs) if self.theirs else None

    @property
    def ratio_same(self) -> float | None:
        return paired_ratio(self.ours, self.theirs_same) if self.theirs_same else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"], d["ratio_same"] = self.ratio, self.ratio_same
        return d


def paired_ratio(a: SideResult | dict, b: SideResult | dict) -> float:
    """How many times faster ``a`` ran than ``b``: the median over rounds of b's time / a's time.

    Each round times every net once, back to back, so the two times of a round saw the same load from
    other processes; the median of the per-round ratios is much steadier on a busy machine than the ratio of
    the two medians (which pairs runs minutes apart). Takes :class:`SideResult` s or their dicts.
    """
    ta = a["latency_ms_runs"] if isinstance(a, dict) else a.latency_ms_runs
    tb = b["latency_ms_runs"] if isinstance(b, dict) else b.latency_ms_runs
    return statistics.median(y / x for x, y in zip(ta, tb, strict=True))


@dataclass
class BenchmarkReport:
    """Everything one :func:`benchmark` call measured, with the machine it ran on."""

    machine: dict
    settings: dict
    results: list[BenchResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"machine": self.machine, "settings": self.settings,
                "results": [r.to_dict() for r in self.results]}

    def table(self) -> str:
        """Aligned text table: one row per (model, mode)."""
        vs = any(r.theirs for r in self.results)
        same = any(r.theirs_same for r in self.results)
        headers = ["model", "mode", "batch", "size", "fast paths", "img/s", "ms/batch", "peak MB", "GFLOP/s",
                   "of peak"]
        if vs:
            headers += ["ref", "ref img/s", "ours/ref"]
        if same:
            headers += ["ref fast img/s", "ours/ref fast"]
        rows = []
        for r in self.results:
            o = r.ours
            row: list[object] = [
                r.model, r.mode, r.batch_size, r.img_size, _paths(o), f"{o.images_per_s:.1f}",
                f"{o.latency_ms:.1f}", "-" if o.peak_mem_mb is None else f"{o.peak_mem_mb:.0f}",
                f"{o.gflops:.1f}", "-" if o.peak_fraction is None else f"{100 * o.peak_fraction:.0f}%"]
            if vs:
                row += [r.theirs.name if r.theirs else "-",
                        f"{r.theirs.images_per_s:.1f}" if r.theirs else "-",
                        f"{r.ratio:.2f}x" if r.ratio else "-"]
            if same:
                row += [f"{r.theirs_same.images_per_s:.1f}" if r.theirs_same else "-",
                        f"{r.ratio_same:.2f}x" if r.ratio_same else "-"]
            rows.append(row)
        m = self.machine
        threads = f"{m['threads']} thread" + ("s" if m["threads"] != 1 else "")
        head = (f"{m['device_name']}, {threads}, torch {m['torch']}; float32 GEMM peak "
                f"{m['gemm_gflops']:.1f} GFLOP/s; median of {self.settings['runs']} runs after "
                f"{self.settings['warmup']} warm-up batches" + (", interleaved with the reference" if vs else ""))
        return head + "\n" + fmt.table(rows, headers)


def _paths(s: SideResult) -> str:
    parts = [p for p, on in (("fused", s.fused), ("cl", s.channels_last), ("compile", s.compiled),
                             ("bf16", s.amp), ("gemm-wgrad", s.gemm_wgrad > 0)) if on]
    return "+".join(parts) or "-"


# ------------------------------------------------------------------------------------------ machine
def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise CnnzooError(f"unknown device {device!r}: use cpu or cuda") from e
    if dev.type not in ("cpu", "cuda"):
        raise CnnzooError(f"unsupported device {device!r}: use cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CnnzooError("--device cuda needs a CUDA GPU, but torch.cuda.is_available() is False here: "
                              "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CnnzooError(f"there is no {dev}: this machine has {torch.cuda.device_count()} CUDA devices")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


_PEAK_CACHE: dict[tuple[str, int], float] = {}


def gemm_peak_gflops(device: str | torch.device = "cpu", n: int | None = None, repeats: int = 8) -> float:
    """The machine's float32 matrix-multiply throughput in GFLOP/s: best of ``repeats`` n x n matmuls.

    Cached per (device, threads): measured once per process. TF32 is off for this (a float32 figure).
    """
    dev = _device(device)
    key = (str(dev), torch.get_num_threads())
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    n = n or (8192 if dev.type == "cuda" else 1024)  # 1024: within a few % of MKL's peak on a CPU, 0.1 s
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, generator=g)
    b = torch.randn(n, n, device=dev, generator=g)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a @ b  # warm-up (thread pool, kernel selection)
        _sync(dev)
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            _sync(dev)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    _PEAK_CACHE[key] = 2 * n ** 3 / best / 1e9
    return _PEAK_CACHE[key]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device = "cpu") -> dict:
    """What the figures depend on: device, threads, library versions, load, GEMM peak."""
    dev = _device(device)
    info = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "gemm_gflops": gemm_peak_gflops(dev),
    }
    for lib in ("torchvision", "timm"):  # versions from the package metadata: importing them takes seconds
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[lib] = importlib.metadata.version(lib)
    return info


# ------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None  # not Linux: no cheap way to read the resident set without psutil


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so an RSS delta sees the step's own allocations."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RssPeak:
    """Context manager: the highest resident set size seen (every ~0.5 ms) above the size at entry."""

    def __init__(self) -> None:
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            r = _rss_bytes()
            if r is not None and self.peak is not None:
                self.peak = max(self.peak, r)
            time.sleep(0.0005)

    def __enter__(self) -> _RssPeak:
        _malloc_trim()
        self.base = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if self.base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.base is not None:
            self._thread.join()
            self._poll_once()

    def _poll_once(self) -> None:
        r = _rss_bytes()
        if r is not None and self.peak is not None:
            self.peak = max(self.peak, r)

    @property
    def delta_mb(self) -> float | None:
        return None if self.base is None or self.peak is None else (self.peak - self.base) / 2 ** 20


def _step_memory_mb(step: Callable[[], None], dev: torch.device) -> float | None:
    if dev.type == "cuda":
        _sync(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        _sync(dev)
        return (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20
    with _RssPeak() as rss:
        step()
    return rss.delta_mb


# ------------------------------------------------------------------------------------------- models
def reference_model(name: str, vs: str, num_classes: int = 1000) -> tuple[str, nn.Module]:
    """(constructor name, module): the torchvision or timm net with the same architecture as ``name``."""
    from .registry import model_info

    info = model_info(name)
    if vs == "torchvision":
        ref = info.reference
        if not ref.startswith("torchvision.models."):
            raise CnnzooError(f"{info.name} has no torchvision counterpart" +
                              (f" (its reference is {ref}): use --vs timm" if ref.startswith("timm") else
                               ": drop --vs or pick a model with one (cnnzoo list)"))
        tv_name = ref.removeprefix("torchvision.models.")
        import torchvision

        with warnings.catch_warnings():  # GoogLeNet's "default init will change" FutureWarning
            warnings.simplefilter("ignore")
            return tv_name, torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes)
    if vs == "timm":
        if info.name not in TIMM_NAMES:
            raise CnnzooError(f"{info.name} has no timm counterpart in cnnzoo's table: use --vs torchvision "
                              f"or one of: {', '.join(sorted(TIMM_NAMES))}")
        try:
            import timm
        except ImportError as e:
            raise CnnzooError("--vs timm needs the timm package: pip install timm") from e
        return TIMM_NAMES[info.name], timm.create_model(TIMM_NAMES[info.name], pretrained=False,
                                                        num_classes=num_classes)
    raise CnnzooError(f"unknown reference {vs!r}: use --vs {' or --vs '.join(REFERENCE_NAMES)}")


@contextlib.contextmanager
def _no_random_layers(model: nn.Module) -> Iterator[None]:
    """Dropout and stochastic depth in eval mode for the duration (BatchNorm keeps training mode), so that a
    training-mode forward is deterministic and two memory formats can be compared."""
    mods = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
            or type(m).__name__ in ("StochasticDepth", "DropPath")]
    states = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        yield
    finally:
        for m, t in zip(mods, states, strict=True):
            m.train(t)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _diff(ref: Tensor, out: Tensor) -> tuple[float, float]:
    d = (ref.float() - out.float()).abs().max().item()
    return d, d / max(ref.float().abs().max().item(), 1e-12)


@dataclass
class _Side:
    """A net set up for timing: its step function and what was applied to it."""

    impl: str
    name: str
    step: Callable[[], None]
    channels_last: bool
    fused: bool
    compiled: bool
    amp: bool
    max_abs_diff: float | None
    max_rel_diff: float | None
    compile_s: float | None = None
    fused_opt: bool = False
    gemm_wgrad: int = 0
    inner: int = 1
    times: list[float] = field(default_factory=list)
    mem: float | None = None


def _prepare(impl: str, name: str, model: nn.Module, mode: str, x: Tensor, y: Tensor, dev: torch.device,
             channels_last: bool, fuse: bool, compile: bool, amp: bool, check: bool,
             fuse_act: bool = True, fused_opt: bool = False, gemm_wgrad: bool = False) -> _Side:
    """Apply the fast paths to ``model``, check them against the plain path, return its timed step."""
    model.to(dev)
    xc = x[: min(4, x.shape[0])]
    ref = None
    if mode == "infer":
        model.eval()
        if check and (fuse or channels_last or compile):
            with torch.inference_mode():
                ref = logits_of(model(xc)).clone()
        if fuse:
            from .fusion import fuse as fold
            from .fusion import fuse_activations

            model = fold(model, inplace=True)
            if fuse_act and dev.type == "cpu" and not compile:  # Inductor fuses on its own
                model = fuse_activations(model, inplace=True)
    else:
        model.train()
        if check and (channels_last or compile):
            with torch.no_grad(), _no_random_layers(model):
                ref = logits_of(model(xc)).clone()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    n_gemm = 0
    if gemm_wgrad and mode == "train" and not compile:
        from .conv_grad import count_gemm_convs, to_small_map_grads

        to_small_map_grads(model)
        n_gemm = count_gemm_convs(model, x[:1], amp)
    compile_s = None
    if compile:
        try:
            model = torch.compile(model)
        except Exception as e:  # no compiler toolchain, unsupported platform ...
            raise CnnzooError(f"torch.compile failed for {name}: {_first_line(e)}: drop --compile") from e

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(dev.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    abs_d = rel_d = None
    if ref is not None:
        xcf = xc.contiguous(memory_format=torch.channels_last) if channels_last else xc
        t = time.perf_counter()
        try:
            if mode == "infer":
                with torch.inference_mode():
                    out = logits_of(model(xcf))
            else:
                with torch.no_grad(), _no_random_layers(model):
                    out = logits_of(model(xcf))
        except CnnzooError:
            raise
        except Exception as e:
            if not compile:
                raise
            raise CnnzooError(f"torch.compile failed for {name}: {_first_line(e)}: drop --compile") from e
        if compile:
            compile_s = time.perf_counter() - t
        abs_d, rel_d = _diff(ref, out)

    if mode == "infer":
        def step() -> None:
            with torch.inference_mode(), autocast():
                model(x)
    else:
        # fused: one kernel per parameter for weight update and momentum (torch's own, as cnnzoo.train uses);
        # None is torch's default (a loop of several element-wise ops per parameter on the CPU)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True if fused_opt else None)

        def step() -> None:  # the training engine's own step (no label smoothing)
            train_step(model, opt, x, y, autocast)

    fused = fuse and mode == "infer"
    return _Side(impl, name, step, channels_last, fused, compile, amp, abs_d, rel_d, compile_s,
                 fused_opt=fused_opt and mode == "train", gemm_wgrad=n_gemm)


def _time(side: _Side, dev: torch.device) -> float:
    _sync(dev)
    t = time.perf_counter()
    for _ in range(side.inner):
        side.step()
    _sync(dev)
    return (time.perf_counter() - t) / side.inner


def _run_sides(sides: list[_Side], dev: torch.device, warmup: int, runs: int, min_run_s: float,
               measure_memory: bool) -> None:
    """Memory step, warm-up, then ``runs`` rounds alternating the order (ABBA) so drift hits all alike."""
    for s in sides:
        if measure_memory:  # this step is also the first warm-up batch
            s.mem = _step_memory_mb(s.step, dev)
        last = math.inf
        for _ in range(max(1, warmup - measure_memory)):
            last = _time(s, dev)
        s.inner = max(1, math.ceil(min_run_s / max(last, 1e-6)))
    for r in range(runs):
        for s in (sides if r % 2 == 0 else sides[::-1]):
            s.times.append(_time(s, dev))


def _side_result(s: _Side, batch: int, flops: int, peak: float) -> SideResult:
    lat = statistics.median(s.times)
    ips = batch / lat
    gflops = flops * ips / 1e9
    return SideResult(
        impl=s.impl, name=s.name, images_per_s=round(ips, 3), latency_ms=round(1e3 * lat, 3),
        latency_ms_runs=[round(1e3 * t, 3) for t in s.times], inner=s.inner,
        peak_mem_mb=None if s.mem is None else round(s.mem, 1), gflops=round(gflops, 3),
        peak_fraction=round(gflops / peak, 4) if peak else None, channels_last=s.channels_last, fused=s.fused,
        compiled=s.compiled, amp=s.amp, fused_opt=s.fused_opt, gemm_wgrad=s.gemm_wgrad,
        max_abs_diff=None if s.max_abs_diff is None else float(f"{s.max_abs_diff:.3g}"),
        max_rel_diff=None if s.max_rel_diff is None else float(f"{s.max_rel_diff:.3g}"),
        compile_s=None if s.compile_s is None else round(s.compile_s, 2))


# ------------------------------------------------------------------------------------------ the API
def benchmark(
    models: str | Sequence[str],
    mode: str = "both",
    batch_size: int = 32,
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    vs: str | None = None,
    vs_settings: str = "default",
    channels_last: bool | None = None,
    fuse: bool = True,
    compile: bool = False,
    amp: bool | None = None,
    fused_optimizer: bool | None = None,
    gemm_wgrad: bool | None = None,
    warmup: int = 2,
    runs: int = 5,
    min_run_s: float = 0.02,
    threads: int | None = None,
    check: bool = True,
    measure_memory: bool = True,
    num_classes: int | None = None,
    progress: bool = False,
    extra: Sequence[Variant] = (),
) -> BenchmarkReport:
    """Training and/or inference speed of zoo nets, optionally side by side with torchvision or timm.

    Args:
        models: registered names (or ``path/to/file.py:factory`` for your own net; no ``vs`` then).
        mode: ``"train"``, ``"infer"`` or ``"both"``.
        img_size: square input side; ``None``: each model's default (224 for the ImageNet nets).
        vs: ``"torchvision"`` or ``"timm"``: also time that library's net of the same architecture,
            interleaved with ours; the result carries the ratio ours / theirs (images per second).
        vs_settings: how the reference runs: ``"default"`` as its users run it (eval, unfused, contiguous),
            ``"same"`` with our fast paths applied to it too (like for like), ``"both"``.
        channels_last: ``None``: per net, where it was measured to pay (:func:`channels_last_default`).
        fuse: fold BatchNorm into convolutions for inference (:func:`cnnzoo.fuse`) and, on the CPU, run
            activations and residual adds inside the conv kernels (:func:`cnnzoo.fuse_activations`).
        compile: ``torch.compile`` our net (compile time is reported, not timed).
        amp: bf16 autocast, applied to both sides (default: on CUDA; on a CPU only when asked, fast on CPUs
            with AMX).
        fused_optimizer: training: our step uses torch's fused SGD kernel, as :func:`cnnzoo.train` does
            (``None``: where the device has it); the reference as its users run it keeps torch's default
            SGD, the like-for-like reference (``vs_settings="same"``) gets the fused kernel too.
        gemm_wgrad: training: the weight gradients of convs on small maps as one GEMM
            (:mod:`cnnzoo.conv_grad`), for our net and the like-for-like reference (``None``: on CPUs where it
            was measured to pay, as :func:`cnnzoo.train` does); ``BenchResult.ours.gemm_wgrad`` counts them.
        runs / warmup: timed runs (median reported) and untimed warm-up batches per net.
        min_run_s: very fast nets repeat the batch within a timed run until it lasts this long.
        threads: CPU threads for the duration (``torch.set_num_threads``); ``None``: torch's default.
        check: compare each fast path with the plain path on the benchmark's own input (reported as
            ``max_abs_diff``/``max_rel_diff``).
        extra: further :class:`Variant` s timed in the same interleaved rounds (``BenchResult.extra``).
    """
    names = [models] if isinstance(models, str) else list(models)
    if not names:
        raise CnnzooError("name at least one model to benchmark (cnnzoo list shows them)")
    if vs is not None:
        from .registry import resolve_name

        for name in names:
            if ":" in name and name.rpartition(":")[0].endswith(".py"):
                raise CnnzooError(f"--vs pairs a registered net with its {vs} twin; {name} is your own net: "
                                  f"drop --vs")
            resolve_name(name)  # unknown names fail here, before anything is built
    if mode not in (*MODES, "both"):
        raise CnnzooError(f"unknown mode {mode!r}: use train, infer or both")
    if vs is not None and vs not in REFERENCE_NAMES:
        raise CnnzooError(f"unknown reference {vs!r}: use --vs {' or --vs '.join(REFERENCE_NAMES)}")
    if vs_settings not in ("default", "same", "both"):
        raise CnnzooError(f"unknown vs_settings {vs_settings!r}: use default, same or both")
    if batch_size < 1 or runs < 1 or warmup < 0:
        raise CnnzooError(f"batch size and runs must be >= 1 and warm-up >= 0 (got {batch_size}, {runs}, "
                          f"{warmup})")
    dev = _device(device)
    if amp is None:
        amp = dev.type == "cuda"
    if amp and dev.type not in ("cuda", "cpu"):
        raise CnnzooError(f"bf16 autocast (--amp) runs on CUDA or the CPU, not {dev.type}: drop --amp")
    if fused_optimizer is None:
        fused_optimizer = fused_optimizer_ok(dev)
    if gemm_wgrad is None:
        gemm_wgrad = gemm_wgrad_default(dev)
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise CnnzooError(f"threads must be >= 1 (got {threads})")
        torch.set_num_threads(threads)
    old_cudnn = torch.backends.cudnn.benchmark
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # pick the fastest conv algorithm per shape, both sides alike
    try:
        report = BenchmarkReport(machine=machine_info(dev), settings=dict(
            mode=mode, batch_size=batch_size, img_size=img_size, vs=vs,
            vs_settings=vs_settings if vs else None, channels_last=channels_last, fuse=fuse, compile=compile,
            amp=amp, fused_optimizer=fused_optimizer, gemm_wgrad=gemm_wgrad, warmup=warmup, runs=runs,
            min_run_s=min_run_s,
            check=check))
        settings = BenchSettings(batch=batch_size, img_size=img_size, device=dev, vs=vs, vs_settings=vs_settings,
                                 channels_last=channels_last, fuse=fuse, compile=compile, amp=amp, warmup=warmup,
                                 runs=runs, min_run_s=min_run_s, check=check, measure_memory=measure_memory,
                                 num_classes=num_classes, peak=report.machine["gemm_gflops"], extra=tuple(extra),
                                 fused_opt=fused_optimizer, gemm_wgrad=gemm_wgrad)
        for name in names:
            for m in (MODES if mode == "both" else (mode,)):
                r = _bench_one(name, m, settings)
                report.results.append(r)
                if progress:
                    msg = f"{r.model} {r.mode}: {r.ours.images_per_s:.1f} img/s"
                    if r.theirs:
                        msg += f", {r.theirs.impl} {r.theirs.images_per_s:.1f} img/s ({r.ratio:.2f}x)"
                    if r.theirs_same:
                        msg += f", like for like {r.ratio_same:.2f}x"
                    print(msg, file=sys.stderr, flush=True)
        return report
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.benchmark = old_cudnn


@dataclass(frozen=True)
class BenchSettings:
    """What one :func:`benchmark` call times every (model, mode) with (see its arguments)."""

    batch: int
    img_size: int | None
    device: torch.device
    vs: str | None
    vs_settings: str
    channels_last: bool | None
    fuse: bool
    compile: bool
    amp: bool
    warmup: int
    runs: int
    min_run_s: float
    check: bool
    measure_memory: bool
    num_classes: int | None
    peak: float  # float32 GEMM GFLOP/s of the machine
    extra: tuple[Variant, ...] = ()
    fused_opt: bool = False
    gemm_wgrad: bool = False


def _bench_one(name: str, mode: str, st: BenchSettings) -> BenchResult:
    """Build ours (and the references), time them interleaved, return the figures of one (model, mode)."""
    from .analysis import count_macs, default_input_size, resolve_model, shape_forward

    kwargs = {} if st.num_classes is None else {"num_classes": st.num_classes}
    torch.manual_seed(0)
    ours = resolve_model(name, **kwargs)
    label = getattr(ours, "cnnzoo_name", name)
    c, h, _ = default_input_size(ours)
    size = st.img_size or h
    out_classes = getattr(ours, "default_cfg", {}).get("num_classes")
    if out_classes is None:  # a user's own net: its output width from a shapes-only forward pass
        out_classes = int(logits_of(shape_forward(ours, (c, size, size), contextlib.nullcontext)).shape[-1])
    macs = count_macs(ours, (c, size, size))
    flops = 2 * macs * (3 if mode == "train" else 1)
    cl = channels_last_default(label, mode, st.device) if st.channels_last is None else st.channels_last

    g = torch.Generator().manual_seed(0)
    x = torch.randn(st.batch, c, size, size, generator=g)
    y = torch.randint(0, out_classes, (st.batch,), generator=g)
    if st.device.type == "cuda":  # one copy from pinned memory, as the training engine does with the data set
        x, y = x.pin_memory().to(st.device, non_blocking=True), y.pin_memory().to(st.device, non_blocking=True)

    sides = [_prepare("cnnzoo", label, ours, mode, x, y, st.device, cl, st.fuse, st.compile, st.amp, st.check,
                      fused_opt=st.fused_opt, gemm_wgrad=st.gemm_wgrad)]
    if st.vs is not None:
        if st.vs_settings in ("default", "both"):
            ref_name, ref = reference_model(label, st.vs, out_classes)
            sides.append(_prepare(st.vs, ref_name, ref, mode, x, y, st.device, False, False, False, st.amp,
                                  st.check))
        if st.vs_settings in ("same", "both"):
            ref_name, ref = reference_model(label, st.vs, out_classes)
            sides.append(_prepare(st.vs, ref_name, ref, mode, x, y, st.device, cl, st.fuse, False, st.amp,
                                  st.check, fused_opt=st.fused_opt, gemm_wgrad=st.gemm_wgrad))
    for v in st.extra:
        if v.impl == "cnnzoo":
            torch.manual_seed(0)
            impl, ref_name, ref = "cnnzoo", label, resolve_model(name, **kwargs)
        elif st.vs is not None and v.impl == "ref":
            impl, (ref_name, ref) = st.vs, reference_model(label, st.vs, out_classes)
        else:
            raise CnnzooError(f"variant {v.label!r}: impl must be 'cnnzoo', or 'ref' together with vs")
        sides.append(_prepare(impl, ref_name, ref, mode, x, y, st.device, v.channels_last, v.fuse, False,
                              st.amp if v.amp is None else v.amp, st.check, v.fuse_act, v.fused_opt, v.gemm_wgrad))
    _run_sides(sides, st.device, st.warmup, st.runs, st.min_run_s, st.measure_memory)
    res = [_side_result(s, st.batch, flops, st.peak) for s in sides]
    out = BenchResult(model=label, mode=mode, batch_size=st.batch, img_size=size, in_chans=c,
                      device=str(st.device), macs_per_image=macs, flops_per_image=flops, ours=res[0])
    rest = res[1:]
    if st.vs is not None and st.vs_settings in ("default", "both"):
        out.theirs = rest.pop(0)
    if st.vs is not None and st.vs_settings in ("same", "both"):
        out.theirs_same = rest.pop(0)
    out.extra = {v.label: rest.pop(0) for v in st.extra}
    del sides
    return out


# ------------------------------------------------------------------------ the training loop and data
def _train_set(dataset: str, data_dir: str | os.PathLike | None, subset: int | None,
               seed: int = 0) -> ImageSet:
    from .data import load_dataset

    ds = load_dataset(dataset, "train", data_dir)
    if subset and subset < len(ds):
        g = torch.Generator().manual_seed(seed)
        ds = ds.subset(torch.randperm(len(ds), generator=g)[:subset].sort().values)
    return ds


def _prep_for(ds: ImageSet, dataset: str, img_size: int, in_chans: int, dev: torch.device,
              channels_last: bool = False) -> tuple[BatchPrep, int]:
    """The engine's batch preparation with the data set's recipe (crop padding, flips)."""
    from .training.config import recipe_for

    pad = recipe_for(dataset).get("pad", max(0, ds.img_size // 8))
    return BatchPrep(ds, img_size, in_chans, dev, pad, ds.hflip, channels_last, ds.mean, ds.std), pad


def pipeline_throughput(dataset: str = "mnist", batch_size: int = 128, repeats: int = 3,
                        data_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        subset: int | None = None) -> dict:
    """Images per second the in-memory pipeline delivers: the epoch plan (order, crops, flips) and, per batch,
    the crops and flips of the batch's images as row copies from the data set's :class:`CropFlipTable`
    (the per-pixel gather where the table is not built) and normalisation to float. No model.

    The median over ``repeats`` epochs is reported (the training engine's own ``BatchPrep``/``epoch_plan``);
    ``table_s`` is the one-off time to build the table, paid once per run like ``load_s``.
    """
    dev = _device(device)
    t = time.perf_counter()
    ds = _train_set(dataset, data_dir, subset)
    load_s = time.perf_counter() - t
    prep, pad = _prep_for(ds, dataset, ds.img_size, ds.in_chans, dev)
    x, y = ds.images.to(dev), ds.labels.to(dev)
    t = time.perf_counter()
    tabled = prep.build_table(x)
    _sync(dev)
    table_s = time.perf_counter() - t
    n = len(ds)
    steps = n // batch_size
    if steps < 1:
        raise CnnzooError(f"batch size {batch_size} is larger than the {n} images of {dataset}")
    times = []
    for r in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        perm, dy, dx, flip = epoch_plan(0, r, n, pad, ds.hflip, dev)
        for i in range(steps):
            s = slice(i * batch_size, (i + 1) * batch_size)
            idx = perm[s]
            xb, yb = prep.sample(x, idx, dy[s], dx[s], flip[s]), y.index_select(0, idx)
        _sync(dev)
        times.append(time.perf_counter() - t)
    t_med = statistics.median(times)
    return {"dataset": ds.name, "images": steps * batch_size, "batch_size": batch_size,
            "shape": list(xb.shape[1:]), "dtype": str(xb.dtype).removeprefix("torch."),
            "images_per_s": round(steps * batch_size / t_med, 1), "epoch_s": round(t_med, 4),
            "epoch_s_runs": [round(v, 4) for v in times], "load_s": round(load_s, 2),
            "table_s": round(table_s, 2) if tabled else None, "device": str(dev),
            "threads": torch.get_num_threads(), "label_sum": int(yb.sum())}


def loop_overhead(model: str = "lenet5", dataset: str = "mnist", repeats: int = 3, subset: int | None = None,
                  data_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  amp: str = "auto") -> dict:
    """How much longer an epoch of :func:`cnnzoo.train` takes than its bare steps on the same batches.

    Both sides train a fresh ``model`` from the same seed with the data set's recipe. The engine's figure is
    its own training time of the epoch (its ``train_images_per_s``: augmentation, metrics, LR schedule,
    progress bookkeeping included; its per-epoch evaluation and checkpoint excluded) plus the epoch plan it
    draws before the loop. The bare loop gets the epoch's batches already augmented and normalised on the
    device and times only the engine's own :func:`~cnnzoo.training.loop.train_step` with the engine's
    optimizer, memory format, precision and conv gradients (:func:`cnnzoo.policy.speed_plan`). Engine and
    bare loop alternate ``repeats`` times; medians are compared.
    """
    from .registry import model_info, resolve_name

    dev = _device(device)
    name = resolve_name(model)
    ds = _train_set(dataset, data_dir, subset)
    info = model_info(name)
    size = ds.img_size if info.max_size is None else min(max(ds.img_size, info.min_size), info.max_size)
    plan = speed_plan(name, dev, amp, warn=False)
    prep, pad = _prep_for(ds, dataset, size, ds.in_chans, dev, channels_last=plan.channels_last)
    x, y = ds.images.to(dev), ds.labels.to(dev)
    from .training.config import resolve

    cfg = resolve({"model": name, "dataset": dataset, "amp": amp})
    steps = len(ds) // cfg.batch_size
    t = time.perf_counter()
    perm, dy, dx, flip = epoch_plan(0, 0, len(ds), pad, ds.hflip, dev)
    _sync(dev)
    plan_s = time.perf_counter() - t
    batches = []
    for i in range(steps):
        s = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
        batches.append((prep(x[perm[s]], dy[s], dx[s], flip[s]), y[perm[s]]))
    eng, bar = [], []
    with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-") as tmp:
        for r in range(repeats):  # alternate which goes first
            run = os.path.join(tmp, f"run{r}")
            if r % 2:
                bar.append(_bare_epoch(cfg, plan, ds, batches))
            eng.append(_engine_epoch(cfg, run, data_dir, dev, subset, steps) + plan_s)
            if r % 2 == 0:
                bar.append(_bare_epoch(cfg, plan, ds, batches))
    e, b = statistics.median(eng), statistics.median(bar)
    n = steps * cfg.batch_size
    return {"model": name, "dataset": ds.name, "images": n, "batch_size": cfg.batch_size, "img_size": size,
            "engine_s": round(e, 4), "bare_s": round(b, 4), "ratio": round(e / b, 4),
            "engine_s_runs": [round(v, 4) for v in eng], "bare_s_runs": [round(v, 4) for v in bar],
            "plan_s": round(plan_s, 4), "bare_images_per_s": round(n / b, 1), "engine_images_per_s": round(n / e, 1),
            "device": str(dev), "threads": torch.get_num_threads()}


def _engine_epoch(cfg, out: str, data_dir, dev: torch.device, subset: int | None, steps: int) -> float:
    """Training seconds of one epoch of :func:`cnnzoo.train` (evaluation on a subset, not timed)."""
    from .training import train

    res = train(cfg=replace(cfg, epochs=1), out=out, data_dir=data_dir, device=str(dev), progress=False,
                verbose=False, save_every_s=None, train_subset=subset, test_subset=subset)
    return steps * cfg.batch_size / res.history[0]["train_images_per_s"]


def _bare_epoch(cfg, plan, ds: ImageSet, batches: list[tuple[Tensor, Tensor]]) -> float:
    """Seconds of the engine's steps alone over ``batches``: its model, optimizer, precision, conv gradients."""
    from .conv_grad import small_map_grads
    from .registry import create_model
    from .training.setup import head_param_names, make_optimizer, param_groups

    dev = plan.device
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, num_classes=ds.num_classes, in_chans=ds.in_chans).to(dev).train()
    if plan.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer(param_groups(net, cfg, set(head_param_names(net))), cfg, plan)
    scaler = torch.amp.GradScaler("cuda") if plan.grad_scaler else None
    with small_map_grads(net, plan.gemm_wgrad):
        _sync(dev)
        t0 = time.perf_counter()
        for xb, yb in batches:
            train_step(net, opt, xb, yb, plan.autocast, scaler, cfg.label_smoothing, cfg.aux_weight)
        _sync(dev)
        return time.perf_counter() - t0
