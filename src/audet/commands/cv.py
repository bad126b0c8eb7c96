"""``audet cv CONFIG [key=value ...]``: subject-exclusive k-fold cross-validation, one table;
``--repeats R``: plus R random subject partitions; ``--lodo ROOT ...``: leave one dataset out."""
from __future__ import annotations

import argparse

HELP = "cross-validate a config over the folds of dataset.json (resumable per fold); --repeats, --lodo"
DESCRIPTION = """Train one run per fold (OUT/fold<k>, with data.fold=k), evaluate each fold's
best checkpoint (selected on validation subjects held out from the training folds) on its test
fold, and write OUT/cv_report.md + .csv (rows: folds and their mean, papers' layout; F1 at 0.5 and
at per-AU thresholds chosen on each fold's validation split; ROC-AUC, AP, F1-micro),
OUT/cv_results.json, OUT/cv_curves.png (losses and validation F1 per epoch) and OUT/cv_per_au.png.
Finished folds are skipped; an interrupted fold resumes from last.ckpt.

--repeats R [--seed S]: also R random subject-exclusive partitions of the same frames (as many parts
as the official folds; partition r drawn with seed S + r) -> OUT/repeats_report.md: per-AU and
average F1 as mean +- sd over repeats beside the official folds. Several configs (CONFIG CONFIG2 ...,
each in OUT/<name>/, on the same partitions): how often their ranking flips, Kendall's tau.

--lodo ROOT1 ROOT2 ...: leave one dataset out on the AUs all those prepared directories share
(train on all but one, test on it) -> OUT/lodo_report.md, one row per held-out dataset.

  audet cv ac2d_bp4d data.root=data/bp4d
  audet cv ac2d_synth_quick --folds 0 1
  audet cv resnet_tiny_synth ac2d_synth_quick data.root=data/synth --repeats 5 --out runs/rep
  audet cv resnet_tiny_synth --lodo data/synth_bp4d data/synth_disfa --out runs/lodo"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import nonnegative_int, positive_int

    p.add_argument("config", help="YAML file or packaged config name")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides (optional), e.g. data.root=DIR; with --repeats, further "
                        "config names here are compared on the same partitions")
    p.add_argument("--out", help="base run directory (= output.dir; folds go to OUT/fold<k>)")
    from audet.commands._common import add_precision

    add_precision(p, "training precision: 32 | bf16 | 16 (= trainer.precision; default: the config's)", None)
    p.add_argument("--folds", metavar="K", nargs="+",
                   help="only these folds: 0-based numbers, e.g. --folds 0,2 (or --folds 0 2)")
    from audet.commands._common import add_overwrite

    add_overwrite(p, "retrain every fold from scratch, also in fold directories made by another config")
    p.add_argument("--repeats", type=positive_int, metavar="R",
                   help="also R random subject-exclusive partitions (mean +- sd over them, rank flips)")
    p.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                   help="seed of the first random partition (partition r: S + r; default 0)")
    p.add_argument("--lodo", nargs="+", metavar="ROOT",
                   help="leave one dataset out over these prepared directories (their shared AUs)")


def run(args) -> int:
    from audet.commands._common import UsageError, check_data_root, check_prepared, config_from_args, epoch_lines
    from audet.engine.cv import cross_validate

    if args.folds is not None:  # `--folds 0 1 key=value`: the overrides after the fold numbers are overrides
        args.overrides = [*(args.overrides or []), *(t for t in args.folds if "=" in t)]
        args.folds = [t for t in args.folds if "=" not in t]
    names = [args.config] + [o for o in (args.overrides or []) if "=" not in o]
    args.overrides = [o for o in (args.overrides or []) if "=" in o]
    if len(names) > 1 and not args.repeats:
        raise UsageError(f"several configs ({', '.join(names)}) are only compared with --repeats; "
                         "give one config (overrides are key=value)")
    if args.lodo:
        if args.repeats or args.folds:
            raise UsageError("--lodo runs its own folds (one per dataset); leave out --repeats and --folds")
        from audet.engine.cv import lodo_cv

        for r in args.lodo:
            check_prepared(r, "--lodo")
        cfg = config_from_args(args)
        lodo_cv(cfg, args.lodo, out=args.out, callbacks=[epoch_lines()])
        return 0
    cfgs = []
    for name in names:
        args.config = name
        cfgs.append(config_from_args(args))  # the whole config is checked here, before any work
    args.config = names[0]
    meta = check_data_root(cfgs[0], args)
    if args.repeats:
        if args.folds:
            raise UsageError("--repeats runs every fold of every partition; leave out --folds")
        from audet.engine.cv import repeated_cv

        repeated_cv(cfgs, repeats=args.repeats, seed=args.seed, out=args.out, callbacks=[epoch_lines()])
        return 0
    cfg = cfgs[0]
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
