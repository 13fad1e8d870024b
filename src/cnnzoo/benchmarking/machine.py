"""The machine a benchmark runs on: device, float32 GEMM peak, versions, and a step's peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import math
import os
import platform
import threading
import time
from collections.abc import Callable

import torch

from ..errors import CnnzooError


# ------------------------------------------------------------------------------------------ machine
def bench_device(device: str | torch.device) -> torch.device:
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


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


_PEAK_CACHE: dict[tuple[str, int], float] = {}


def gemm_peak_gflops(device: str | torch.device = "cpu", n: int | None = None, repeats: int = 8) -> float:
    """The machine's float32 matrix-multiply throughput in GFLOP/s: best of ``repeats`` n x n matmuls.

    Cached per (device, threads): measured once per process. TF32 is off for this (a float32 figure).
    """
    dev = bench_device(device)
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
        sync(dev)
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            sync(dev)
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
    dev = bench_device(device)
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


def step_memory_mb(step: Callable[[], None], dev: torch.device) -> float | None:
    if dev.type == "cuda":
        sync(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        sync(dev)
        return (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20
    with _RssPeak() as rss:
        step()
    return rss.delta_mb
