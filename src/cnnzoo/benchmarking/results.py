"""What a benchmark measured: per-side figures, per-(model, mode) results, the report and its table."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from ..utils import fmt


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
    gemm_wgrad: int = 0  # training: convs whose weight gradient ran as one GEMM (cnnzoo.speed.conv_grad)
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
    gemm_wgrad: bool = False  # training: small-map weight gradients as one GEMM (cnnzoo.speed.conv_grad)
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
