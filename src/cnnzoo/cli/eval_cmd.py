"""``cnnzoo eval CKPT [--dataset D] [--out DIR] [--format table|json]``: accuracy, loss, per-class figures."""

from __future__ import annotations

import argparse
import json

from ..training.config import TTA_MODES
from ..utils import fmt
from ..utils.ranges import POSITIVE_INT

ORDER = 45


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1/top-5, loss, per-class, confusion matrix",
                       description="Evaluate a checkpoint (a run folder, its best/ or last/, or "
                                   "model.safetensors).")
    p.add_argument("checkpoint",
                   help="run folder from `cnnzoo train` (best/ is used), a checkpoint folder or file; "
                        "with --pretrained: a model name (cnnzoo list)")
    p.add_argument("--pretrained", default=None, metavar="imagenet|TAG|PATH",
                   help="score published ImageNet weights (or a weights file) with their preprocessing on "
                        "--dataset folder:PATH whose class folders are ImageNet categories or WordNet ids")
    p.add_argument("--dataset", "-d", default=None,
                   help="default: the data set the checkpoint was trained on")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=POSITIVE_INT.argtype(), default=512)
    p.add_argument("--device", default=None)
    p.add_argument("--out", "-o", default=None, help="write eval.json and confusion.png here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace eval.json and confusion.png in --out if they are there already")
    p.add_argument("--tta", choices=list(TTA_MODES), type=str.lower, default=None,
                   help="test-time augmentation, reported beside the plain top-1: flip (image and mirror), "
                        "flip-translate (also shifted 1-2 px); mirrors only where the run trained with flips "
                        "(default: the run's own --tta)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import evaluate

    target, dataset = args.checkpoint, args.dataset
    if args.out is not None:  # before any work: a file there that is not ours stops the command now
        from ..training.evaluate import eval_output_paths

        eval_output_paths(args.out, args.overwrite)
    from ..training.config import pretrained_value

    published = pretrained_value(args.pretrained) is not None
    if published:
        from ..errors import CnnzooError
        from ..models.factory import pretrained_model
        from ..models.hub import imagenet_dataset

        if not dataset:
            raise CnnzooError("--pretrained needs --dataset: e.g. folder:PATH with one folder per ImageNet class "
                              "(named like 'tabby' or by WordNet id)")
        target, meta = pretrained_model(args.checkpoint, args.pretrained)
        dataset = imagenet_dataset(meta, dataset, args.split, args.data_dir)
    r = evaluate(target, dataset=dataset, split=args.split, data_dir=args.data_dir,
                 batch_size=max(1, args.batch_size), device=args.device, out=args.out,
                 overwrite=args.overwrite, tta=args.tta)
    if args.format == "json":
        print(json.dumps(r, indent=1))
        return 0
    top5 = "-" if r["top5"] is None else f"{100 * r['top5']:.2f}%"
    tta = f" ({r['tta']} TTA {100 * r['top1_tta']:.2f}%)" if r.get("top1_tta") is not None else ""
    avg = ", the run's weight average (--ema)" if r.get("weights") == "ema" else ""
    print(f"{r['model'] or 'model'} on {r['dataset']} ({r['split']}, {r['n']} images): "
          f"top-1 {100 * r['top1']:.2f}%{tta}  top-5 {top5}  loss {r['loss']:.4f}  "
          f"({r['images_per_s']:.0f} img/s){avg}")
    rows = [(c["class"], f"{100 * c['precision']:.1f}", f"{100 * c['recall']:.1f}", f"{100 * c['f1']:.1f}",
             c["support"]) for c in r["per_class"] if c["support"] or not published]  # 1000 categories
    print()
    print(fmt.table(rows, ["class", "precision%", "recall%", "f1%", "support"], align="lrrrr"))
    if args.out:
        print(f"\nwrote {args.out}/eval.json and {args.out}/confusion.png")
    return 0
