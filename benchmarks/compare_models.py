"""Train several registered models with the same config and budget, then compare them on the
test fold with ``audet.engine.compare`` (the code of ``audet compare``): per-AU F1-frame table, and
a paired cluster-bootstrap CI (whole test subjects resampled) for the difference of each model's
mean F1 to the first (reference) model, plus per_au_ci.png and forest.png.

Used for the AC2D ablation on the synthetic benchmark (AC2D Table 7: B-Net < A^v-Net < AC2D)
and for the calibration of the synthetic data (a plain ResNet against the per-AU prior):

    audet synth --preset default --out runs/synth_default/raw
    audet prepare BP4D --raw runs/synth_default/raw --out runs/synth_default/prepared
    python benchmarks/compare_models.py --data runs/synth_default/prepared --out runs/ablation \\
        --config ac2d_synth_quick --models ac2d_bnet ac2d_av ac2d -- trainer.max_epochs=4

Every run is resumable (a finished model is not retrained). To train the models side by side,
start one process per model (``--models NAME``, ``OMP_NUM_THREADS=1``) with the same ``--out`` and
overrides, then run once more with all the names: finished runs are only evaluated. The prior row predicts every AU
present in every frame (F1 = 2p/(1+p) for occurrence rate p of the test fold).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path



def training_curves(run: Path):
    """Per-epoch validation F1 and training losses of one run (:func:`audet.engine.figures.training_curves`)."""
    from audet.engine.figures import training_curves as curves

    return curves(run)


def write_curves(out: Path, names) -> None:
    """``curves.csv`` (epoch x model: val F1 and training losses) and ``curves.png``."""
    import pandas as pd

    from audet.engine.figures import learning_curves_png

    parts = {n: c for n in names if (c := training_curves(out / n)) is not None}
    if not parts:
        return
    pd.concat(parts, axis=1).to_csv(out / "curves.csv", float_format="%.4f")
    learning_curves_png({n: out / n for n in parts}, out / "curves.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared directory")
    ap.add_argument("--out", required=True, help="output folder (one run per model)")
    ap.add_argument("--config", default="ac2d_synth_quick")
    ap.add_argument("--models", nargs="+", required=True, help="registered names; the first is the reference")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--checkpoint", choices=("best", "last"), default="best",
                    help="score each run's best (validation) or last (end of schedule) checkpoint; "
                         "'last' writes OUT/last/comparison.md/.csv")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (after --)")
    args = ap.parse_args(argv)

    from audet.data.meta import read_dataset_meta, read_fold
    from audet.engine.compare import compare_scored, score_checkpoints, write_comparison
    from audet.engine.config import load_config
    from audet.engine.fit import fit
    from audet.metrics import to_markdown

    data = Path(args.data)
    meta = read_dataset_meta(data)
    test_prefix = read_fold(data, args.fold)["test"]
    out = Path(args.out)
    minutes = {}
    for name in args.models:
        run = out / name
        cfg = load_config(args.config, [f"model.name={name}", f"data.root={data}", f"data.dataset={meta['dataset']}",
                                         f"data.fold={args.fold}", *args.overrides])
        cfg["output"]["dir"] = str(run)
        t = time.perf_counter()
        if not (run / "results.json").is_file():
            print(f"== training {name} ==", flush=True)
            fit(cfg, verbose=False)
        minutes[name] = json.loads((run / "results.json").read_text()).get("train_minutes") or (time.perf_counter() - t) / 60
    # the comparison itself lives in the package (audet compare): every model on the same frames,
    # paired cluster bootstrap over test subjects
    s = score_checkpoints({n: out / n / f"{args.checkpoint}.safetensors" for n in args.models}, data, test_prefix,
                          num_workers=2)
    res = compare_scored(s, n_boot=args.n_boot)
    which = ("best checkpoint selected on held-out training subjects" if args.checkpoint == "best"
             else "last checkpoint (end of the schedule)")
    note = f"Config {args.config} + {' '.join(args.overrides) or '(no overrides)'}; {which}."
    dest = out if args.checkpoint == "best" else out / "last"
    write_comparison(dest, s, res, notes=[note])
    print(to_markdown(res["table"]), end="")
    for d in res["diffs"]:
        print(f"{d['model']} - {d['reference']}: {d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]")
    print(f"wrote {dest / 'comparison.md'}; {note}")
    write_curves(out, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
