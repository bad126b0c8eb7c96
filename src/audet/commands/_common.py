"""Helpers shared by the subcommands: one spelling per option, input checks before work starts.

Option spellings used by every subcommand (the old spellings still work, hidden, with a note):

  --data DIR         a prepared directory (what `audet prepare` / `audet demo` write; = data.root)
  --raw DIR          a raw release (`audet prepare`'s input; was --root)
  --aus LIST         AU numbers as a comma list (1,2,4) or a dataset name (BP4D)
  --num-workers N    worker processes (was --workers)
  --batch-size N     batch size (was --batch)
  --quiet            no progress bar (was --no-progress)

Nothing here imports another command or :mod:`audet.cli`; heavy imports stay inside functions so
that ``audet --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = [
    "UsageError",
    "positive_int",
    "nonnegative_int",
    "deprecated_alias",
    "add_aus",
    "add_num_workers",
    "add_quiet",
    "parse_aus",
    "check_prepared",
    "check_checkpoint",
    "config_from_args",
    "check_data_root",
    "epoch_lines",
]


class UsageError(ValueError):
    """A mistake in the command line (reported in one line, exit status 2)."""


# --------------------------------------------------------------------------------------------
# argument types and option spellings
# --------------------------------------------------------------------------------------------
def _whole_number(text: str, low: int, too_low: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one >= {low}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"{v} is {too_low}; give a whole number >= {low}")
    return v


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole_number(text, 1, "too small")


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(text, 0, "negative")


class _Deprecated(argparse.Action):
    """A hidden old spelling: stores into the new option's ``dest`` and prints a one-line note."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str, flag: bool = False, **kwargs) -> None:
    """Accept ``old`` as a hidden spelling of ``new`` (same ``dest``); ``flag`` for store_true options."""
    if flag:
        kwargs.update(nargs=0, const=True)
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                   default=argparse.SUPPRESS, **kwargs)


def add_aus(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--aus", metavar="LIST", default=None,
                   help=help + ": a comma list of AU numbers (1,2,4) or a dataset name (BP4D, DISFA, ...)")


def add_num_workers(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--num-workers", type=nonnegative_int, default=default, metavar="N",
                   help=f"{help} (default: {default}; formerly --workers)")
    deprecated_alias(p, "--workers", "--num-workers", "num_workers", type=nonnegative_int, metavar="N")


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bar") -> None:
    p.add_argument("--quiet", action="store_true", help=f"{help} (formerly --no-progress)")
    deprecated_alias(p, "--no-progress", "--quiet", "quiet", flag=True)


def parse_aus(spec: str | Sequence[str] | None, option: str = "--aus") -> list[int] | None:
    """``"1,2,4"`` (or ``["1", "2", "4"]``) -> ``[1, 2, 4]``; ``"BP4D"`` -> BP4D's AUs; None -> None
    (:func:`audet.facs.parse_aus`, the one AU-spec parser, with errors as a :class:`UsageError`)."""
    from audet.facs import parse_aus as parse

    if spec is None:
        return None
    text = ",".join(spec) if isinstance(spec, (list, tuple)) else str(spec)
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# inputs checked before any work starts
# --------------------------------------------------------------------------------------------
def check_prepared(path: str | Path, what: str = "--data") -> dict:
    """``path/dataset.json`` of a prepared directory, or a one-line error saying what to do."""
    p = Path(path)
    todo = "give a folder written by `audet prepare` (or `audet demo`: OUT/prepared)"
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} does not exist; {todo}")
    if not p.is_dir():
        raise UsageError(f"{what}: {p} is a file, not a prepared directory; {todo}")
    from audet.data.meta import DATASET_META, read_dataset_meta

    if not (p / DATASET_META).is_file():
        raise UsageError(f"{what}: {p} has no {DATASET_META}, so it is not a prepared directory; {todo}")
    try:
        meta = read_dataset_meta(p)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}; prepare the directory again") from None
    return meta


def check_checkpoint(path: str | Path, what: str = "CHECKPOINT") -> dict:
    """Read a checkpoint's metadata and tensors once (damaged files fail here, before any work)."""
    from audet.engine.checkpoint import read_checkpoint_meta, read_state_dict

    p = Path(path)
    if p.is_dir():
        inside = sorted(q.name for q in p.glob("*.safetensors"))
        raise UsageError(f"{what} {p} is a folder; give a checkpoint file"
                         + (f" in it, e.g. {p / ('best.safetensors' if 'best.safetensors' in inside else inside[0])}"
                            if inside else " (a run's best.safetensors)"))
    if not p.exists() and not p.with_suffix(".safetensors").exists() and not Path(f"{p}.safetensors").exists():
        raise FileNotFoundError(f"{what} {path}: no such file; give the best.safetensors of a training run")
    meta = read_checkpoint_meta(path)
    read_state_dict(path)
    return meta


def config_from_args(args) -> dict:
    """The resolved config of ``args.config`` + ``args.overrides`` (+ ``--out`` as output.dir)."""
    from audet.engine.config import load_config, packaged_configs, parse_overrides

    if not getattr(args, "config", None):
        raise UsageError("no CONFIG given; pass a YAML file or a packaged config name: "
                         + ", ".join(packaged_configs()))
    overrides = parse_overrides(args.overrides or [])
    if getattr(args, "out", None):
        overrides["output.dir"] = args.out
    return load_config(args.config, overrides)


def check_data_root(cfg: dict, args) -> dict:
    """data.root (and data.test_root) must be prepared directories; the error says where the value came from."""
    from audet.engine.config import config_path

    given = {o.split("=", 1)[0].strip() for o in (getattr(args, "overrides", None) or []) if "=" in o}
    meta: dict = {}
    for key in ("data.root", "data.test_root"):
        section, leaf = key.split(".")
        value = (cfg.get(section) or {}).get(leaf)
        where = "the command line" if key in given else f"{config_path(args.config).name}"
        if value is None:
            if key == "data.root":
                cmd = getattr(args, "command", None) or "train"
                raise UsageError(f"data.root is not set (in {where}); give the prepared directory, e.g. "
                                 f"`audet {cmd} {args.config} data.root=DIR` (DIR from `audet prepare` or `audet demo`)")
            continue
        m = check_prepared(value, f"{key}={value} (from {where})")
        if key == "data.root":
            meta = m
    return meta


# --------------------------------------------------------------------------------------------
# one line per epoch when no progress bar is shown (output is not a terminal)
# --------------------------------------------------------------------------------------------
def epoch_lines(stream=None):
    """A Lightning callback that prints ``epoch k/N: loss ..., val F1 ... (time)`` after every
    epoch when the trainer shows no progress bar (logs, pipes, CI), so a run is never silent."""
    import time

    from lightning.pytorch.callbacks import Callback

    shown = (("train/loss_epoch", "loss", False), ("val/f1", "val F1", True), ("test/f1", "test F1", True))

    class EpochLines(Callback):
        def __init__(self):
            self.t0 = time.perf_counter()
            self.active = False

        def on_train_start(self, trainer, pl_module):
            self.active = trainer.progress_bar_callback is None and trainer.is_global_zero

        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            if not self.active:
                return
            parts = []
            for key, label, percent in shown:
                if key in trainer.callback_metrics:
                    v = float(trainer.callback_metrics[key])
                    parts.append(f"{label} {v * 100:.1f}" if percent else f"{label} {v:.4f}")
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: " + (", ".join(parts) or "done")
                  + f" ({time.perf_counter() - self.t0:.0f} s)", file=stream or sys.stdout, flush=True)

    return EpochLines()
