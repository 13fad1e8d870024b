"""``cnnzoo list [PATTERN] [--format table|json]``."""

from __future__ import annotations

import argparse
import json

from .. import fmt
from ..registry import list_models, model_info

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models with input size, params, MACs and receptive field")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def rows(pattern: str = "*") -> list[dict]:
    """One dict per model (what ``list --format json`` prints), with its receptive field and jump at the
    default input size (traced by ``cnnzoo.analysis``, cached on disk; None if the tracer cannot follow it)."""
    from ..analysis.cache import registered_rf

    names = list_models(pattern)
    rf = registered_rf(names)
    return [{**model_info(n).as_dict(), "rf": (rf[n] or {}).get("rf"), "jump": (rf[n] or {}).get("jump")}
            for n in names]


def run(args: argparse.Namespace) -> int:
    data = rows(args.pattern)
    if args.format == "json":
        print(json.dumps(data, indent=1))
        return 0
    table = [
        (d["name"], d["family"], "x".join(map(str, d["input_size"])), fmt.human(d["params"]),
         fmt.human(d["macs"]), d["rf"], d["jump"], d["year"])
        for d in data
    ]
    print(fmt.table(table, ["model", "family", "input", "params", "MACs", "RF", "jump", "year"]))
    print(f"\n{len(data)} models")
    return 0
