"""Numeric ranges checked the same way everywhere: Python API arguments, every command's flags, checkpoints.

One :class:`Range` says what a number may be (whole or real, bounds, finite). ``Range.check(name, value)``
raises a one-line :class:`~cnnzoo.errors.CnnzooError` for the Python API; ``Range.argtype(flag)`` is the
``type=`` of an argparse flag, so ``--batch-size 0`` is refused with the same words as ``batch_size=0``.
Torch-free, so the CLI can build its parser without importing torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CnnzooError


@dataclass(frozen=True)
class Range:
    """Whole (``kind=int``) or real (``kind=float``) numbers in ``[lo, hi]`` (``lo_open``: ``> lo``)."""

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        """``a whole number >= 1``, ``a finite number in [0, 1)`` ..."""
        what = "a whole number" if self.kind is int else "a finite number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return what

    def ok(self, v: float) -> bool:
        if not math.isfinite(v) or (self.kind is int and not float(v).is_integer()):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def check(self, name: str, value: object) -> int | float:
        """``value`` as ``kind`` if it is in range, else a one-line error naming ``name`` and the range."""
        try:
            if isinstance(value, bool):  # True is not the number 1 here
                raise TypeError
            v = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            raise CnnzooError(f"{name} must be {self.describe()} (got {value!r})") from None
        if not self.ok(v):
            raise CnnzooError(f"{name} must be {self.describe()} (got {value!r})")
        return int(v) if self.kind is int else v

    def argtype(self) -> Callable[[str], int | float]:
        """An argparse ``type=``: the number, or ``ArgumentTypeError`` with the range in words."""

        def parse(s: str) -> int | float:
            try:
                v = int(s) if self.kind is int else float(s)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {s!r}") from None
            if not self.ok(v):
                raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {s}")
            return v

        parse.__name__ = "whole number" if self.kind is int else "number"  # argparse names it in errors
        return parse


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


POSITIVE_INT = Range(int, lo=1)
NONNEG_INT = Range(int, lo=0)
NONNEG_FLOAT = Range(float, lo=0)
POSITIVE_FLOAT = Range(float, lo=0, lo_open=True)
FRACTION = Range(float, lo=0, hi=1, hi_open=True)
