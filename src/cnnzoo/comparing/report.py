"""What ``cnnzoo compare`` writes: the leaderboard (text, Markdown, CSV, JSON), two plots and one HTML page.

Everything here reads the per-model rows that :mod:`cnnzoo.compare` produces (plain dicts) and nothing
else, so a report can be rebuilt from ``leaderboard.json`` alone. Plots use matplotlib's Agg backend at a
fixed size (no ``bbox_inches="tight"``), so their pixel size is known: ``ACC_VS_MACS_PX``, ``CURVES_PX``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..utils import fmt

# scalar columns of leaderboard.csv, in order (history and paths stay in the JSON)
ROW_FIELDS = ("rank", "model", "status", "img_size", "top1", "top1_tta", "tta", "scored_by", "weights", "top5",
              "final_top1", "params", "macs", "rf", "train_time_s", "train_images_per_s", "infer_images_per_s",
              "best_epoch", "epochs_run", "stopped", "note", "reason", "budget_s", "wall_s", "images_seen",
              "epochs_seen", "final_lr", "precision")

ACC_VS_MACS_PX = (1000, 650)
CURVES_PX = (1000, 550)
_DPI = 100


# ------------------------------------------------------------------------------------------- helpers
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _short(v: float) -> str:
    """Axis labels: ``1e6 -> '1M'``, ``3e5 -> '300K'``."""
    return fmt.human(v).replace(".00", "")


def write_atomic(path: Path, data: str | bytes) -> Path:
    """A file of cnnzoo's own in the comparison folder (checked by ``compare`` before it started), written with
    the one atomic writer."""
    from ..utils.files import atomic_write_bytes

    return atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"), overwrite=True)


def scored(r: dict) -> float:
    """The held-out top-1 a row is ranked by: its TTA top-1 where its run was scored by TTA, else plain."""
    v = r.get("top1_tta") if r.get("scored_by") == "tta" else r.get("top1")
    return v if v is not None else (r.get("top1") or 0.0)


def ranked(rows: Sequence[dict]) -> list[dict]:
    """Finished models by held-out top-1 (:func:`scored`; ties: fewer MACs first), then failed ones; ``rank``
    filled in."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (-scored(r), r.get("macs") or 0))
    out = [{**r, "rank": i} for i, r in enumerate(ok, 1)]
    return out + [{**r, "rank": None} for r in rows if r["status"] != "ok"]


def _size_cell(r: dict) -> str:
    return f"{r['img_size']}*" if r.get("note") else str(r.get("img_size") or "-")


def _table_rows(rows: Sequence[dict], top5: bool) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the text, Markdown and HTML tables."""
    tta = any(r.get("top1_tta") is not None for r in rows)
    headers = ["#", "model", "size", "top-1 %"] + (["TTA top-1 %"] if tta else []) + (["top-5 %"] if top5 else []) + [
        "params", "MACs", "RF", "train s", "train img/s", "infer img/s", "best ep"]
    if any(r.get("budget_s") for r in rows):
        headers[-1] = "epochs seen"
    cells = []
    for r in rows:
        statics = [fmt.human(r.get("params")), fmt.human(r.get("macs")), _num(r.get("rf"))]
        name = r["model"] + (" (EMA)" if r.get("weights") == "ema" else "")
        if r["status"] != "ok":
            cells.append(["-", name, _size_cell(r), "failed"] + (["-"] if tta else []) + (["-"] if top5 else [])
                         + statics + [_num(r.get("train_time_s"), 1), "-", "-", "-"])
            continue
        by_tta = r.get("scored_by") == "tta"  # the accuracy the row is ranked by is starred
        cells.append([str(r["rank"]), name, _size_cell(r), _pct(r["top1"]) + ("" if by_tta or not tta else "*")]
                     + ([_pct(r.get("top1_tta")) + ("*" if by_tta else "")] if tta else [])
                     + ([_pct(r.get("top5"))] if top5 else []) + statics
                     + [_num(r["train_time_s"], 1), _num(r["train_images_per_s"]),
                        _num(r["infer_images_per_s"]), _epochs_cell(r)])
    return headers, cells


def _epochs_cell(r: dict) -> str:
    """``best/run`` epochs; a budgeted model's images seen, in epochs (it ends mid-epoch, scored at the end)."""
    if r.get("budget_s") and r.get("epochs_seen") is not None:
        return f"{r['epochs_seen']:.2f} ({fmt.human(r.get('images_seen'))} img)"
    return f"{r['best_epoch']}/{r['epochs_run']}"


def _footnotes(rows: Sequence[dict]) -> list[str]:
    notes = [f"* {r['model']}: {r['note']}" for r in rows if r.get("note")]
    modes = sorted({r["tta"] for r in rows if r.get("top1_tta") is not None and r.get("tta")})
    if modes:
        notes.append(f"TTA top-1: {' / '.join(modes)} test-time augmentation (mean logits over the views); "
                     f"* marks the top-1 each model was ranked and its best/ checkpoint chosen by")
    if any(r.get("weights") == "ema" for r in rows):
        notes.append("(EMA): best/ holds the moving average of the weights (--ema), which scored higher")
    half = [f"{r['model']} ({r['precision']})" for r in rows if r.get("precision") not in (None, "float32")]
    if half:  # --amp auto chooses it per net and device: the reader must know which numbers it made
        notes.append(f"trained under autocast: {', '.join(half)}; the others in float32 (--amp off: all float32)")
    return notes + [f"{r['model']} failed: {r['reason']}" for r in rows if r["status"] != "ok"]


def _caption(info: dict) -> str:
    rc = info.get("recipe", {})
    parts = [f"data set {info['dataset']} ({info['train_images']} train / {info['test_images']} held-out "
             f"images, {info['num_classes']} classes)",
             (f"budget {info['budget_minutes']:g} min per model (steps and LR schedule fitted to it, scored at "
              f"the schedule's end)" if info.get("budget_minutes")
              else f"{rc.get('epochs')} epoch{'' if rc.get('epochs') == 1 else 's'}"),
             f"batch {rc.get('batch_size')}, {rc.get('optimizer')} lr {rc.get('lr')} {rc.get('schedule')}, "
             f"seed {rc.get('seed')}",
             f"device {info.get('device')}"]
    if info.get("demo"):
        demo = ", ".join(f"{k} {v}" for k, v in info["demo"].items())
        parts.insert(1, f"the demo override of the {info['dataset']} recipe ({demo}; --no-demo for the full recipe)")
    if info.get("total_time_s") is not None:
        parts.append(f"total {info['total_time_s'] / 60:.1f} min")
    return "; ".join(parts)


_EXPLAIN = ("top-1/top-5: the best epoch's checkpoint on the held-out split; MACs (conv + linear, one image) "
            "and RF (receptive field, pixels) at the size trained; train s: wall time incl. per-epoch "
            "evaluation; infer img/s: batch 64, BatchNorm folded.")


# -------------------------------------------------------------------------------------------- tables
def leaderboard_text(rows: Sequence[dict], info: dict) -> str:
    """The aligned table ``cnnzoo compare`` prints at the end."""
    rows = ranked(rows)
    headers, cells = _table_rows(rows, info.get("num_classes", 0) > 5)
    lines = [fmt.table(cells, headers, align="rlr" + "r" * (len(headers) - 3)), "", _caption(info)]
    return "\n".join(lines + _footnotes(rows))


def leaderboard_markdown(rows: Sequence[dict], info: dict) -> str:
    rows = ranked(rows)
    headers, cells = _table_rows(rows, info.get("num_classes", 0) > 5)
    rule = "|" + "|".join("---" if i == 1 else "---:" for i in range(len(headers))) + "|"
    md = [f"# Leaderboard: {info['dataset']}", "", _caption(info) + ".", "",
          "| " + " | ".join(headers) + " |", rule]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    md += ["", _EXPLAIN]
    foot = _footnotes(rows)
    if foot:
        md += [""] + [f"- {f.lstrip('* ')}" for f in foot]
    return "\n".join(md) + "\n"


def write_tables(rows: Sequence[dict], info: dict, out: Path) -> dict[str, Path]:
    """``leaderboard.md``, ``.csv`` and ``.json`` in ``out``."""
    rows = ranked(rows)
    paths = {"md": write_atomic(out / "leaderboard.md", leaderboard_markdown(rows, info))}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in ROW_FIELDS})
    paths["csv"] = write_atomic(out / "leaderboard.csv", buf.getvalue())
    paths["json"] = write_atomic(out / "leaderboard.json",
                                  json.dumps({"info": info, "rows": rows}, indent=1))
    return paths


# --------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return write_atomic(path, buf.getvalue())


def _colours(rows: Sequence[dict]) -> dict[str, tuple]:
    """One colour per model, the same in both plots (by name, so a model keeps its colour across runs)."""
    cmap = _plt().get_cmap("tab10" if len(rows) <= 10 else "tab20")
    return {r["model"]: cmap(i % cmap.N) for i, r in enumerate(sorted(rows, key=lambda r: r["model"]))}


def _chance_line(ax, num_classes: int | None) -> None:
    if num_classes:
        ax.axhline(100 / num_classes, color="grey", ls="--", lw=1, zorder=1)
        ax.annotate(f"chance ({100 / num_classes:.0f}%)", (0.005, 100 / num_classes),
                    xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points", fontsize=8,
                    color="grey")


def _place_labels(fig, ax, points: list[tuple[float, float, float, str]]) -> None:
    """Label each bubble ``(x, y, radius_pt, text)`` near it: positions around the bubble are tried in turn
    (farther ones with a leader line) until the label overlaps no other label, no bubble and stays inside
    the axes (matplotlib has no automatic label placement)."""
    import math

    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = fig.dpi / 72  # display pixels per point
    bubbles = []
    for x, y, r, _ in points:
        cx, cy = ax.transData.transform((x, y))
        k = 0.95 * r * px  # about the circle (its bounding square, corners trimmed a little)
        bubbles.append(Bbox.from_extents(cx - k, cy - k, cx + k, cy + k))
    placed: list = []
    angles = [0, 180, 90, 270, 45, 135, 315, 225, 20, 160, 340, 200, 65, 115, 295, 245]
    for x, y, r, text in sorted(points, key=lambda p: -p[2]):  # big bubbles first: they have fewer places
        chosen = None
        for far in (3, 18, 40, 70, 110):
            d = r + far
            for a in angles:
                dx, dy = d * math.cos(math.radians(a)), d * math.sin(math.radians(a))
                ha = "left" if dx > 1 else "right" if dx < -1 else "center"
                va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
                t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                fontsize=8.5, zorder=4,
                                arrowprops=dict(arrowstyle="-", lw=0.6, color="grey") if far > 3 else None)
                t.update_positions(renderer)
                bb = Text.get_window_extent(t, renderer).expanded(1.03, 1.08)  # the text, not its leader line
                inside = frame.contains(bb.x0, bb.y0) and frame.contains(bb.x1, bb.y1)
                if inside and not any(bb.overlaps(o) for o in [*placed, *bubbles]):
                    chosen = bb
                    break
                t.remove()
            if chosen is not None:
                break
        if chosen is None:  # nowhere free: right of the bubble, overlapping if it must
            t = ax.annotate(text, (x, y), xytext=(r + 3, 0), textcoords="offset points", ha="left",
                            va="center", fontsize=8.5, zorder=4)
            t.update_positions(renderer)
            chosen = Text.get_window_extent(t, renderer)
        placed.append(chosen)


def plot_accuracy_vs_macs(rows: Sequence[dict], path: Path, title: str = "",
                          num_classes: int | None = None) -> Path:
    """Held-out top-1 against MACs (log scale); bubble area proportional to the parameter count."""
    import math

    import numpy as np
    from matplotlib.ticker import FuncFormatter

    plt = _plt()
    ok = [r for r in rows if r["status"] == "ok" and r.get("macs")]
    fig, ax = plt.subplots(figsize=(ACC_VS_MACS_PX[0] / _DPI, ACC_VS_MACS_PX[1] / _DPI), dpi=_DPI)
    pmax = max([r["params"] for r in ok] or [1])

    def area(p: float) -> float:  # points^2: proportional to params, with a floor so tiny nets stay visible
        return 30 + 2500 * p / pmax

    colour = _colours(rows)
    points = []
    for r in ok:
        x, y = r["macs"], 100 * r["top1"]
        ax.scatter(x, y, s=area(r["params"]), color=colour[r["model"]], alpha=0.55, edgecolors="black",
                   linewidths=0.8, zorder=3)
        points.append((x, y, math.sqrt(area(r["params"]) / math.pi),
                       f"{r['model']}\n{y:.1f}%, {_short(r['params'])} params"))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.set_xlabel("MACs per image at the size trained (log scale)")
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.set_title(title or "accuracy vs compute (bubble area = parameters)")
    ax.grid(True, which="both", alpha=0.3)
    if ok:
        xs = np.array([r["macs"] for r in ok], dtype=float)
        ys = np.array([100 * r["top1"] for r in ok])
        ax.set_xlim(xs.min() / 3, xs.max() * 5)
        lo = min(ys.min(), 100 / num_classes) if num_classes else ys.min()
        ax.set_ylim(max(0.0, lo - 8), ys.max() + 0.2 * (ys.max() - lo) + 6)  # room above the best for labels
        ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= 100])
        _chance_line(ax, num_classes)
        refs = [ref for ref in (1e5, 1e6, 1e7, 1e8) if ref <= pmax * 1.5] or [float(pmax)]
        for ref in refs:  # legend bubbles for scale
            ax.scatter([], [], s=area(ref), color="grey", alpha=0.4, edgecolors="black", label=_short(ref))
        biggest = 2 * math.sqrt(area(max(refs or [1])) / math.pi)  # points
        ax.legend(title="parameters", loc="lower right", labelspacing=max(1.2, biggest / 8 * 0.75),
                  borderpad=max(0.8, biggest / 8 * 0.4), handletextpad=max(0.8, biggest / 8 * 0.4),
                  fontsize=8,
                  title_fontsize=9)
        fig.tight_layout()
        _place_labels(fig, ax, points)
    else:
        ax.text(0.5, 0.5, "no model finished", transform=ax.transAxes, ha="center", va="center")
        fig.tight_layout()
    out = _save_png(fig, path)
    plt.close(fig)
    return out


def plot_curves(rows: Sequence[dict], path: Path, title: str = "", num_classes: int | None = None) -> Path:
    """Held-out top-1 per epoch for every model that trained (failed runs too, up to where they stopped)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(CURVES_PX[0] / _DPI, CURVES_PX[1] / _DPI), dpi=_DPI)
    colour = _colours(rows)
    drawn, last = 0, 1
    timed = any(r.get("budget_s") for r in rows)  # budgeted models: against wall-clock seconds
    for r in rows:
        hist = r.get("history") or []
        if not hist:
            continue
        ep = [h.get("time_s") or 0.0 for h in hist] if timed else [h["epoch"] for h in hist]
        acc = [100 * h["test_acc"] for h in hist]
        last = max(last, *ep)
        ax.plot(ep, acc, "o-" if len(ep) < 30 else "-", color=colour[r["model"]], ms=4,
                label=r["model"] + ("" if r["status"] == "ok" else " (failed)"))
        drawn += 1
    if drawn:
        _chance_line(ax, num_classes)
        ax.legend(loc="lower right", fontsize=9)
        if timed:
            ax.set_xlim(0, last * 1.05)
        else:
            ax.set_xlim(0.5, last + 0.5)
            if last <= 30:
                ax.set_xticks(range(1, last + 1))
    else:
        ax.text(0.5, 0.5, "no training history", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("wall-clock seconds (training, evaluations, checkpoints)" if timed else "epoch")
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.set_title(title or "validation accuracy per epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = _save_png(fig, path)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
p.cap{color:#555;margin-top:.2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:1rem 0}
th,td{padding:.35rem .6rem;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f3f5f8}td:nth-child(2),th:nth-child(2){text-align:left}
tr.best td{background:#eef8ee;font-weight:600}tr.failed td{color:#a33}
img{max-width:100%;height:auto;border:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.grid figure{margin:0;flex:1 1 300px;max-width:340px}
figcaption{font-size:.85rem;color:#555;text-align:center}ul.notes{color:#444;font-size:.9rem}
code{background:#f4f4f4;padding:0 .25rem}
"""


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html(rows: Sequence[dict], info: dict, out: Path, images: dict[str, Path],
               confusions: dict[str, Path]) -> Path:
    """``report.html``: one self-contained page (no external files) with the table and every picture."""
    rows = ranked(rows)
    headers, cells = _table_rows(rows, info.get("num_classes", 0) > 5)
    trs = []
    for r, row in zip(rows, cells, strict=True):
        cls = "best" if r.get("rank") == 1 else "failed" if r["status"] != "ok" else ""
        trs.append(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    table = ('<table id="leaderboard"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
             + "</tr></thead><tbody>" + "".join(trs) + "</tbody></table>")
    notes = "".join(f"<li>{html.escape(n.removeprefix('* '))}</li>" for n in _footnotes(rows))
    best = next((r for r in rows if r.get("rank") == 1), None)
    if best:
        ckpt = html.escape(str(best.get("checkpoint") or ""))
        lead = (f"<p><b>{html.escape(best['model'])}</b> is best with {100 * best['top1']:.2f}% held-out "
                f"top-1. "
                f"Use it: <code>cnnzoo predict {ckpt} IMAGES...</code>, "
                f"<code>cnnzoo export {ckpt} --format onnx</code></p>")
    else:
        lead = "<p>No model finished.</p>"
    figs = "".join(f"<figure>{_img_tag(p, f'confusion matrix of {m}')}<figcaption>{html.escape(m)}"
                   f"</figcaption></figure>" for m, p in confusions.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnnzoo compare: {html.escape(info['dataset'])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>cnnzoo compare: {html.escape(info['dataset'])}</h1>
<p class="cap">{html.escape(_caption(info))}</p>
{lead}
<h2>Leaderboard</h2>
{table}
<p class="cap">{html.escape(_EXPLAIN)}</p>
{f'<ul class="notes">{notes}</ul>' if notes else ''}
<h2>Accuracy vs compute</h2>
{_img_tag(images['accuracy_vs_macs'], 'held-out accuracy vs MACs, bubble area = parameters')}
<h2>Validation accuracy per epoch</h2>
{_img_tag(images['curves'], 'validation accuracy per epoch for every model')}
<h2>Confusion matrices</h2>
<div class="grid">{figs or '<p>none</p>'}</div>
<p class="cap">Written by <code>cnnzoo compare</code>, {html.escape(info.get('created', ''))}.</p>
</body></html>
"""
    return write_atomic(out / "report.html", page)
