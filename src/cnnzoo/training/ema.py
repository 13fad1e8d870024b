"""An exponential moving average of a net's weights, updated every optimizer step (Polyak averaging).

``ema <- d * ema + (1 - d) * weights`` after each step, with the decay warmed up as timm's ``ModelEmaV3``
and TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` do: ``d = min(decay, (1 + k) / (10 + k))`` at
update ``k`` (0-based), so the average is not dominated by the random initial weights early in a short run.

Only parameters are averaged. Buffers are not: BatchNorm's running statistics of the trained net are
recomputed at evaluations (PreciseBN) and would carry those evaluations' timing into the average; the
average's own statistics are recomputed for its weights instead (:mod:`.precise_bn`), and any other buffer is
the trained net's. The average lives in its own tensors, never in a module that is evaluated:
:meth:`WeightEma.copy_to` puts it into an evaluation copy of the net. So a run's trajectory and its average do
not depend on when it was evaluated, and a resumed run (the average saved under ``ema.`` keys in
``state.safetensors``) continues bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PREFIX = "ema."

__all__ = ["PREFIX", "WeightEma", "ema_decay"]


def ema_decay(decay: float, k: int) -> float:
    """The decay of update ``k`` (0-based): ``min(decay, (1 + k) / (10 + k))``."""
    return min(float(decay), (1.0 + k) / (10.0 + k))


class WeightEma:
    """The moving average of ``net``'s parameters, starting from its weights now."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.avg: dict[str, Tensor] = {k: p.detach().clone() for k, p in net.named_parameters()}

    @torch.no_grad()
    def update(self, net: nn.Module, k: int) -> None:
        """Fold in ``net``'s parameters after update ``k`` (0-based: the run's optimizer steps before it)."""
        now = dict(net.named_parameters())
        names = list(self.avg)
        torch._foreach_lerp_([self.avg[n] for n in names], [now[n].detach() for n in names],
                             1.0 - ema_decay(self.decay, k))

    @torch.no_grad()
    def copy_to(self, target: nn.Module, source: nn.Module) -> nn.Module:
        """``target`` (an evaluation copy of ``source``, the trained net) with the averaged parameters and
        ``source``'s buffers; returns it."""
        target.load_state_dict({**source.state_dict(), **self.avg})
        return target

    def tensors(self) -> dict[str, Tensor]:
        """The average under ``ema.``-prefixed names, for a checkpoint's ``state.safetensors``."""
        return {PREFIX + k: v for k, v in self.avg.items()}

    @torch.no_grad()
    def load(self, tensors: dict[str, Tensor]) -> bool:
        """Put a checkpoint's average back (:meth:`tensors` wrote it); False when it holds none."""
        mine = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if set(mine) != set(self.avg):
            return False
        for k, v in mine.items():
            self.avg[k].copy_(v)
        return True
