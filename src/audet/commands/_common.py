"""Helpers shared by the subcommands: one spelling per option, input checks before work starts.

Option spellings used by every subcommand (the old spellings still work, hidden, with a note):

  --checkpoint/-c CKPT  an audet checkpoint (evaluate, export, finetune, visualize, predict; the
                     positional CHECKPOINT of evaluate/export/finetune/visualize still works, hidden)
  --data DIR         a prepared directory (what `audet prepare` / `audet demo` write; = data.root)
  --raw DIR          a raw release (`audet prepare`'s input; was --root)
  --aus LIST         AU numbers as a comma list (1,2,4) or a dataset name (BP4D); complexity's
                     --num-aus N is a hidden alias
  --num-workers N    worker processes (was --workers)
  --batch-size N     batch size, a whole number >= 1 (was --batch)
  --precision P      32 | bf16 | 16 (evaluate, predict; train/cv/finetune: = trainer.precision)
  --quiet            no progress bar (was --no-progress; synth too)
  --folds K ...      fold numbers (cv); prepare's parts choice is --parts official|auto (was --folds)

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
    "add_checkpoint",
    "add_batch_size",
    "add_precision",
    "finish_args",
    "parse_aus",
    "check_prepared",
    "check_checkpoint",
    "config_from_args",
    "check_data_root",
    "epoch_lines",
    "nonnegative_float",
    "add_device",
    "check_device",
    "add_overwrite",
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


def nonnegative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one >= 0") from None
    if not v >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is negative; give a number >= 0")
    return v


def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--device", default=default,
                   help="torch device to run on, e.g. cpu or cuda:0 (default: %(default)s)")


def check_device(device: str, option: str = "--device") -> str:
    """``device`` if this machine has it, else a one-line :class:`UsageError` naming what there is."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {device!r} is not a torch device; give cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UsageError(f"{option} {device}: this machine has no CUDA GPU that torch can use; use {option} cpu")
        if dev.index is not None and dev.index >= n:
            raise UsageError(f"{option} {device}: there are {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"{option} {device}: Apple's MPS is not available here; use {option} cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{option} {device}: audet runs on cpu, cuda or mps devices")
    return device


def add_overwrite(p: argparse.ArgumentParser, help: str) -> None:
    """The one flag, on every command that writes a folder, that starts afresh (audet.utils.manifest)."""
    from audet.utils.manifest import FRESH_FLAG

    p.add_argument(FRESH_FLAG, dest="overwrite", action="store_true", help=help)


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


def add_batch_size(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--batch-size", type=positive_int, default=default, metavar="N",
                   help=f"{help} (default: {default})")


#: the precisions of evaluation and inference (``audet.utils.precision.EVAL_PRECISIONS``; kept
#: here too so that building the parser imports no torch)
PRECISIONS = ("32", "bf16", "16")


def add_precision(p: argparse.ArgumentParser, help: str = "", default: str | None = "32") -> None:
    p.add_argument("--precision", default=default, choices=PRECISIONS,
                   help=help or ("32 (default) | bf16 autocast (opt-in: faster on CPUs with AVX-512 bf16; check the "
                                 "F1 drift) | 16 (fp16 autocast, CUDA only)"))


def _add_finisher(p: argparse.ArgumentParser, fn) -> None:
    """``fn(args)`` runs after parsing, before the command (see :func:`finish_args`)."""
    fns = list(p.get_default("_finish") or [])
    p.set_defaults(_finish=[*fns, fn])


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Run the finishers the options registered (e.g. the old positional checkpoint); cli calls it."""
    for fn in getattr(args, "_finish", None) or []:
        fn(args)
    return args


def add_checkpoint(p: argparse.ArgumentParser, help: str, *, old_before: Sequence[str] | None = (),
                   required: bool = True) -> None:
    """``--checkpoint/-c CKPT``, the one spelling of every command.

    The old positional spelling stays accepted (hidden, with a note) for one release: with
    ``old_before=()`` a hidden optional positional; with ``old_before=("images",)`` (names of the
    command's positionals; ``"overrides*"`` may be empty) the first positional is taken as the
    checkpoint when ``--checkpoint`` is not given. ``old_before=None``: no old spelling (predict).
    """
    p.add_argument("--checkpoint", "-c", metavar="CKPT", default=None, help=help)
    if old_before is not None and not old_before:
        p.add_argument("old_checkpoint", nargs="?", default=None, metavar="CHECKPOINT", help=argparse.SUPPRESS)

    names = [n.rstrip("*") for n in old_before or ()]

    def finish(args):
        old = None
        if old_before is not None and not old_before:
            old = getattr(args, "old_checkpoint", None)
            if hasattr(args, "old_checkpoint"):
                del args.old_checkpoint
        elif old_before and args.checkpoint is None:
            items = []
            for name in names:
                v = getattr(args, name, None)
                items += list(v) if isinstance(v, list) else ([] if v is None else [v])
            if items:
                old = items.pop(0)
                for name in names:
                    if isinstance(getattr(args, name, None), list):
                        setattr(args, name, items)
                        items = []
                    else:
                        setattr(args, name, items.pop(0) if items else None)
            missing = [n for n in old_before if not n.endswith("*") and getattr(args, n, None) in (None, [])]
            if old is not None and missing:
                raise UsageError(f"{' '.join(n.upper() for n in missing)} missing after the checkpoint "
                                 f"(see `{p.prog} --help`)")
        if old is not None:
            if args.checkpoint is not None:
                if str(old).replace(",", "").isdigit():  # e.g. --aus 1 2: the 2 landed here
                    raise UsageError(f"unrecognized argument {old} (a list option takes ONE comma-separated value, "
                                     "e.g. --aus 1,2,4)")
                raise UsageError(f"two checkpoints: --checkpoint {args.checkpoint} and {old}; give one")
            print(f"{p.prog}: note: the positional CHECKPOINT is deprecated; use --checkpoint {old}", file=sys.stderr)
            args.checkpoint = old
        if required and not args.checkpoint:
            raise UsageError("--checkpoint CKPT is required: an audet .safetensors checkpoint "
                             "(a run's best.safetensors)")

    _add_finisher(p, finish)


def parse_aus(spec: str | Sequence[str] | None, option: str = "--aus") -> list[int] | None:
    """``"1,2,4"`` (or ``["1", "2", "4"]``) -> ``[1, 2, 4]``; ``"BP4D"`` -> BP4D's AUs; None -> None
    (:func:`audet.facs.parse_aus`, the one AU-spec parser, with errors as a :class:`UsageError`)."""
    from audet.facs import parse_aus as parse

    if spec is None:
        return None
    text = ",".join(spec) if isinstance(spec, (list, tuple)) else str(spec)
    try:
        aus = parse(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None
    from audet.facs import AU_INFO

    unknown = [a for a in aus or [] if a not in AU_INFO]
    if unknown:  # not a column of unknown labels later (issue 20)
        raise UsageError(f"{option} {text}: " + ", ".join(f"AU{a}" for a in unknown)
                         + f" {'is' if len(unknown) == 1 else 'are'} not in audet's FACS table (AUs "
                         + ", ".join(str(a) for a in sorted(AU_INFO)) + ")")
    return aus


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
    from audet.models.checkpoint import read_checkpoint_meta, read_state_dict

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
    if getattr(args, "precision", None):
        overrides["trainer.precision"] = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}[args.precision]
    cfg = load_config(args.config, overrides)
    check_accelerator(cfg)
    return cfg


def check_accelerator(cfg) -> None:
    """``trainer.accelerator`` gpu/cuda/mps on a machine without one: a one-line error (not Lightning's traceback)."""
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else getattr(cfg, "trainer", None)
    acc = trainer.get("accelerator", "auto") if isinstance(trainer, dict) else getattr(trainer, "accelerator", "auto")
    acc = str(acc).lower()
    if acc in ("gpu", "cuda", "mps"):
        try:
            check_device("mps" if acc == "mps" else "cuda")
        except UsageError:
            raise UsageError(f"trainer.accelerator={acc}: this machine has no such device that torch can use; "
                             "use trainer.accelerator=cpu (or auto)") from None


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

    shown = (("train/loss_epoch", "loss", False), ("val/f1", "val F1", True), ("test/f1", "test F1 (test-set selection)", True))

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
