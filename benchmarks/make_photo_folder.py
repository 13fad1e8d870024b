"""Write a synthetic photo folder for the big-folder benchmarks: ``OUT/train/<class>/*.jpg``, ``OUT/val/...``.

Each image is a 256x256 JPEG of one random shape (the class: circle, square, triangle, ...) in a random colour,
size and place on a random coloured background with a second, distracting shape. Nothing is downloaded and
nothing ships: the benchmark makes its data, so any machine can repeat it.

    python benchmarks/make_photo_folder.py /tmp/photos-10k --images 10000
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring", "bar", "star", "pentagon", "chevron")


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    sides = {"triangle": 3, "diamond": 4, "pentagon": 5}[kind]
    turn = {"triangle": -np.pi / 2, "diamond": 0.0, "pentagon": -np.pi / 2}[kind]
    return [(cx + r * np.cos(turn + 2 * np.pi * k / sides), cy + r * np.sin(turn + 2 * np.pi * k / sides))
            for k in range(sides)]


def draw_shape(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    """One shape of ``kind`` centred at (cx, cy) with radius ``r``."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        d.ellipse(box, fill=fill)
    elif kind == "square":
        d.rectangle(box, fill=fill)
    elif kind in ("triangle", "diamond", "pentagon"):
        d.polygon(_polygon(kind, cx, cy, r), fill=fill)
    elif kind == "cross":
        d.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fill)
        d.rectangle((cx - r / 3, cy - r, cx + r / 3, cy + r), fill=fill)
    elif kind == "ring":
        d.ellipse(box, outline=fill, width=max(2, int(r / 3)))
    elif kind == "bar":
        d.rectangle((cx - r, cy - r / 5, cx + r, cy + r / 5), fill=fill)
    elif kind == "star":
        pts = [(cx + (r if k % 2 == 0 else r / 2.5) * np.cos(-np.pi / 2 + np.pi * k / 5),
                cy + (r if k % 2 == 0 else r / 2.5) * np.sin(-np.pi / 2 + np.pi * k / 5)) for k in range(10)]
        d.polygon(pts, fill=fill)
    else:  # chevron
        d.line([(cx - r, cy - r / 2), (cx, cy + r / 2), (cx + r, cy - r / 2)], fill=fill, width=max(2, int(r / 3)))


def make_image(seed: int, label: int, side: int = 256) -> Image.Image:
    """One image of class ``label`` from its own seed."""
    g = np.random.default_rng(seed)
    bg = tuple(int(v) for v in g.integers(0, 256, 3))
    im = Image.new("RGB", (side, side), bg)
    d = ImageDraw.Draw(im)
    other = CLASSES[int(g.integers(0, len(CLASSES)))]
    draw_shape(d, other, *g.uniform(0.15, 0.85, 2) * side, g.uniform(0.05, 0.1) * side,
               tuple(int(v) for v in g.integers(0, 256, 3)))
    draw_shape(d, CLASSES[label], *g.uniform(0.3, 0.7, 2) * side, g.uniform(0.12, 0.28) * side,
               tuple(int(v) for v in (np.array(bg) + 128 + g.integers(-40, 40, 3)) % 256))
    return im


def _write(job: tuple[str, int, int, int]) -> None:
    path, seed, label, side = job
    make_image(seed, label, side).save(path, quality=90)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--images", type=int, default=10000, help="training images (val gets a fifth more)")
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    jobs = []
    for split, n, base in (("train", a.images, 0), ("val", max(len(CLASSES), a.images // 5), 10**9)):
        for c in CLASSES:
            (a.out / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = i % len(CLASSES)
            path = a.out / split / CLASSES[label] / f"{i:07d}.jpg"
            if not path.exists():
                jobs.append((str(path), base + i, label, a.side))
    with ProcessPoolExecutor(a.workers) as ex:
        list(ex.map(_write, jobs, chunksize=256))
    print(f"{a.out}: {a.images} train + {max(len(CLASSES), a.images // 5)} val images of {a.side}x{a.side} "
          f"({len(jobs)} written now)")


if __name__ == "__main__":
    main()
