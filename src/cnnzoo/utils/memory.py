"""How much memory is free for a tensor on a device: the one figure every size check compares against."""

from __future__ import annotations

from pathlib import Path

import torch


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device`` now: CUDA's free memory, else Linux's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(need: int, device: torch.device, what: str, advice: str) -> None:
    """Refuse, before allocating, ``need`` bytes that exceed what is free on ``device``: one line,
    ``{what} take X GiB, more than the Y GiB free on cpu: {advice}`` (nothing when the free memory is unknown)."""
    from ..errors import CnnzooError

    free = available_memory(device)
    if free and need > free:
        gib = 1 << 30
        raise CnnzooError(f"{what} take {need / gib:.1f} GiB, more than the {free / gib:.1f} GiB free on "
                          f"{device.type}: {advice}")

