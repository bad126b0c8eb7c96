"""``audet cv CONFIG [key=value ...]``: subject-exclusive k-fold cross-validation, one table."""
from __future__ import annotations

import argparse

HELP = "cross-validate a config over the folds of dataset.json (resumable per fold)"
DESCRIPTION = """Train one run per fold (OUT/fold<k>, with data.fold=k), evaluate each fold's
best checkpoint (selected on validation subjects held out from the training folds) on its test
fold, and write OUT/cv_report.md + .csv (rows: folds and their mean, papers' layout) and
OUT/cv_results.json. Finished folds are skipped; an interrupted fold resumes from last.ckpt.

  audet cv ac2d_bp4d data.root=data/bp4d
  audet cv ac2d_synth_quick --folds 0 1"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML file or packaged config name")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides (optional), e.g. data.root=DIR")
    p.add_argument("--out", help="base run directory (= output.dir; folds go to OUT/fold<k>)")
    from audet.commands._common import add_precision

    add_precision(p, "training precision: 32 | bf16 | 16 (= trainer.precision; default: the config's)", None)
    p.add_argument("--folds", metavar="K", nargs="+",
                   help="only these folds: 0-based numbers, e.g. --folds 0,2 (or --folds 0 2)")
    from audet.commands._common import add_overwrite

    add_overwrite(p, "retrain every fold from scratch, also in fold directories made by another config")


def run(args) -> int:
    from audet.commands._common import UsageError, check_data_root, config_from_args, epoch_lines
    from audet.engine.cv import cross_validate

    if args.folds is not None:  # `--folds 0 1 key=value`: the overrides after the fold numbers are overrides
        args.overrides = [*(args.overrides or []), *(t for t in args.folds if "=" in t)]
        args.folds = [t for t in args.folds if "=" not in t]
    cfg = config_from_args(args)  # the whole config is checked here, before any work
    meta = check_data_root(cfg, args)
    folds = None
    if args.folds is not None:
        text = ",".join(args.folds)
        parts = [t.strip() for t in text.split(",") if t.strip()]
        if not parts or not all(t.isdigit() for t in parts):
            raise UsageError(f"--folds {text!r}: give 0-based fold numbers as a comma list, e.g. --folds 0,1")
        folds = [int(t) for t in parts]
        n = len(meta.get("folds") or [])
        bad = [k for k in folds if n and k >= n]
        if bad:
            raise UsageError(f"--folds: {cfg['data']['root']} has {n} folds (0..{n - 1}); fold(s) {bad} do not exist")
    cross_validate(cfg, folds=folds, callbacks=[epoch_lines()], fresh=args.overwrite)
    return 0
