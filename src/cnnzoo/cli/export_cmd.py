"""``cnnzoo export CKPT --format onnx|torchscript --out FILE``."""

from __future__ import annotations

import argparse

from ..utils.ranges import POSITIVE_INT

ORDER = 55


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX or TorchScript (BatchNorm folded, verified)",
        description="Export a checkpoint written by `cnnzoo train`/`compare` with BatchNorm folded into "
                    "the convolutions. ONNX (dynamic batch) is checked with onnxruntime against PyTorch, "
                    "TorchScript by loading it back; the largest difference is printed.")
    p.add_argument("checkpoint", help="run folder (best/ is used), its best/ or last/, or model.safetensors")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", help="output file (default: <run folder>/<model>.onnx or .pt)")
    p.add_argument("--opset", type=POSITIVE_INT.argtype(), default=17,
                   help="ONNX opset (17 up to the newest this torch exports, 20 with torch 2.14; default 17)")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers as they are")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists already")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.exporting import export

    res = export(args.checkpoint, format=args.format, out=args.out, opset=args.opset,
                 fuse_bn=not args.no_fuse, overwrite=args.overwrite)
    print(res)
    return 0
