"""Weight gradients of convolutions on small feature maps as one matrix multiply, for CPU training.

oneDNN's weight-gradient kernel for a k x k convolution is slow when the output map is small and the
channels many: the reduction it runs over (batch x output positions) is short and the weight large
(docs/speed.md has the measurements: ``benchmarks/conv_weight_grad.py``, ``benchmarks/profile_step.py``).
The same gradient as a GEMM: with ``cols = unfold(x)`` (the ``C*k*k`` inputs each output position sees)
and ``g`` the output gradient, ``dW = g^T @ cols`` over all ``N * H_out * W_out`` positions at once.

:class:`SmallMapConv2d` computes the forward pass and the input gradient with the usual oneDNN kernels
(so outputs are bit-identical to ``nn.Conv2d``) and only the weight (and bias) gradient as that GEMM; the
weight gradient equals oneDNN's to float32 rounding (another summation order). It does so where
:func:`gemm_weight_grad` says it pays, float32 on the CPU without autocast, and runs ``nn.Conv2d``'s
forward otherwise. :func:`small_map_grads` switches the ``nn.Conv2d`` layers of any module to it for the
duration of a training run and back (same parameters, state-dict keys and hooks).

The rule (:func:`gemm_weight_grad`): kernels larger than 1x1 with ``H_out * W_out * 32 <= C_in`` and
``C_in >= 64`` (1x1 maps from 64 input channels, 2x2 from 128, 4x4 from 512, 7x7 from 1568); 1x1
convolutions stay oneDNN's. On which CPUs training uses it by default is device policy:
:func:`cnnzoo.speed.policy.gemm_wgrad_default`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..models.layers import conv2d_out_hw

__all__ = ["SmallMapConv2d", "count_gemm_convs", "gemm_weight_grad", "small_map_grads", "to_small_map_grads"]

POSITIONS_PER_CHANNEL = 32  # the GEMM pays when H_out * W_out * 32 <= C_in (docs/speed.md)
MIN_CHANNELS = 64  # ... and C_in >= 64 (32 input channels at 1x1 was slower at batch 128)


def gemm_weight_grad(in_channels: int, kernel_size: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether a conv's weight gradient runs faster as one GEMM than in oneDNN (the measured rule)."""
    kh, kw = kernel_size
    return (kh * kw > 1 and in_channels >= MIN_CHANNELS
            and out_hw[0] * out_hw[1] * POSITIONS_PER_CHANNEL <= in_channels)


class _ConvGemmWeightGrad(torch.autograd.Function):
    """``F.conv2d`` whose backward computes the input gradient with oneDNN and the weight gradient as a GEMM."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],  # type: ignore[override]
                padding: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad, x, weight, None, list(stride), list(padding),
                                                     list(dilation), False, [0, 0], 1, [True, False, False])[0]
        n, o, ho, wo = grad.shape
        g2 = grad.permute(0, 2, 3, 1).reshape(n * ho * wo, o)  # a view when the gradient is channels_last
        if ctx.needs_input_grad[1]:
            cols = F.unfold(x, weight.shape[2:], dilation, padding, stride)  # N, C*kh*kw, H_out*W_out
            gw = (g2.t() @ cols.transpose(1, 2).reshape(n * ho * wo, -1)).view(weight.shape)
        if has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None, None, None


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient is one GEMM where :func:`gemm_weight_grad` says that pays.

    No state of its own: :func:`small_map_grads` turns an ``nn.Conv2d`` into one by its class and back."""

    def _gemm(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and self.weight.requires_grad and self._pays(x)

    def _pays(self, x: Tensor) -> bool:
        """float32 on the CPU, no autocast, and a map small enough for its channels (the measured rule)."""
        w = self.weight
        if not (x.dim() == 4 and x.device.type == "cpu" and x.dtype == w.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu")):
            return False
        ho, wo = conv2d_out_hw(self, x.shape[2], x.shape[3])
        return ho > 0 and wo > 0 and gemm_weight_grad(self.in_channels, self.kernel_size, (ho, wo))

    def forward(self, x: Tensor) -> Tensor:
        if self._gemm(x):
            return _ConvGemmWeightGrad.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return super().forward(x)


def _convertible(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _convert(model: nn.Module) -> list[nn.Module]:
    convs = [m for m in model.modules() if _convertible(m)]
    for m in convs:
        m.__class__ = SmallMapConv2d
    return convs


def to_small_map_grads(model: nn.Module) -> int:
    """Turn the plain ``nn.Conv2d`` layers of ``model`` (groups 1, zero padding) into :class:`SmallMapConv2d`
    in place (for good; :func:`small_map_grads` does it for a block); returns how many."""
    return len(_convert(model))


@contextlib.contextmanager
def small_map_grads(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, the plain ``nn.Conv2d`` layers of ``model`` (groups 1, zero padding) are
    :class:`SmallMapConv2d`; yields how many. Restored afterwards, also on an exception."""
    convs = _convert(model) if enabled else []
    try:
        yield len(convs)
    finally:
        for m in convs:
            m.__class__ = nn.Conv2d


def count_gemm_convs(model: nn.Module, x: Tensor, amp: bool = False) -> int:
    """How many :class:`SmallMapConv2d` layers of ``model`` compute their weight gradient as a GEMM for
    input ``x`` (one forward pass in eval mode without gradients, so nothing in the model changes)."""
    if amp:
        return 0
    hits: set[int] = set()  # layers, not calls: a conv called twice counts once
    hooks = [m.register_forward_pre_hook(lambda mod, args: hits.add(id(mod)) if mod._pays(args[0]) else None)
             for m in model.modules() if isinstance(m, SmallMapConv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return len(hits)
