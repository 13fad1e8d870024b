"""An exponential moving average of a net's weights, updated every optimizer step (Polyak averaging).

``ema <- d * ema + (1 - d) * weights`` after each step, with the decay warmed up as timm's ``ModelEmaV3``
and TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` do: ``d = min(decay, (1 + k) / (10 + k))`` at
update ``k`` (0-based), so the average is not dominated by the random initial weights early in a short run.
Floating-point parameters and buffers are averaged; integer buffers (BatchNorm's batch counter) are copied.

The average lives in its own tensors, never in a module that is evaluated: :meth:`WeightEma.copy_to` puts it
into an evaluation copy of the net, whose BatchNorm statistics may then be recomputed for the averaged
weights (PreciseBN) without touching the average itself. So a run's trajectory does not depend on when it
was evaluated, and a resumed run (the average saved under ``ema.`` keys in ``state.safetensors``) continues
bit for bit.
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
    """The moving average of ``net``'s state (parameters and buffers), starting from its weights now."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.avg: dict[str, Tensor] = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, k: int) -> None:
        """Fold in ``net``'s state after update ``k`` (0-based: the run's optimizer steps before it)."""
        w = 1.0 - ema_decay(self.decay, k)
        now = net.state_dict()
        floats = [n for n, v in self.avg.items() if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_([self.avg[n] for n in floats], [now[n].detach() for n in floats], w)
        for n, v in self.avg.items():
            if not v.is_floating_point():
                v.copy_(now[n])

    @torch.no_grad()
    def copy_to(self, net: nn.Module) -> nn.Module:
        """Load the average into ``net`` (an evaluation copy of the trained net); returns it."""
        net.load_state_dict(self.avg)
        return net

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
