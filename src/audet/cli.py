"""The ``audet`` console command.

Each subcommand lives in ``audet.commands.<name>`` and exposes ``HELP`` (one line),
``DESCRIPTION`` (optional, longer), ``add_arguments(parser)`` and ``run(args) -> int``.
Heavy imports (torch, lightning) happen inside ``run`` so ``audet --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from audet import __version__
from audet.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audet",
        description="Facial action unit detection toolkit (AC2D, CISNet, AUNet, AAR, ESCDA).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"audet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"audet.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name == f"audet.commands.{name.replace('-', '_')}":
                continue
            raise
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # User-facing errors (bad config, missing file, malformed list) are reported
        # in one line; set AUDET_DEBUG=1 for the traceback.
        import os

        if os.environ.get("AUDET_DEBUG"):
            raise
        print(f"audet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
