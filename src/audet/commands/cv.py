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
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--out", help="base run directory (= output.dir; folds go to OUT/fold<k>)")
    p.add_argument("--folds", type=int, nargs="+", help="only these folds (0-based)")


def run(args) -> int:
    from audet.commands.train import config_from_args
    from audet.engine.cv import cross_validate

    cfg = config_from_args(args)
    cross_validate(cfg, folds=args.folds)
    return 0
