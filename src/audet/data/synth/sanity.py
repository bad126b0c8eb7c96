"""Sanity check of a generated set: is every AU visible but not trivial?

Aligns every frame with its landmarks (protocol section 2, ``audet.geometry.align_face``),
takes the 176-px centre crop and trains one class-balanced logistic regression per AU on a
subject-exclusive split (a third of the subjects held out). Features:

* ``pixels``: 48x48 grey pixels, each image standardised (zero mean, unit std);
* ``hog``: HOG of the 96x96 grey crop (8-px cells, 16-px blocks, 9 bins; 4,356 values).

Reports F1 next to the prior F1 of always predicting positive, ``2p / (1 + p)``.

    python -m audet.data.synth.sanity DIR [--features pixels|hog] [--test-fraction 0.34]

A healthy benchmark has F1 clearly above the prior and well below 100 for every AU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from audet.facs import landmarks68_to_49

from .presets import SYNTH_AUS
from .writer import IMAGE_DIR, LABEL_DIR, LANDMARK_DIR


def load_aligned(root: str | Path, size: int = 48, max_frames: int | None = None):
    """(X (N, size*size) float32, Y (N, 15) int8 with 9 = unknown, subject names (N,))."""
    from audet.geometry import align_face

    root = Path(root)
    X, Y, S = [], [], []
    for csv in sorted((root / LABEL_DIR).glob("*.csv")):
        subject, task = csv.stem.split("_")
        rows = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
        fit = scipy.io.loadmat(str(root / LANDMARK_DIR / f"{csv.stem}.mat"))["fit"]
        imgs = sorted((root / IMAGE_DIR / subject / task).glob("*.jpg"))
        for k, path in enumerate(imgs):
            pred = fit[0, k]["pred"]
            if pred.shape != (68, 2):
                continue
            img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            warped, _, _ = align_face(img, landmarks68_to_49(pred), size=200, one_based=True)
            crop = warped[12:188, 12:188]
            X.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).reshape(-1))
            Y.append(rows[k, 1:])
            S.append(subject)
        if max_frames and len(X) >= max_frames:
            break
    return np.asarray(X, np.float32) / 255.0, np.asarray(Y, np.int8), np.asarray(S)


def features(X: np.ndarray, kind: str, size: int) -> np.ndarray:
    if kind == "pixels":
        return (X - X.mean(1, keepdims=True)) / (X.std(1, keepdims=True) + 1e-6)
    if kind == "hog":
        hog = cv2.HOGDescriptor((size, size), (16, 16), (8, 8), (8, 8), 9)
        return np.stack([hog.compute((x.reshape(size, size) * 255).astype(np.uint8)).ravel() for x in X])
    raise ValueError(f"unknown features {kind!r}")


def evaluate(F, Y, subjects, test_fraction: float = 0.34, seed: int = 0, C: float = 0.001):
    """Per-AU (p_test, prior F1, F1): class-balanced logistic regression, subject split."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise SystemExit("the sanity check needs scikit-learn: pip install 'audet[probe]'") from None

    names = np.unique(subjects)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(len(names) * test_fraction)))
    test_names = set(rng.choice(names, size=n_test, replace=False).tolist())
    te = np.array([s in test_names for s in subjects])
    tr = ~te
    scaler = StandardScaler().fit(F[tr])
    Ztr, Zte = scaler.transform(F[tr]), scaler.transform(F[te])
    out = {}
    for j, au in enumerate(SYNTH_AUS):
        ktr = Y[tr, j] != 9
        kte = Y[te, j] != 9
        ytr, yte = Y[tr, j][ktr], Y[te, j][kte]
        if ytr.min() == ytr.max() or yte.max() == 0:
            continue
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        clf.fit(Ztr[ktr], ytr)
        pred = clf.predict(Zte[kte])
        p = float(yte.mean())
        out[au] = (p, 2 * p / (1 + p), float(f1_score(yte, pred)))
    return out, sorted(test_names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--features", choices=("pixels", "hog"), default="pixels")
    ap.add_argument("--test-fraction", type=float, default=0.34)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    size = 48 if args.features == "pixels" else 96
    X, Y, S = load_aligned(args.root, size)
    F = features(X, args.features, size)
    C = 0.001 if args.features == "pixels" else 0.0005
    res, test_names = evaluate(F, Y, S, args.test_fraction, args.seed, C)
    # the script's output for the user (this is a command-line entry point, not library code)
    print(report(res, len(X), len(np.unique(S)), test_names))
    return 0


def report(res: dict, n_frames: int, n_subjects: int, test_names) -> str:
    """The Markdown table of :func:`evaluate`'s result, with a one-line header."""
    lines = [f"{n_frames} frames, {n_subjects} subjects; test subjects: {' '.join(test_names)}",
             "| AU | test rate | prior F1 | LR F1 |", "|---|---|---|---|"]  # fmt: skip
    for au, (p, prior, f1) in res.items():
        lines.append(f"| {au} | {100 * p:.1f} | {100 * prior:.1f} | {100 * f1:.1f} |")
    lines.append(f"| mean | | {100 * np.mean([v[1] for v in res.values()]):.1f} | "
                 f"{100 * np.mean([v[2] for v in res.values()]):.1f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
