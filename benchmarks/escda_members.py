"""ESCDA ensemble against its own members (Table 5: LSC, GDA, ESCDA-V, ESCDA) from ONE trained ensemble.

The paper trains LSC and GDA side by side and combines the same two networks by averaging
(ESCDA) or voting (ESCDA-V). This script loads an ``escda`` (or ``escda_v``) checkpoint, predicts
the test fold once per member, and scores LSC, GDA, their average and their vote: per-AU
F1-frame, and a paired block bootstrap (whole sequences resampled) of each row's mean F1 against
the averaging ensemble.

    audet synth --preset default --out runs/synth_default/raw
    audet prepare BP4D --raw runs/synth_default/raw --out runs/synth_default/prepared
    audet train escda_synth_quick data.root=runs/synth_default/prepared output.dir=runs/escda_synth
    python benchmarks/escda_members.py --checkpoint runs/escda_synth/best.safetensors \\
        --data runs/synth_default/prepared --out runs/escda_synth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="an escda / escda_v checkpoint")
    ap.add_argument("--data", required=True, help="prepared directory")
    ap.add_argument("--out", required=True, help="folder for members.md / members.csv")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from audet.data.meta import read_dataset_meta, read_fold
    from audet.models.checkpoint import load_checkpoint
    from audet.engine.evaluate import eval_dataset
    from audet.metrics import au_report, paired_bootstrap_f1_diff, to_markdown
    from audet.models.ensemble import Ensemble

    model = load_checkpoint(args.checkpoint).eval()
    if not isinstance(model, Ensemble) or len(model.members) != 2:
        raise SystemExit(f"{args.checkpoint} holds {model.model_name!r}, not an ESCDA ensemble (escda / escda_v)")
    data = Path(args.data)
    meta = read_dataset_meta(data)
    prefix = read_fold(data, args.fold)["test"]
    aus = list(model.aus)
    ds = eval_dataset(data, prefix, aus, model.preprocess)
    member_p, labels, mask = [[] for _ in model.members], [], []
    with torch.no_grad():
        for b in DataLoader(ds, batch_size=args.batch_size, num_workers=1):
            for k, m in enumerate(model.members):
                member_p[k].append(torch.sigmoid(m.forward_logits(b["image"])).numpy())
            labels.append(b["labels"].numpy())
            mask.append(b["mask"].numpy())
    probs = {n: np.concatenate(p) for n, p in zip(("LSC", "GDA"), member_p)}
    stacked = np.stack([probs["LSC"], probs["GDA"]])
    probs["ESCDA-V (vote)"] = (stacked >= 0.5).mean(axis=0)  # the contract Ensemble's vote (tie = yes)
    probs["ESCDA (mean)"] = stacked.mean(axis=0)
    y, m = np.concatenate(labels), np.concatenate(mask)
    lab = np.where(m > 0, y, 9)
    groups = ds.sequence_ids
    rows = []
    for name, p in probs.items():
        t = au_report(lab, p, aus)
        t.index = [name]
        rows.append(t)
    df = pd.concat(rows)
    df.index.name = "F1"
    ref = "ESCDA (mean)"
    lines = [f"# {meta['dataset']} ({data.name}), test prefix {prefix}: F1-frame (%) of one trained ensemble\n",
             to_markdown(df), "",
             f"Paired block bootstrap over {len(np.unique(groups))} test sequences ({args.n_boot} resamples), "
             f"mean F1 of each row minus {ref}:\n",
             "| model | mean F1 | diff to ESCDA | 95% CI | P(diff <= 0) |", "|---|---:|---:|---:|---:|"]
    for name in ("LSC", "GDA", "ESCDA-V (vote)"):
        b = paired_bootstrap_f1_diff(lab, probs[name], probs[ref], n_boot=args.n_boot, seed=0, groups=groups)
        lines.append(f"| {name} | {100 * b.f1_a:.1f} | {100 * b.diff:+.1f} | [{100 * b.low:+.1f}, {100 * b.high:+.1f}] "
                     f"| {b.p_value:.3f} |")
    lines += ["", f"Checkpoint {args.checkpoint}."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "members.md").write_text(text + "\n")
    df.to_csv(out / "members.csv", float_format="%.1f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
