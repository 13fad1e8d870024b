"""``cnnzoo summary``, ``cnnzoo rf`` and ``cnnzoo erf``: look inside a network.

MODEL is a registered name or ``path/to/file.py:factory`` for your own net. ``summary`` and ``rf`` build
the net on the meta device (no weights, no arithmetic), so even EfficientNet-B7 at 600x600 takes a
moment; ``erf`` runs real forward and backward passes.
"""

from __future__ import annotations

import argparse
import json

from ..utils.ranges import NONNEG_INT, POSITIVE_INT

ORDER = 20

_MODEL_HELP = "registered model name (see `cnnzoo list`) or path/to/file.py:factory for your own net"


def _input_size(p: argparse.ArgumentParser) -> None:
    # one check for every analysis command: C, H and W are whole numbers >= 1 (`--input-size 0 0 0` would
    # reach create_model as in_chans=0)
    p.add_argument("--input-size", nargs=3, type=POSITIVE_INT.argtype(), metavar=("C", "H", "W"),
                   help="input size (default: the model's own, e.g. 3 224 224)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="per-layer output shapes, parameters and MACs, with totals",
                       description="Per-module output shape, parameters and MACs down to --depth, and totals: "
                                   "parameters, MACs (conv + linear multiply-adds, one image), FLOPs = 2 x MACs, "
                                   "parameter and activation memory.")
    p.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    _input_size(p)
    p.add_argument("--depth", type=NONNEG_INT.argtype(), default=3, help="module nesting depth to show (default 3)")
    p.add_argument("--features", action="store_true",
                   help="the stage table instead: the feature map at the end of each stage (what "
                        "create_model(..., features_only=True) returns) with its module, shape, channels, "
                        "reduction, receptive field and jump")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run_summary)

    p = sub.add_parser("rf", help="receptive field, jump and start of every conv/pool layer",
                       description="Receptive field size r, jump (effective stride) and start (centre of the "
                                   "first unit, in input pixels) of every conv/pool layer on the path to the "
                                   "output, traced through the real graph; global context is flagged.")
    p.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    _input_size(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run_rf)

    p = sub.add_parser("erf", help="effective receptive field heat map (Luo et al. 2016) as a PNG",
                       description="Mean |gradient| of the centre unit of the last feature map with respect to "
                                   "the input over N random (or data set) images, drawn with the theoretical RF.")
    p.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="weights: a `cnnzoo train` run folder or model.safetensors, or a torchvision/timm file")
    _input_size(p)
    p.add_argument("--n", type=POSITIVE_INT.argtype(), default=32,
                   help="number of input images to average over (default 32)")
    p.add_argument("--data", metavar="DATASET",
                   help="use images of this data set (e.g. cifar10, folder:PATH) instead of random N(0,1) inputs")
    p.add_argument("--layer", help="module whose output to probe (default: the last feature map)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="e.g. cpu, cuda (default: where the model is, the CPU)")
    p.add_argument("--out", required=True, metavar="PNG", help="where to write the heat map, e.g. erf.png")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists already")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run_erf)


def _build_kwargs(model: str, input_size: list[int] | None) -> dict:
    """A registered net is built for the channel count asked for (``--input-size 1 28 28``)."""
    from ..analysis._common import _is_file_spec

    return {"in_chans": input_size[0]} if input_size and _is_file_spec(model) is None else {}


def run_summary(args: argparse.Namespace) -> int:
    from ..analysis import resolve_model, summary

    net = resolve_model(args.model, device="meta", **_build_kwargs(args.model, args.input_size))
    net.cnnzoo_name = getattr(net, "cnnzoo_name", args.model)  # the label the table shows
    if args.features:
        from ..models.features import feature_info

        info = feature_info(net, args.input_size)
        print(json.dumps({"model": info.model, "input_size": list(info.input_size), "stages": info.get_dicts()},
                         indent=1) if args.format == "json" else info)
        return 0
    s = summary(net, args.input_size, depth=args.depth)
    print(json.dumps(s.to_dict(), indent=1) if args.format == "json" else s)
    return 0


def run_rf(args: argparse.Namespace) -> int:
    from ..analysis import receptive_field, resolve_model

    net = resolve_model(args.model, device="meta", **_build_kwargs(args.model, args.input_size))
    net.cnnzoo_name = getattr(net, "cnnzoo_name", args.model)
    r = receptive_field(net, args.input_size)
    print(json.dumps(r.to_dict(), indent=1) if args.format == "json" else r)
    return 0


def run_erf(args: argparse.Namespace) -> int:
    from ..analysis import effective_receptive_field, resolve_model
    from ..utils.files import check_output_path

    check_output_path(args.out, overwrite=args.overwrite, what="--out")  # before any work
    model = args.model
    if args.checkpoint is None:
        model = resolve_model(args.model, **_build_kwargs(args.model, args.input_size))
        model.cnnzoo_name = getattr(model, "cnnzoo_name", args.model)
    e = effective_receptive_field(model, args.input_size, n=args.n, checkpoint=args.checkpoint, data=args.data,
                                  seed=args.seed, layer=args.layer, device=args.device)
    path = e.save_png(args.out, overwrite=args.overwrite)
    if args.format == "json":
        print(json.dumps({**e.to_dict(), "png": str(path)}, indent=1))
    else:
        print(f"{e}\nwrote {path}")
    return 0
