"""The ``cnnzoo`` command: a thin argparse layer over the Python API.

Each module in this package defines ``ORDER`` (position in ``--help``) and ``register(subparsers)``,
which adds its subcommand and sets ``func`` on the parser. Errors a user can cause are
:class:`cnnzoo.CnnzooError`: printed as one line, exit status 2, traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import warnings

from ..errors import CnnzooError, CnnzooWarning


class Parser(argparse.ArgumentParser):
    """argparse with the useful line first: a bad flag is one line, ``cnnzoo CMD: error: --flag: must be ...,
    got ... (see cnnzoo CMD --help)``, instead of a usage dump followed by the error (subcommands inherit it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "argument -b/--batch-size: ..." -> "--batch-size: ..." (the long name, as the user types it)
        message = re.sub(r"^argument (?:-\w/)?(\S+?): ", r"\1: ", message)
        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if bad:  # the nearest choice first, the list after it: `cnnzoo trian` -> did you mean train?
            import difflib

            choices = re.findall(r"'([^']*)'", bad.group(2))
            near = difflib.get_close_matches(bad.group(1), choices, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]}? " if near else ""
            message = message[:bad.start()] + f"invalid choice {bad.group(1)!r}: {hint}choose from " \
                + ", ".join(choices)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cnnzoo", description="Classic CNN backbones: list, inspect, train, compare, use.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    for mod in sorted(mods, key=lambda m: getattr(m, "ORDER", 100)):
        mod.register(sub)
    return parser


# libgomp's spin before a waiting OpenMP worker sleeps: long spins (libgomp's default, or ACTIVE) take the time
# slices the working thread needs on a CPU shared with other jobs; no spin (PASSIVE) pays a wake-up at every
# parallel region on a quiet one. A short spin gives most of both (BENCHMARKS.md, "OpenMP wait policy").
SPIN_COUNT = "10000"


def set_openmp_wait() -> None:
    """Bound how long torch's idle OpenMP workers spin, unless the user set a policy or a spin count. Must
    run before torch is imported (libgomp reads its environment once, when it loads)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    set_openmp_wait()
    show = warnings.showwarning

    def one_line(message, category, *rest, **kw):  # cnnzoo's own warnings as one line, no source excerpt
        if issubclass(category, CnnzooWarning):
            print(f"cnnzoo {args.command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *rest, **kw)

    warnings.showwarning = one_line
    # a file name that is not valid UTF-8 (os.fsdecode's surrogates) prints escaped, never UnicodeEncodeError
    from ..utils.oserr import register_escape

    streams = [(f, f.errors) for f in (sys.stdout, sys.stderr) if hasattr(f, "reconfigure")]
    for f, _ in streams:
        f.reconfigure(errors=register_escape())
    try:
        return int(args.func(args) or 0)
    except CnnzooError as e:
        if args.debug:
            raise
        print(f"cnnzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnzoo list | head`: the reader left; stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except OSError as e:  # the OS said no (full disk, permission, read-only): one line, whatever the command
        if args.debug:
            raise
        from ..utils.oserr import os_error_line

        print(f"cnnzoo {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
        for f, errors in streams:
            f.reconfigure(errors=errors)
