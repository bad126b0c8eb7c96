"""Train several registered models with the same config and budget, then compare them on the
test fold: per-AU F1-frame table, and a paired block-bootstrap CI (whole sequences resampled)
for the difference of each model's mean F1 to the first (reference) model.

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

import numpy as np


def training_curves(run: Path):
    """Per-epoch ``val/f1`` and the ``train/*_epoch`` losses of one run (all CSV-log versions,
    so resumed runs are joined; the newest value of an epoch wins), or None without logs."""
    import pandas as pd

    files = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda f: int(f.parent.name.split("_")[1]))
    if not files:
        return None
    d = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    cols = [c for c in d.columns if c == "val/f1" or (c.startswith("train/") and c.endswith("_epoch"))]
    rows = d.dropna(subset=["epoch"])[["epoch", *cols]]
    rows = rows.assign(epoch=rows["epoch"].astype(int))
    last = rows.groupby("epoch").agg(lambda x: x.dropna().iloc[-1] if x.notna().any() else float("nan"))
    return last.dropna(how="all")


def write_curves(out: Path, names) -> None:
    """``curves.csv`` (epoch x model: val F1 and training losses) and ``curves.png``."""
    import pandas as pd

    parts = {n: c for n in names if (c := training_curves(out / n)) is not None}
    if not parts:
        return
    df = pd.concat(parts, axis=1)
    df.to_csv(out / "curves.csv", float_format="%.4f")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for n, c in parts.items():
        if "val/f1" in c:
            axes[0].plot(c.index + 1, 100 * c["val/f1"], marker="o", ms=3, label=n)
        if "train/au_epoch" in c:
            axes[1].plot(c.index + 1, c["train/au_epoch"], marker="o", ms=3, label=n)
    axes[0].set(xlabel="epoch", ylabel="validation F1 (%)", title="held-out training subjects")
    axes[1].set(xlabel="epoch", ylabel="AU loss (Eq. 14)", title="training")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


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
                         "'last' writes comparison_last.md/.csv")
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (after --)")
    args = ap.parse_args(argv)

    from torch.utils.data import DataLoader

    from audet.data.meta import read_dataset_meta, read_fold
    from audet.models.checkpoint import load_checkpoint
    from audet.engine.config import load_config
    from audet.engine.evaluate import eval_dataset, run_evaluator
    from audet.engine.scoring import AUEvaluator
    from audet.engine.fit import fit
    from audet.metrics import au_report, paired_bootstrap_f1_diff, to_markdown

    data = Path(args.data)
    meta = read_dataset_meta(data)
    test_prefix = read_fold(data, args.fold)["test"]
    out = Path(args.out)
    probs, minutes = {}, {}
    labels = mask = groups = keys = None
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
        model = load_checkpoint(run / f"{args.checkpoint}.safetensors")
        aus = list(model.aus)
        ds = eval_dataset(data, test_prefix, aus, model.preprocess)
        ev = run_evaluator(model, DataLoader(ds, batch_size=64, num_workers=2),
                           AUEvaluator(aus, list(range(len(aus)))))
        # one row per scored (sequence, frame), sorted by that key so that frame and clip models
        # (different windows, different first-seen orders) are compared frame by frame
        p, y, m = ev.arrays()
        k = ev.keys()
        order = np.lexsort((k[:, 1], k[:, 0]))
        p, y, m, k = p[order], y[order], m[order], k[order]
        if keys is not None and not np.array_equal(keys, k):
            raise SystemExit(f"{name} scored other frames than {args.models[0]}: not comparable")
        probs[name] = p
        labels, mask, groups, keys = y, m, k[:, 0], k

    lab = np.where(mask > 0, labels, 9)
    rows = []
    table = au_report(lab, np.ones_like(labels), aus)
    table.index = ["prior (all positive)"]
    rows.append(table)
    for name in args.models:
        t = au_report(lab, probs[name], aus)
        t.index = [name]
        rows.append(t)
    import pandas as pd

    df = pd.concat(rows)
    df.index.name = "F1"
    ref = args.models[0]
    lines = [f"# {meta['dataset']} ({data.name}), test prefix {test_prefix}: F1-frame (%)\n", to_markdown(df), ""]
    lines.append(f"Paired block bootstrap over {len(np.unique(groups))} test sequences ({args.n_boot} resamples), "
                 f"difference of mean F1 to {ref}:\n")
    lines.append("| model | mean F1 | diff to ref | 95% CI | P(diff <= 0) |")
    lines.append("|---|---:|---:|---:|---:|")
    for name in args.models[1:]:
        b = paired_bootstrap_f1_diff(lab, probs[name], probs[ref], n_boot=args.n_boot, seed=0, groups=groups)
        lines.append(f"| {name} | {100 * b.f1_a:.1f} | {100 * b.diff:+.1f} | [{100 * b.low:+.1f}, {100 * b.high:+.1f}] "
                     f"| {b.p_value:.3f} |")
    lines.append("")
    which = ("best checkpoint selected on held-out training subjects" if args.checkpoint == "best"
             else "last checkpoint (end of the schedule)")
    lines.append(f"Config {args.config} + {' '.join(args.overrides) or '(no overrides)'}; {which}.")
    text = "\n".join(lines)
    print(text)
    stem = "comparison" if args.checkpoint == "best" else "comparison_last"
    (out / f"{stem}.md").write_text(text + "\n")
    write_curves(out, args.models)
    df.to_csv(out / f"{stem}.csv", float_format="%.1f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
