"""How much AU information AUNet's frozen FAN basis carries: random FAN vs a pretrained one.

    python benchmarks/fan_probe.py --data PREPARED [--fold 0] [--fan FILE ...] [--frames 600] [--size 64]

For each FAN (a random one with seed 0, then each ``--fan`` weights file, e.g. from
``audet pretrain-fan``) it computes AUNet's basis ``cat(F_l, F_h1 * M, F_h2 * M)``
(:meth:`audet.models.layers.fan.FAN.forward_features`) on ``--frames`` evenly spaced frames of the
fold's training prefix and of its test prefix (AUNet's preprocessing at ``img_size=--size``),
average-pools it to 2 x 2 cells, fits a class-balanced logistic regression per AU on the training
frames and prints the mean test ROC-AUC over the AUs (50 = chance). A threshold-free check that the
pretrained FAN's basis is more useful to AUNet's predictor than a random one, at a fraction of the
cost of training AUNet.
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np


def features(fan, root, prefix: str, size: int, frames: int):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset

    from audet.data import AUDataset
    from audet.data.transforms import EvalTransform
    from audet.models.fan_pretrain import fan_preprocess

    ds = AUDataset(root, prefix, transform=EvalTransform.from_preprocess(fan_preprocess(size)))
    idx = list(range(0, len(ds), max(1, math.ceil(len(ds) / frames))))
    xs, ys, ms = [], [], []
    with torch.no_grad():
        for b in DataLoader(Subset(ds, idx), batch_size=32):
            f = F.adaptive_avg_pool2d(fan.forward_features(b["image"]), 2).flatten(1)
            xs.append(f.numpy())
            ys.append(b["labels"].numpy())
            ms.append(b["mask"].numpy())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ms)


def probe_auc(train, test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    (xa, ya, ma), (xb, yb, mb) = train, test
    sc = StandardScaler().fit(xa)
    xa, xb = sc.transform(xa), sc.transform(xb)
    aucs = []
    for j in range(ya.shape[1]):
        ka, kb = ma[:, j] > 0, mb[:, j] > 0
        if len(np.unique(ya[ka, j])) < 2 or len(np.unique(yb[kb, j])) < 2:
            continue
        clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000).fit(xa[ka], ya[ka, j])
        aucs.append(roc_auc_score(yb[kb, j], clf.decision_function(xb[kb])))
    return 100 * float(np.mean(aucs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--fan", nargs="*", default=[], help="FAN weight files (AUNet's fan_weights formats)")
    ap.add_argument("--pool", default="max")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from audet.data.meta import read_fold
    from audet.models.layers.fan import FAN, load_fan_weights

    torch.set_num_threads(args.threads)
    fold = read_fold(args.data, args.fold)
    for src in ["random", *args.fan]:
        torch.manual_seed(0)
        fan = FAN(2, pool=args.pool)
        if src != "random":
            load_fan_weights(fan, src)
        fan.eval()
        tr = features(fan, args.data, fold["train"], args.size, args.frames)
        te = features(fan, args.data, fold["test"], args.size, args.frames)
        print(f"{src}: probe ROC-AUC {probe_auc(tr, te):.1f} (mean over AUs; {len(tr[0])} training, "
              f"{len(te[0])} test frames, basis pooled to 2 x 2)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
