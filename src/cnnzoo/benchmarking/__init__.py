"""How fast a net trains and infers here, alone or side by side with torchvision's or timm's same net.

:func:`benchmark` (``core``) times whole training steps (the training engine's own
:func:`~cnnzoo.training.loop.train_step`) or inference passes, interleaved with the reference; ``results``
holds the figures and the table, ``machine`` the device, GEMM peak and memory sampling, ``loop`` the engine's
own overheads (:func:`pipeline_throughput`, :func:`loop_overhead`). Conventions are in ``core``'s docstring.
"""

from __future__ import annotations

from .core import MODES, REFERENCE_NAMES, TIMM_NAMES, BenchSettings, benchmark, reference_model
from .loop import loop_overhead, pipeline_throughput
from .machine import gemm_peak_gflops, machine_info
from .results import BenchmarkReport, BenchResult, SideResult, Variant, paired_ratio

__all__ = ["MODES", "REFERENCE_NAMES", "TIMM_NAMES", "BenchResult", "BenchSettings", "BenchmarkReport",
           "SideResult", "Variant", "benchmark", "gemm_peak_gflops", "loop_overhead", "machine_info",
           "paired_ratio", "pipeline_throughput", "reference_model"]
