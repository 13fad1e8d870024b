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
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import CnnzooError
from ..speed.policy import channels_last_default, fused_optimizer_ok, gemm_wgrad_default
from ..training.loop import logits_of, train_step
from .machine import bench_device, machine_info, step_memory_mb, sync
from .results import BenchmarkReport, BenchResult, SideResult, Variant

__all__ = ["MODES", "REFERENCE_NAMES", "TIMM_NAMES", "BenchSettings", "benchmark", "reference_model"]

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


# ------------------------------------------------------------------------------------------- models
def reference_model(name: str, vs: str, num_classes: int = 1000) -> tuple[str, nn.Module]:
    """(constructor name, module): the torchvision or timm net with the same architecture as ``name``."""
    from ..models.registry import model_info

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
            from ..deploy.fusion import fuse as fold
            from ..deploy.fusion import fuse_activations

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
        from ..speed.conv_grad import count_gemm_convs, to_small_map_grads

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
    sync(dev)
    t = time.perf_counter()
    for _ in range(side.inner):
        side.step()
    sync(dev)
    return (time.perf_counter() - t) / side.inner


def _run_sides(sides: list[_Side], dev: torch.device, warmup: int, runs: int, min_run_s: float,
               measure_memory: bool) -> None:
    """Memory step, warm-up, then ``runs`` rounds alternating the order (ABBA) so drift hits all alike."""
    for s in sides:
        if measure_memory:  # this step is also the first warm-up batch
            s.mem = step_memory_mb(s.step, dev)
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
        peak_mem_mb=None if s.mem is None else round(s.mem, 1), gflops=float(f"{gflops:.4g}"),
        peak_fraction=float(f"{gflops / peak:.4g}") if peak else None, channels_last=s.channels_last, fused=s.fused,
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
            (:mod:`cnnzoo.speed.conv_grad`), for our net and the like-for-like reference (``None``: on CPUs where it
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
        from ..models.registry import resolve_name

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
    dev = bench_device(device)
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
    from ..analysis import count_macs, default_input_size, resolve_model, shape_forward

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

    from ..analysis.summary import batch_bytes
    from ..utils.memory import check_fits

    check_fits(batch_bytes(name, (c, size, size), st.batch) * (2 if mode == "train" else 1), st.device,
               f"--batch-size {st.batch} at {size}x{size}: {label}'s inputs and layer outputs for one batch",
               "use a smaller --batch-size or --img-size")
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
