"""``cnnzoo.utils.ranges``: one range check for API arguments and CLI flags, with the same words."""

from __future__ import annotations

import argparse
import math

import pytest

from cnnzoo.errors import CnnzooError
from cnnzoo.utils.ranges import FRACTION, NONNEG_FLOAT, POSITIVE_INT, Range


@pytest.mark.parametrize("r, good, bad", [
    (POSITIVE_INT, [1, 7, "3", 2.0], [0, -1, 1.5, "x", None, True, math.inf]),
    (NONNEG_FLOAT, [0, 0.5, 1e9], [-1e-9, math.nan, math.inf, "1e400"]),
    (FRACTION, [0, 0.999], [1, 1.5, -0.1]),
    (Range(int, lo=1, hi=3), [1, 3], [0, 4]),
])
def test_check_accepts_and_refuses(r: Range, good: list, bad: list) -> None:
    for v in good:
        assert r.check("x", v) == (int(float(v)) if r.kind is int else float(v))
    for v in bad:
        with pytest.raises(CnnzooError, match=r"^x must be "):
            r.check("x", v)


def test_messages_name_the_range() -> None:
    assert POSITIVE_INT.describe() == "a whole number >= 1"
    assert FRACTION.describe() == "a finite number in [0, 1)"
    with pytest.raises(CnnzooError, match=r"batch-size must be a whole number >= 1 \(got 0\)"):
        POSITIVE_INT.check("batch-size", 0)


def test_argtype_parses_and_refuses() -> None:
    t = POSITIVE_INT.argtype()
    assert t("4") == 4
    for s in ("0", "-2", "1.5", "abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            t(s)
    assert NONNEG_FLOAT.argtype()("0.25") == 0.25
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        NONNEG_FLOAT.argtype()("inf")
