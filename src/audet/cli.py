"""The ``audet`` console command.

Each subcommand lives in ``audet.commands.<name>`` and exposes ``HELP`` (one line),
``DESCRIPTION`` (optional, longer), ``add_arguments(parser)`` and ``run(args) -> int``.
Heavy imports (torch, lightning) happen inside ``run`` so ``audet --help`` stays fast.

User errors (a bad option, config value, file or checkpoint) are reported as ONE line
``audet CMD: error: <what is wrong>; <what to do>`` with exit status 2 and no traceback
(``AUDET_DEBUG=1`` shows it). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from audet._version import __version__
from audet.commands import COMMANDS


DESCRIPTION = """Facial action unit (AU) detection toolkit.

`audet models` lists the methods this version holds: AC2D, CISNet, ESCDA, AAR and AUNet with their
ablation variants, plus small baselines. Start with `audet demo`."""


#: commands that compute with torch: they take ``--threads`` and get audet's thread policy
#: (:mod:`audet.utils.threads`: waiting threads sleep, threads chosen from the free CPUs)
COMPUTE_COMMANDS = ("demo", "train", "cv", "evaluate", "finetune", "predict", "visualize")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``audet CMD: error: MESSAGE (see `audet CMD --help`)``, exit 2."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="audet",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"audet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, mod in COMMANDS.items():
        for attr in ("HELP", "add_arguments", "run"):
            if not hasattr(mod, attr):
                raise TypeError(f"command module {mod.__name__} has no {attr} (see audet.commands)")
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        if name in COMPUTE_COMMANDS and not any("--threads" in a.option_strings for a in p._actions):
            p.add_argument("--threads", type=int, default=None, metavar="N",
                           help="compute threads (default: the CPUs not busy with other programs; "
                                "AUDET_THREADS=N does the same)")
        p.set_defaults(_run=mod.run)
    return parser


#: Exceptions that mean "the user gave something wrong", reported in one line with exit status 2.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def error_line(exc: BaseException) -> str:
    """The exception's message as one line (a KeyError's text without repr quotes)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    elif isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror.lower()}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    import os

    from audet.utils.threads import prepare_environment

    prepare_environment()  # before any command imports torch: waiting OpenMP threads sleep, not spin
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # a usage error was printed in one line: return its status (--help exits 0)
        if exc.code in (0, None):
            raise
        return int(exc.code) if isinstance(exc.code, int) else 2
    if extra:
        cmd = f"audet {args.command}" if getattr(args, "command", None) else "audet"
        hint = " (a list option takes ONE comma-separated value, e.g. --aus 1,2,4)" if any(
            a.replace(",", "").isdigit() for a in extra) else ""
        print(f"{cmd}: error: unrecognized arguments: {' '.join(extra)}{hint}; see `{cmd} --help`", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    from audet.commands._common import finish_args
    from audet.utils.log import console_logging

    try:
        finish_args(args)  # e.g. the old positional checkpoint (an error here is a usage error)
        if getattr(args, "command", None) in COMPUTE_COMMANDS:
            from audet.utils.threads import configure

            configure(getattr(args, "threads", None))
        with console_logging():  # library progress and notes (logging) reach the user on stdout
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"audet {args.command}: interrupted (re-run the same command to resume where it stopped)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `audet models | head`: the reader left; say nothing more
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (python flushes stdout at exit)
        except OSError:
            pass
        return 141
    except USER_ERRORS as exc:
        if os.environ.get("AUDET_DEBUG") or "Traceback (most recent call last)" in str(exc):
            raise  # a bug re-raised from a DataLoader worker carries its traceback: keep it readable
        print(f"audet {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
