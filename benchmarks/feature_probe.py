"""Linear probe of checkpoints' per-AU features: how much AU information a model's representation
holds, independently of its classifier heads and of the 0.5 threshold.

For each checkpoint whose output has ``aux["features"]`` (``(B, A, C)``: AC2D's pooled per-AU
features f^(j) before the intervention) or, failing that, only logits, the script extracts the
features of ``--n-train`` frames of the fold's training list and ``--n-test`` frames of its test
list (eval transform, fixed random subsets), fits one L2-regularised logistic regression per AU on
standardised training features (scikit-learn, C = ``--C``) and prints the test ROC-AUC per AU, next
to the AUC of the model's own logits. Probe AUC well above head AUC means the heads lag behind
the features (as for narrow AC2D models early in training on the synthetic data).

    python benchmarks/feature_probe.py runs/ablation/ac2d_bnet/last.safetensors \\
        runs/ablation/ac2d/last.safetensors --data runs/synth_default/prepared --fold 0

Prints a Markdown table (rows: checkpoints; columns: mean head AUC, mean probe AUC, probe AUC
per AU) and writes it to ``--out`` if given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _subset(n_total: int, n: int, seed: int) -> np.ndarray:
    n = min(n, n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def _features(model, ds, idx, batch_size: int = 64):
    """Per-AU features, logits and labels (-1 where unknown) of ``ds[idx]``."""
    import torch
    from torch.utils.data import DataLoader, Subset

    feats, logits, labels = [], [], []
    with torch.inference_mode():
        for batch in DataLoader(Subset(ds, idx.tolist()), batch_size=batch_size):
            out = model(batch["image"])
            f = out.aux.get("features")
            feats.append((f if f is not None else out.logits.unsqueeze(-1)).float())
            logits.append(out.logits.float())
            labels.append(torch.where(batch["mask"] > 0, batch["labels"], -1.0))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy(), torch.cat(labels).numpy()


def probe(checkpoint, data: Path, fold: int, n_train: int, n_test: int, C: float, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from audet.data.meta import read_fold
    from audet.models.checkpoint import load_checkpoint
    from audet.engine.evaluate import eval_dataset

    split = read_fold(data, fold)
    model = load_checkpoint(checkpoint)
    aus = list(model.aus)
    train = eval_dataset(data, split["train"], aus, model.preprocess)
    test = eval_dataset(data, split["test"], aus, model.preprocess)
    ftr, _, ytr = _features(model, train, _subset(len(train), n_train, seed))
    fte, zte, yte = _features(model, test, _subset(len(test), n_test, seed + 1))
    head, lin = {}, {}
    for j, au in enumerate(aus):
        keep_tr, keep_te = ytr[:, j] >= 0, yte[:, j] >= 0  # drop unknown labels (-1)
        y1, y2 = (ytr[keep_tr, j] > 0).astype(int), (yte[keep_te, j] > 0).astype(int)
        if len(np.unique(y1)) < 2 or len(np.unique(y2)) < 2:
            continue
        a, b = ftr[keep_tr, j], fte[keep_te, j]
        mu, sd = a.mean(0), a.std(0) + 1e-6
        clf = LogisticRegression(C=C, max_iter=1000).fit((a - mu) / sd, y1)
        lin[au] = roc_auc_score(y2, clf.decision_function((b - mu) / sd))
        head[au] = roc_auc_score(y2, zte[keep_te, j])
    return {"head": head, "probe": lin, "name": model.model_name}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="audet checkpoints (.safetensors)")
    ap.add_argument("--data", required=True, help="prepared directory")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=2048, help="training frames to fit the probes on")
    ap.add_argument("--n-test", type=int, default=2048, help="test frames to score")
    ap.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--out", help="write the Markdown table here too")
    args = ap.parse_args(argv)

    rows, aus = [], None
    for ck in args.checkpoints:
        r = probe(ck, Path(args.data), args.fold, args.n_train, args.n_test, args.C)
        aus = aus or list(r["probe"])
        label = f"{Path(ck).parent.name}/{Path(ck).stem}"
        cells = " | ".join(f"{100 * r['probe'].get(a, float('nan')):.1f}" for a in aus)
        rows.append(f"| {label} | {100 * np.mean(list(r['head'].values())):.1f} | "
                    f"{100 * np.mean(list(r['probe'].values())):.1f} | {cells} |")
        print(f"{label}: head AUC {100 * np.mean(list(r['head'].values())):.1f}, "
              f"probe AUC {100 * np.mean(list(r['probe'].values())):.1f}", file=sys.stderr, flush=True)
    lines = [f"Linear probe of per-AU features, {args.data} fold {args.fold}: {args.n_train} training / "
             f"{args.n_test} test frames, ROC-AUC (%)\n",
             "| checkpoint | head AUC | probe AUC | " + " | ".join(f"AU{a}" for a in aus) + " |",
             "|---|---:|---:|" + "---:|" * len(aus)]
    text = "\n".join(lines + rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
