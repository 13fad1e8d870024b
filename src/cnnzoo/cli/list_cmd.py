"""``cnnzoo list [PATTERN] [--format table|json]``."""

from __future__ import annotations

import argparse
import json

from .. import fmt
from ..registry import list_models, model_info

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models with input size, params and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def rows(pattern: str = "*") -> list[dict]:
    """One dict per model (what ``list --format json`` prints)."""
    return [model_info(n).as_dict() for n in list_models(pattern)]


def run(args: argparse.Namespace) -> int:
    data = rows(args.pattern)
    if args.format == "json":
        print(json.dumps(data, indent=1))
        return 0
    table = [
        (d["name"], d["family"], "x".join(map(str, d["input_size"])), fmt.human(d["params"]),
         fmt.human(d["macs"]), d["year"])
        for d in data
    ]
    print(fmt.table(table, ["model", "family", "input", "params", "MACs", "year"]))
    print(f"\n{len(data)} models")
    return 0
