"""What Pillow's JPEG draft mode (DCT-domain downscaling by 1/2, 1/4, 1/8 while decoding) buys cnnzoo's decoder.

Decodes the same JPEGs with :func:`cnnzoo.data.images.decode_file` at ``--img-size``, with draft mode on (as
cnnzoo does) and off, interleaved, in one process on one core, and prints images/s for each photo size.

    python benchmarks/decode_draft.py --sides 256 1024 2048 --img-size 224 --images 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import JpegImagePlugin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_photo_folder import make_image  # noqa: E402

from cnnzoo.data import images as images_mod  # noqa: E402


def rate(paths: list[Path], size: int) -> float:
    t = time.perf_counter()
    for p in paths:
        images_mod.decode_file(p, size)
    return len(paths) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[256, 1024, 2048])
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    real_draft = JpegImagePlugin.JpegImageFile.draft
    with tempfile.TemporaryDirectory() as tmp:
        for side in a.sides:
            paths = []
            for i in range(a.images):
                p = Path(tmp) / f"{side}-{i}.jpg"
                make_image(i, i % 10, side).save(p, quality=90)
                paths.append(p)
            on, off = [], []
            for _ in range(a.rounds):
                JpegImagePlugin.JpegImageFile.draft = real_draft
                on.append(rate(paths, a.img_size))
                JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None  # full-size decode, then resize
                off.append(rate(paths, a.img_size))
            JpegImagePlugin.JpegImageFile.draft = real_draft
            m_on, m_off = statistics.median(on), statistics.median(off)
            print(f"{side}x{side} JPEG -> {a.img_size}: draft {m_on:.0f} img/s, no draft {m_off:.0f} img/s "
                  f"({m_on / m_off:.2f}x), one core, median of {a.rounds}")


if __name__ == "__main__":
    main()
