"""The ``cnnzoo`` command: a thin argparse layer over the Python API.

Each module in this package defines ``ORDER`` (position in ``--help``) and ``register(subparsers)``,
which adds its subcommand and sets ``func`` on the parser. Errors a user can cause are
:class:`cnnzoo.CnnzooError`: printed as one line, exit status 2, traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from ..errors import CnnzooError, CnnzooWarning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnzoo", description="Classic CNN backbones: list, inspect, train, compare, use.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    for mod in sorted(mods, key=lambda m: getattr(m, "ORDER", 100)):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    show = warnings.showwarning

    def one_line(message, category, *rest, **kw):  # cnnzoo's own warnings as one line, no source excerpt
        if issubclass(category, CnnzooWarning):
            print(f"cnnzoo {args.command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *rest, **kw)

    warnings.showwarning = one_line
    try:
        return int(args.func(args) or 0)
    except CnnzooError as e:
        if args.debug:
            raise
        print(f"cnnzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
