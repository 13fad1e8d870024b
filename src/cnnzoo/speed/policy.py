"""Device and speed policy, in one place: what training (and the benchmark timing it) runs with on a device.

- the autocast dtype of an ``amp`` mode (:func:`amp_dtype`), whether a CPU multiplies bf16 natively, and
  which nets ``auto`` trains in bf16 on such a CPU (:data:`CPU_BF16_TRAIN`);
- channels_last memory format: always on CUDA and in CPU bf16; in CPU float32 training per net, from a table
  per CPU vector ISA (:data:`CPU_CHANNELS_LAST_TRAIN`), because oneDNN's answer differs between them;
- torch's fused SGD/AdamW kernels (:func:`fused_optimizer_ok`);
- small-map conv weight gradients as one GEMM (:func:`gemm_wgrad_default`, :mod:`cnnzoo.speed.conv_grad`).

:func:`speed_plan` applies all of them to one run. The measurements behind each choice are in
docs/speed.md and BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from ..errors import CnnzooError, CnnzooWarning

__all__ = ["CPU_BF16_TRAIN", "CPU_CHANNELS_LAST_TRAIN", "EMULATED_BF16", "GEMM_WGRAD_ISAS", "SpeedPlan", "amp_dtype",
           "channels_last_default", "cpu_has_bf16_matmul", "cpu_isa", "fused_optimizer_ok", "gemm_wgrad_default",
           "speed_plan", "use_channels_last"]


# ------------------------------------------------------------------------------------------ precision
def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX or AVX512-BF16), where oneDNN's bf16
    convolutions beat float32 ones; elsewhere bf16 autocast runs but emulated, and is usually slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


EMULATED_BF16 = ("this CPU has no bf16 matrix units (Intel AMX or AVX512-BF16), so --amp bf16 runs emulated, "
                 "many times slower than float32 (docs/speed.md): drop --amp to train in float32")


# The families ``--amp auto`` trains in bf16 on a CPU with bf16 matrix units: measured 1.4-2.8x faster than
# float32 there (AlexNet, VGG, NiN, the ResNets); not the depthwise nets (MobileNetV2 and EfficientNet-B0 at 128 px
# 0.65-0.92x), GoogLeNet (1.1x) or LeNet-5 (0.9-1.2x), whose float32 numbers stay. BENCHMARKS.md, "bf16 on the
# CPU" (benchmarks/bf16_cpu.py).
CPU_BF16_TRAIN = frozenset({"alexnet", "nin", "resnet", "vgg"})


def _family(name: str | None) -> str | None:
    """The registered net ``name``'s family, the key of the per-family tables here (None: a user's own net)."""
    from ..models.registry import model_info  # deferred: the registry imports every model file

    try:
        return model_info(name or "").family
    except CnnzooError:
        return None


def cpu_auto_bf16(name: str | None) -> bool:
    """Whether ``--amp auto`` trains the registered net ``name`` in bf16 on this CPU (a user's net: float32)."""
    return bool(name) and cpu_has_bf16_matmul() and _family(name) in CPU_BF16_TRAIN


def amp_dtype(mode: str, device: torch.device, model_name: str | None = None) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` mode on ``device`` (None: float32).

    ``auto`` uses bf16 on CUDA where supported, else fp16, and on a CPU bf16 for the families measured to gain
    where it has bf16 matrix units (:func:`cpu_auto_bf16`), else float32; ``bf16`` also works on any CPU
    (emulated, slow, without bf16 units); ``fp16`` is CUDA's (with a GradScaler)."""
    cuda = device.type == "cuda"
    if mode == "auto" and device.type == "cpu" and cpu_auto_bf16(model_name):
        return torch.bfloat16
    if mode == "off" or (mode == "auto" and not cuda):
        return None
    if mode == "fp16":
        if not cuda:
            raise CnnzooError("--amp fp16 needs a CUDA device: on the CPU use --amp bf16 (or off)")
        return torch.float16
    if mode == "bf16" and device.type not in ("cuda", "cpu"):
        raise CnnzooError(f"--amp bf16 runs on CUDA or the CPU, not {device.type}: drop --amp")
    if cuda and not torch.cuda.is_bf16_supported():
        if mode == "bf16":
            raise CnnzooError("this GPU has no bf16: use --amp fp16 (or auto)")
        return torch.float16
    return torch.bfloat16


# -------------------------------------------------------------------------------------- memory format
# Where channels_last pays for float32 training on a CPU (oneDNN kernels), by the CPU's vector ISA: families
# and single names. Nets not measured follow their family. Measured with cnnzoo.benchmarking (our net in
# both formats, interleaved); the figures and dates are in docs/speed.md.
_CIFAR_RESNETS = frozenset({"resnet20_cifar", "resnet32_cifar", "resnet44_cifar", "resnet56_cifar",
                            "resnet110_cifar"})
_DEPTHWISE = frozenset({"mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "efficientnet"})
_SMALL_NETS = frozenset({"googlenet", "lenet5", "lenet5_relu", "resnet18_cifar", "resnet34_cifar"})
CPU_CHANNELS_LAST_TRAIN: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # ISA -> (families, names)
    "AVX2": (_DEPTHWISE, _SMALL_NETS | _CIFAR_RESNETS),
    "AVX512": (_DEPTHWISE | {"vgg"}, _SMALL_NETS | _CIFAR_RESNETS),
}


def cpu_isa() -> str:
    """The table row for this CPU: torch's dispatch level ("AVX512", "AVX2", ...); other ISAs use AVX2's."""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in CPU_CHANNELS_LAST_TRAIN else "AVX2"


def channels_last_default(name: str | None, mode: str, device: str | torch.device) -> bool:
    """Whether channels_last is the float32 default for ``name`` in ``mode`` ("train"/"infer") on ``device``:
    on CUDA and for inference always (NHWC saves oneDNN's layout reorders), CPU training per the table."""
    if torch.device(device).type == "cuda" or mode == "infer":
        return True
    families, names = CPU_CHANNELS_LAST_TRAIN[cpu_isa()]
    return name in names or _family(name) in families  # a user's own net (no family): the plain format


def use_channels_last(name: str | None, device: torch.device, amp: torch.dtype | None) -> bool:
    """channels_last for training: on CUDA always; on the CPU in bf16 (oneDNN's bf16 kernels work in NHWC) and
    in float32 where the table says it pays."""
    if device.type == "cuda" or (device.type == "cpu" and amp == torch.bfloat16):
        return True
    return device.type == "cpu" and channels_last_default(name, "train", device)


# ------------------------------------------------------------------------------ optimizer and gradients
def fused_optimizer_ok(device: torch.device | str) -> bool:
    """Whether torch's fused SGD/AdamW kernels run on ``device`` (CPU and CUDA): one kernel per parameter for
    weight decay, momentum and the update, where the default runs several element-wise ops per parameter."""
    return torch.device(device).type in ("cpu", "cuda")


GEMM_WGRAD_ISAS = frozenset({"AVX2"})  # CPU ISAs where the conv_grad rule was measured to pay


def gemm_wgrad_default(device: torch.device | str) -> bool:
    """Whether small-map weight gradients run as one GEMM by default on ``device``: CPUs of a measured ISA."""
    return torch.device(device).type == "cpu" and torch.backends.cpu.get_cpu_capability() in GEMM_WGRAD_ISAS


# --------------------------------------------------------------------------------------- one run's plan
@dataclass(frozen=True)
class SpeedPlan:
    """What one training run on one device uses (from :func:`speed_plan`)."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    gemm_wgrad: bool
    fused_optimizer: bool

    @property
    def precision(self) -> str:
        """What training runs in: "float32", or "bf16"/"fp16" autocast."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "float32")

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 and float32 do not."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def speed_plan(model_name: str | None, device: torch.device, amp: str = "auto", channels_last: bool = True,
               gemm_wgrad: bool = True, warn: bool = True) -> SpeedPlan:
    """The policy for training ``model_name`` on ``device``; ``channels_last``/``gemm_wgrad`` False opt out.
    Warns (once per call site) when CPU bf16 would run emulated."""
    dt = amp_dtype(amp, device, model_name)
    if warn and dt == torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16_matmul():
        warnings.warn(EMULATED_BF16, CnnzooWarning, stacklevel=3)
    return SpeedPlan(device=device, amp_dtype=dt,
                     channels_last=channels_last and use_channels_last(model_name, device, dt),
                     gemm_wgrad=gemm_wgrad and dt is None and gemm_wgrad_default(device),
                     fused_optimizer=fused_optimizer_ok(device))
