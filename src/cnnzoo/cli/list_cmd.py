"""``cnnzoo list [PATTERN] [--format table|json]``.

The full listing is cached on disk (``list-v1.json`` in :func:`cnnzoo.utils.diskcache.cache_dir`) under a hash of
cnnzoo's source and torch's version (:func:`cnnzoo.utils.diskcache.code_fingerprint`), so a repeated ``cnnzoo list``
answers without importing torch and is recomputed after any code change or upgrade.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys

from ..utils import fmt

ORDER = 10
_CACHE_FILE = "list-v1.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models with input size, params, MACs and receptive field")
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style filter on the model name, e.g. 'resnet*' (default: all models)")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default) or json (one object per model, every field)")
    p.set_defaults(func=run)


def rows(pattern: str = "*") -> list[dict]:
    """One dict per model (what ``list --format json`` prints), from the on-disk listing when it was made by
    this code and torch; else built (:func:`build_rows`), and stored when the listing is complete."""
    from ..utils.diskcache import code_fingerprint, read_json, write_json

    key = code_fingerprint()
    cached = read_json(_CACHE_FILE)
    if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("rows"), list):
        registry = sys.modules.get("cnnzoo.models.registry")  # loaded: a caller may have registered its own nets
        if registry is None or registry.list_models() == [r["name"] for r in cached["rows"]]:
            pat = pattern.lower()  # as registry.list_models matches
            return [r for r in cached["rows"] if fnmatch.fnmatch(r["name"], pat)]
    data = json.loads(json.dumps(build_rows(pattern)))  # the same types whether built or cached
    if pattern == "*":
        write_json(_CACHE_FILE, {"key": key, "rows": data})
    return data


def build_rows(pattern: str = "*") -> list[dict]:
    """One dict per model, with its receptive field and jump at the default input size (traced by
    ``cnnzoo.analysis``, cached on disk; None if the tracer cannot follow it). Imports torch."""
    from ..analysis.cache import registered_rf
    from ..models.hub import weights_row
    from ..models.registry import list_models, model_info

    names = list_models(pattern)
    rf = registered_rf(names)
    # weights_row: which library publishes ImageNet weights for the net and their top-1 (no network)
    return [{**model_info(n).as_dict(), "rf": (rf[n] or {}).get("rf"), "jump": (rf[n] or {}).get("jump"),
             **weights_row(n)} for n in names]


def run(args: argparse.Namespace) -> int:
    data = rows(args.pattern)
    if args.format == "json":
        print(json.dumps(data, indent=1))
        return 0
    table = [
        (d["name"], d["family"], "x".join(map(str, d["input_size"])), fmt.human(d["params"]),
         fmt.human(d["macs"]), d["rf"], d["jump"], d["year"], d.get("weights") or "-",
         "-" if d.get("imagenet_top1") is None else f"{d['imagenet_top1']:.1f}")
        for d in data
    ]
    print(fmt.table(table, ["model", "family", "input", "params", "MACs", "RF", "jump", "year", "weights",
                            "ImageNet top-1"]))
    print(f"\n{len(data)} model{'' if len(data) == 1 else 's'}")
    return 0
