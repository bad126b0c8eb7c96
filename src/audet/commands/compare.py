"""``audet compare A B ... --data DIR [--fold K]``: several checkpoints or run folders on one test set."""
from __future__ import annotations

import argparse

HELP = "compare checkpoints or run folders on one prepared test set (paired subject-bootstrap CIs, figures)"
DESCRIPTION = """Score every model on the same frames of one prepared test split (the AUs all share)
and write OUT/comparison.md + .csv: one row per model plus the all-present prior, and the
difference of each model's mean F1 to the first one with a paired cluster-bootstrap CI that
resamples test SUBJECTS. Figures: OUT/per_au_ci.png (per-AU F1 with CIs), OUT/forest.png
(the differences).

  audet compare runs/a runs/b runs/c/best.safetensors --data data/bp4d --fold 0 --out cmp"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import add_num_workers, nonnegative_int, positive_int

    p.add_argument("models", nargs="+", metavar="MODEL", help="checkpoints (.safetensors) or run folders (their best)")
    p.add_argument("--data", required=True, metavar="DIR", help="prepared directory")
    p.add_argument("--fold", type=nonnegative_int, default=0, metavar="K", help="test prefix of fold K (default 0)")
    p.add_argument("--prefix", help="a list prefix instead of the fold's test prefix")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of a run folder (default best)")
    p.add_argument("--n-boot", type=positive_int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--out", default="comparison", help="output folder (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="frames per forward pass")
    add_num_workers(p, 0, "data-loading worker processes")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def run(args) -> int:
    from audet.commands._common import check_prepared
    from audet.engine.compare import compare_scored, score_checkpoints, write_comparison
    from audet.metrics import to_markdown

    meta = check_prepared(args.data, "--data")
    if args.prefix:
        prefix = args.prefix
    else:
        from audet.data.meta import read_fold

        prefix = read_fold(args.data, args.fold, meta)["test"]
    s = score_checkpoints(args.models, args.data, prefix, which=args.which, batch_size=args.batch_size,
                          num_workers=args.num_workers, device=args.device)
    res = compare_scored(s, n_boot=args.n_boot)
    paths = write_comparison(args.out, s, res)
    print(to_markdown(res["table"]), end="")
    for d in res["diffs"]:
        print(f"{d['model']} - {d['reference']}: {d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] "
              f"(95% paired bootstrap over {res['n_subjects']} subjects)")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
