"""Small text-formatting helpers shared by the CLI commands (aligned tables, human-readable counts)."""

from __future__ import annotations

from collections.abc import Sequence


def human(n: float | int | None, unit: str = "") -> str:
    """``25557032 -> '25.56M'``; ``None -> '-'``."""
    if n is None:
        return "-"
    n = float(n)
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if n == int(n) else f"{n:.3g}{unit}"


def table(rows: Sequence[Sequence[object]], headers: Sequence[str], align: str | None = None) -> str:
    """A plain aligned text table; ``align`` is one of 'l'/'r' per column (numbers right by default)."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if align is None:
        align = "".join(
            "r" if rows and all(_is_number(r[i]) for r in rows) else "l" for i in range(len(headers)))

    def fmt(r: list[str]) -> str:
        cols = zip(r, widths, align, strict=True)
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in cols).rstrip()

    out = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in cells[1:]]
    return "\n".join(out)


def _is_number(v: object) -> bool:
    if isinstance(v, int | float):
        return True
    s = str(v).replace(",", "").rstrip("KMGT%x")
    try:
        float(s)
        return True
    except ValueError:
        return s == "-"
