"""``cnnzoo predict CKPT IMAGE_OR_DIR... [--topk K] [--csv submission.csv]``."""

from __future__ import annotations

import argparse
import json
import sys

from ..training.config import TTA_MODES
from ..utils import fmt
from ..utils.ranges import POSITIVE_INT

ORDER = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="class names and probabilities for images, from a trained checkpoint",
        description="Classify image files or folders with a checkpoint written by `cnnzoo train`/`compare` "
                    "(its preprocessing and class names come from the checkpoint). Unreadable images are "
                    "skipped with a warning.")
    p.add_argument("checkpoint", help="run folder (best/ is used), its best/ or last/, or model.safetensors; "
                                      "with --pretrained: a model name (cnnzoo list)")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--pretrained", default=None, metavar="imagenet|TAG|PATH",
                   help="classify with published ImageNet weights (imagenet, or a tag such as IMAGENET1K_V1) "
                        "or a weights file, into the weights' categories, with their preprocessing")
    p.add_argument("--tta", choices=list(TTA_MODES), type=str.lower, default=None,
                   help="test-time augmentation: probabilities of the mean logits of each image and its mirror "
                        "(flip), also shifted 1-2 px (flip-translate), or off; mirrors only where the run "
                        "trained with flips (default: the run's own --tta, as eval)")
    p.add_argument("--topk", type=POSITIVE_INT.argtype(), default=3,
                   help="how many classes to show per image (default 3)")
    p.add_argument("--csv", help="write a Kaggle-style id,label file (id = file stem, or the path relative to "
                                 "the images' common folder where stems repeat; sorted)")
    p.add_argument("--overwrite", action="store_true", help="replace the --csv file if it exists already")
    p.add_argument("--batch-size", type=POSITIVE_INT.argtype(), default=64)
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.inference import predict

    if args.csv is not None:  # checked before any image is classified
        from ..utils.files import check_output_path

        check_output_path(args.csv, overwrite=args.overwrite, what="--csv")
    res = predict(args.checkpoint, args.images, topk=args.topk, batch_size=args.batch_size,
                  device=args.device, pretrained=args.pretrained, tta=args.tta)
    if args.format == "json":
        data = [{"path": p.path, "id": p.id, "label": p.label, "prob": round(p.prob, 6),
                 "topk": [[c, round(q, 6)] for c, q in p.topk]} for p in res.predictions]
        print(json.dumps(data, indent=1))
    else:
        rows = [(p.path, p.label, f"{100 * p.prob:.1f}%",
                 "  ".join(f"{c} {100 * q:.1f}%" for c, q in p.topk[1:]) or "-") for p in res.predictions]
        print(fmt.table(rows, ["image", "class", "prob", "next"], align="llrl"))
        views = f" ({res.tta} test-time augmentation)" if res.tta != "off" else ""
        print(f"\n{len(res.predictions)} image(s) classified{views}"
              + (f", {len(res.skipped)} skipped (unreadable)" if res.skipped else ""))
    if args.csv:
        path = res.write_csv(args.csv, overwrite=args.overwrite)
        print(f"wrote {path} ({len(res.predictions)} rows)",
              file=sys.stderr if args.format == "json" else sys.stdout)
    return 0
