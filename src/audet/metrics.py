"""AU detection metrics: F1-frame with missing labels, per-AU reports, fold means, paired bootstrap.

Inputs are numpy arrays or torch tensors:

- ``labels`` ``(N, A)`` (or ``(B, T, A)``, flattened) with 0/1 and ``9`` for a missing label (any
  value other than 0/1 counts as missing, e.g. Aff-Wild2's ``-1``); optionally a ``mask`` of the
  same shape, 1 where the label is known. Missing labels are removed **per AU** (protocol
  section 6): each AU is scored on its own set of annotated frames.
- ``scores`` ``(N, A)``: probabilities (``sigmoid(logits)``), not logits; a value outside [0, 1]
  raises an error.

F1 conventions (``convention=``), see docs/metrics.md:

``"paper"`` (default, used for all audet tables)
    prediction ``score >= threshold``; per AU the exact ``F1 = 2PR/(P+R) = 2TP/(2TP+FP+FN)``; 0
    when undefined (no positive label and no positive prediction, i.e. scikit-learn's
    ``f1_score(..., zero_division=0)``). This is what JAA-Net/AC2D's evaluation computes.
``"aunet"``
    the AU-Net code: prediction ``score >= threshold``; counts ``TP``, ``GT = TP + FN``,
    ``PR = TP + FP`` per AU, then *if any AU* has ``GT = 0`` add 1 to ``GT`` of every AU, if any AU
    has ``PR = 0`` add 1 to ``PR`` of every AU, if any AU has ``TP = 0`` add 0.01 to ``TP`` of every
    AU; ``F1 = 2RP/(R+P)`` with ``R = TP/GT``, ``P = TP/PR``. The smoothing is applied to all AUs
    at once (as in the published code), so one degenerate AU perturbs the others slightly.
``"cis"``
    the CIS code: prediction ``score > threshold`` (strict); ``F1 = -1`` for an AU with no positive
    label; otherwise ``R = TP/(TP+FN)``, ``P = TP/(TP+FP+1e-6)``, ``F1 = 2PR/(P+R+1e-6)``. The CIS
    code averages the -1 entries into its mean F1.

An AU with no annotated frame at all has F1 ``NaN`` under every convention.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "Convention",
    "confusion_counts",
    "f1_frame",
    "f1_from_counts",
    "precision_recall_accuracy",
    "PRA",
    "au_report",
    "to_markdown",
    "to_csv",
    "mean_over_folds",
    "paired_bootstrap_f1_diff",
    "BootstrapResult",
    "compare_with_prior",
    "prior_comparison_text",
    "f1_micro",
    "roc_auc_per_au",
    "average_precision_per_au",
    "choose_thresholds",
    "bootstrap_f1_ci",
]

Convention = Literal["paper", "aunet", "cis"]
_CONVENTIONS = ("paper", "aunet", "cis")


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.asarray(x)


def _prepare(labels, scores, mask=None, *, check_scores=True):
    """Return (y (N,A) bool positives, s (N,A) float, known (N,A) bool)."""
    lab = _np(labels)
    if lab.ndim < 2:
        raise ValueError(f"labels must be (N, A) or (B, T, A), got shape {lab.shape}")
    A = lab.shape[-1]
    lab = lab.reshape(-1, A)
    known = (lab == 0) | (lab == 1)
    if mask is not None:
        m = _np(mask)
        if m.size != lab.size:
            raise ValueError(f"mask has {m.size} elements, labels {lab.size}")
        known &= m.reshape(-1, A) > 0
    s = None
    if scores is not None:
        s = _np(scores).astype(np.float64, copy=False)
        if s.size != lab.size:
            raise ValueError(f"scores shape {s.shape} does not match labels shape {_np(labels).shape}")
        s = s.reshape(-1, A)
        if check_scores:
            if np.isnan(s).any():
                raise ValueError("scores contain NaN")
            if s.size and (s.min() < 0.0 or s.max() > 1.0):
                raise ValueError("scores must be probabilities in [0, 1] (apply sigmoid to logits)")
    return (lab == 1) & known, s, known


def _check_convention(convention: str) -> None:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")


def _predict(s: np.ndarray, threshold: float, convention: str) -> np.ndarray:
    return s > threshold if convention == "cis" else s >= threshold


def confusion_counts(labels, scores, *, threshold: float = 0.5, mask=None, strict: bool = False) -> dict:
    """Per-AU ``tp, fp, fn, tn, n`` (int64 arrays of shape (A,)) over the known frames.

    Prediction is ``score >= threshold`` (``score > threshold`` with ``strict=True``).
    """
    y, s, known = _prepare(labels, scores, mask)
    pred = s > threshold if strict else s >= threshold
    tp = (pred & y).sum(0)
    fp = (pred & ~y & known).sum(0)
    fn = (~pred & y).sum(0)
    n = known.sum(0)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": n - tp - fp - fn, "n": n}


def f1_from_counts(tp, fp, fn, convention: Convention = "paper") -> np.ndarray:
    """F1 from per-AU counts under a convention; vectorised over leading dims (AUs last).

    ``cis`` only changes the formula here; its strict threshold is applied when counting.
    """
    _check_convention(convention)
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    fn = np.asarray(fn, dtype=np.float64)
    if convention == "paper":
        den = 2 * tp + fp + fn
        return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)
    if convention == "aunet":
        gd = tp + fn
        pr = tp + fp
        tp = tp.copy()
        # "if the minimum over AUs is zero, smooth every AU" (per leading index)
        gd = gd + (gd.min(axis=-1, keepdims=True) == 0) * 1.0
        pr = pr + (pr.min(axis=-1, keepdims=True) == 0) * 1.0
        tp = tp + (tp.min(axis=-1, keepdims=True) == 0) * 0.01
        r = tp / gd
        p = tp / pr
        return 2 * r * p / (r + p)
    # cis
    pos = tp + fn
    r = np.divide(tp, pos, out=np.zeros_like(pos), where=pos > 0)
    p = tp / (tp + fp + 1e-6)
    f1 = 2 * p * r / (p + r + 1e-6)
    return np.where(pos > 0, f1, -1.0)


def f1_frame(
    labels,
    scores,
    *,
    threshold: float = 0.5,
    convention: Convention = "paper",
    mask=None,
) -> np.ndarray:
    """Per-AU F1-frame (A,), missing labels removed per AU (protocol section 6).

    See the module docstring for the conventions. The ``"paper"`` value equals
    ``sklearn.metrics.f1_score(y[known_j, j], score[known_j, j] >= threshold, zero_division=0)``
    for every AU ``j`` (tested); it is computed from vectorised counts for speed.
    """
    _check_convention(convention)
    c = confusion_counts(labels, scores, threshold=threshold, mask=mask, strict=convention == "cis")
    f1 = f1_from_counts(c["tp"], c["fp"], c["fn"], convention)
    empty = c["n"] == 0
    if empty.any():
        warnings.warn(
            f"f1_frame: AU column(s) {np.flatnonzero(empty).tolist()} have no annotated frame; F1 is NaN",
            stacklevel=2,
        )
        f1 = np.where(empty, np.nan, f1)
    return f1


class PRA(NamedTuple):
    """Per-AU precision, recall and accuracy (each (A,))."""

    precision: np.ndarray
    recall: np.ndarray
    accuracy: np.ndarray


def precision_recall_accuracy(labels, scores, *, threshold: float = 0.5, mask=None, strict: bool = False) -> PRA:
    """Per-AU precision, recall, accuracy over the known frames; 0 when undefined, NaN if no frame.

    Prediction is ``score >= threshold`` (``>`` with ``strict=True``).
    """
    c = confusion_counts(labels, scores, threshold=threshold, mask=mask, strict=strict)
    tp, fp, fn, n = (c[k].astype(np.float64) for k in ("tp", "fp", "fn", "n"))
    prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    rec = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    acc = np.divide(c["tp"] + c["tn"], n, out=np.full_like(tp, np.nan), where=n > 0)
    prec = np.where(n > 0, prec, np.nan)
    rec = np.where(n > 0, rec, np.nan)
    return PRA(prec, rec, acc)


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def _au_columns(aus, A: int) -> list[str]:
    if aus is None:
        return [f"AU#{j}" for j in range(A)]
    aus = list(aus)
    if len(aus) != A:
        raise ValueError(f"{len(aus)} AU names for {A} columns")
    return [f"AU{a}" if isinstance(a, (int, np.integer)) else str(a) for a in aus]


def au_report(
    labels,
    scores,
    aus: Sequence[int | str] | None,
    *,
    threshold: float = 0.5,
    convention: Convention = "paper",
    mask=None,
    metrics: Sequence[str] = ("F1",),
) -> pd.DataFrame:
    """Per-AU table in the papers' layout: rows = metric, columns = ``AU1 .. AUn, Avg``.

    Values are in percent (unrounded floats; :func:`to_markdown`/:func:`to_csv` print one decimal).
    ``metrics`` is any of ``"F1"``, ``"Precision"``, ``"Recall"``, ``"Accuracy"``. ``Avg`` is the
    mean over AUs ignoring NaN. With ``convention="cis"``, the ``-1`` of AUs without positives are
    reported as NaN and left out of ``Avg`` (the CIS code would average -1 in; use
    :func:`f1_frame` for that value).
    """
    f1 = f1_frame(labels, scores, threshold=threshold, convention=convention, mask=mask)
    if convention == "cis":
        f1 = np.where(f1 < 0, np.nan, f1)
    rows: dict[str, np.ndarray] = {}
    pra = None
    for name in metrics:
        key = name.lower()
        if key == "f1":
            rows["F1"] = f1
            continue
        if pra is None:
            pra = precision_recall_accuracy(
                labels, scores, threshold=threshold, mask=mask, strict=convention == "cis"
            )
        if key not in ("precision", "recall", "accuracy"):
            raise ValueError(f"unknown metric {name!r}")
        rows[name.capitalize()] = getattr(pra, key)
    cols = _au_columns(aus, f1.shape[0])
    df = pd.DataFrame({k: v * 100.0 for k, v in rows.items()}, index=cols).T
    df.index.name = "metric"
    df["Avg"] = _nanmean_rows(df[cols].to_numpy())
    return df


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    cnt = (~np.isnan(x)).sum(axis=-1)
    tot = np.nansum(x, axis=-1)
    return np.divide(tot, cnt, out=np.full(tot.shape, np.nan), where=cnt > 0)


def _fmt(v, decimals: int) -> str:
    if isinstance(v, (float, np.floating)):
        return "-" if np.isnan(v) else f"{v:.{decimals}f}"
    return str(v)


def to_markdown(df: pd.DataFrame, decimals: int = 1, index: bool = True) -> str:
    """A GitHub-markdown table (no tabulate dependency); NaN printed as ``-``."""
    header = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    align = (["---"] if index else []) + ["---:"] * len(df.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + [_fmt(v, decimals) for v in row.to_numpy()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame, path=None, decimals: int = 1) -> str:
    """CSV text with ``decimals`` decimals (written to ``path`` if given); returns the text."""
    text = df.to_csv(float_format=f"%.{decimals}f")
    if path is not None:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return text


def mean_over_folds(folds):
    """Mean over folds (papers: each AU's F1 averaged over the 3 folds; Avg = mean over AUs).

    - a list of per-AU arrays (each (A,)) -> ``(per_au_mean (A,), avg float)``;
    - a list of :func:`au_report` DataFrames (same index/columns) -> a DataFrame whose AU columns
      are the fold means and whose ``Avg`` is recomputed as the mean of those AU columns (equal to
      the mean of the folds' Avg when no value is NaN).

    NaN entries (an AU not annotated in a fold) are ignored in both means.
    """
    folds = list(folds)
    if not folds:
        raise ValueError("mean_over_folds needs at least one fold")
    if all(isinstance(f, pd.DataFrame) for f in folds):
        first = folds[0]
        for f in folds[1:]:
            if list(f.index) != list(first.index) or list(f.columns) != list(first.columns):
                raise ValueError("fold reports have different rows or columns")
        au_cols = [c for c in first.columns if c != "Avg"]
        stack = np.stack([f[au_cols].to_numpy(dtype=np.float64) for f in folds])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(stack, axis=0)
        out = pd.DataFrame(mean, index=first.index.copy(), columns=au_cols)
        out["Avg"] = _nanmean_rows(mean)
        return out
    arr = np.stack([_np(f).astype(np.float64).reshape(-1) for f in folds])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_au = np.nanmean(arr, axis=0)
    return per_au, float(_nanmean_rows(per_au))


# --------------------------------------------------------------------------------------------
# paired bootstrap
# --------------------------------------------------------------------------------------------
@dataclass
class BootstrapResult:
    """Paired bootstrap of ``mean F1(a) - mean F1(b)`` on the same frames.

    ``p_value`` is the fraction of resamples with a difference ``<= 0`` (a one-sided,
    p-value-like measure of evidence that model a is better than b).
    """

    diff: float
    low: float
    high: float
    p_value: float
    f1_a: float
    f1_b: float
    ci: float
    n_boot: int
    n_units: int
    unit: str
    diffs: np.ndarray = field(repr=False)


def _bootstrap_units(groups, n_frames: int) -> tuple[np.ndarray | None, int]:
    """The resampling units of a bootstrap: ``(unit index per frame, number of units)`` for
    ``groups`` (one id per frame: whole groups are resampled), or ``(None, n_frames)`` (frames)."""
    if groups is None:
        return None, n_frames
    g = _np(groups).reshape(-1)
    if g.shape[0] != n_frames:
        raise ValueError(f"groups has {g.shape[0]} entries for {n_frames} frames")
    _, unit_idx = np.unique(g, return_inverse=True)
    return unit_idx, (int(unit_idx.max()) + 1 if n_frames else 0)


def _unit_sums(y, known, preds, unit_idx, n_units):
    """Per-unit sums of (tp, fp, fn) for each model -> (U, 3 * n_models * A) float32."""
    cols = []
    for pred in preds:
        cols += [pred & y, pred & ~y & known, ~pred & y]
    feats = np.concatenate([c.astype(np.float32) for c in cols], axis=1)  # (N, K)
    if unit_idx is None:
        return feats if feats.shape[0] < 2**24 else feats.astype(np.float64)
    out = np.zeros((n_units, feats.shape[1]), dtype=np.float64)
    if feats.shape[0]:
        order = np.argsort(unit_idx, kind="stable")
        sidx = unit_idx[order]
        starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
        out[sidx[starts]] = np.add.reduceat(feats[order].astype(np.float64), starts, axis=0)
    # float32 products are exact while every count stays below 2**24
    return out.astype(np.float32) if out.sum(axis=0).max(initial=0) * 1.0 < 2**24 else out


def paired_bootstrap_f1_diff(
    labels,
    scores_a,
    scores_b,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    groups=None,
    ci: float = 0.95,
    threshold: float = 0.5,
    convention: Convention = "paper",
    mask=None,
    chunk: int = 50,
) -> BootstrapResult:
    """Paired bootstrap CI of ``mean_AU F1(a) - mean_AU F1(b)`` on the same frames.

    Each resample draws units with replacement and recomputes both models' per-AU F1 on the same
    drawn units (paired), then the difference of their AU-means. Units are frames, or with
    ``groups`` (one id per frame, e.g. subject or sequence) whole groups: a cluster/block bootstrap.
    Video frames are strongly autocorrelated, so frames of one sequence are not independent
    samples; resampling frames then underestimates the variance (CIs far too narrow). Resampling
    subjects (the unit the folds are split on) respects that dependence.

    ``low``/``high`` are the percentile interval at level ``ci``. Within a resample, an AU whose
    F1 is undefined is scored as the convention says (``paper``: 0, for both models alike).
    Vectorised: per-unit (tp, fp, fn) sums times a matrix of resampling multiplicities, ``chunk``
    resamples at a time; 1000 resamples of 50k frames x 12 AUs take about a second.
    """
    _check_convention(convention)
    y, sa, known = _prepare(labels, scores_a, mask)
    _, sb, _ = _prepare(labels, scores_b, mask)
    N, A = y.shape
    pa = _predict(sa, threshold, convention) & known
    pb = _predict(sb, threshold, convention) & known
    unit_idx, n_units = _bootstrap_units(groups, N)
    unit = "frame" if groups is None else "group"
    S = _unit_sums(y, known, (pa, pb), unit_idx, n_units)  # (U, 6A)

    def mean_f1(counts):  # counts (..., 6A) -> (mean_a, mean_b)
        c = counts.reshape(counts.shape[:-1] + (2, 3, A))
        f1 = f1_from_counts(c[..., 0, :], c[..., 1, :], c[..., 2, :], convention)
        return f1.mean(axis=-1)  # (..., 2)

    point = mean_f1(S.sum(axis=0, dtype=np.float64))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot, dtype=np.float64)
    U = n_units
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        draws = rng.integers(0, U, size=(k, U))
        mult = np.bincount((draws + (np.arange(k) * U)[:, None]).ravel(), minlength=k * U)
        mult = mult.reshape(k, U).astype(S.dtype)
        counts = mult @ S  # (k, 6A)
        m = mean_f1(counts.astype(np.float64))
        diffs[start : start + k] = m[:, 0] - m[:, 1]
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(diffs, [alpha, 1.0 - alpha]) if n_boot else (np.nan, np.nan)
    return BootstrapResult(
        diff=float(point[0] - point[1]),
        low=float(low),
        high=float(high),
        p_value=float(np.mean(diffs <= 0)) if n_boot else float("nan"),
        f1_a=float(point[0]),
        f1_b=float(point[1]),
        ci=ci,
        n_boot=n_boot,
        n_units=U,
        unit=unit,
        diffs=diffs,
    )


def compare_with_prior(
    labels,
    scores,
    *,
    mask=None,
    groups=None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
    convention: Convention = "paper",
) -> BootstrapResult:
    """The model against the all-present prior: every AU predicted present on every frame.

    That prior is the F1 floor of a detector that learned nothing about the images (its per-AU
    F1 is ``2 r / (1 + r)`` for an occurrence rate ``r``). Returns the paired bootstrap of
    ``mean F1(model) - mean F1(prior)`` on the same frames (:func:`paired_bootstrap_f1_diff`;
    ``f1_a`` = the model, ``f1_b`` = the prior). Pass ``groups`` (e.g. the sequence of each frame)
    for a block bootstrap: frames of one video are not independent.
    """
    s = _np(scores)
    return paired_bootstrap_f1_diff(labels, s, np.ones_like(s, dtype=np.float64), n_boot=n_boot, seed=seed,
                                    groups=groups, ci=ci, threshold=threshold, convention=convention, mask=mask)


def prior_comparison_text(r: BootstrapResult, unit: str | None = None) -> str:
    """One line for a report: model F1, prior F1, the difference with its CI, and the verdict."""
    verdict = ("above the prior" if r.low > 0 else "below the prior" if r.high < 0
               else "not distinguishable from the prior")
    units = f"{r.n_units} {unit or ('frames' if r.unit == 'frame' else 'groups')}"
    return (f"mean F1 {100 * r.f1_a:.1f} vs {100 * r.f1_b:.1f} for the all-present prior: difference "
            f"{100 * r.diff:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}] ({100 * r.ci:.0f}% paired bootstrap CI "
            f"over {units}, {r.n_boot} resamples): {verdict}")


# --------------------------------------------------------------------------------------------
# metrics beside F1-frame, and thresholds chosen on a validation split
# --------------------------------------------------------------------------------------------
def f1_micro(labels, scores, *, threshold=0.5, mask=None) -> float:
    """F1-micro: one F1 over every known (frame, AU) decision, ``2 TP / (2 TP + FP + FN)`` with the
    counts summed over AUs (frequent AUs weigh more than in the per-AU mean). ``threshold``: a
    number or one per AU. NaN when no label is known; 0 when nothing is positive at all."""
    c = confusion_counts(labels, scores, threshold=threshold, mask=mask)
    if int(c["n"].sum()) == 0:
        return float("nan")
    tp, fp, fn = (float(c[k].sum()) for k in ("tp", "fp", "fn"))
    den = 2 * tp + fp + fn
    return 2 * tp / den if den > 0 else 0.0


def _per_au_ranking(labels, scores, mask, fn) -> np.ndarray:
    y, s, known = _prepare(labels, scores, mask, check_scores=False)
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        k = known[:, j]
        yj = y[k, j]
        if yj.size and yj.any() and not yj.all():  # both classes present: the metric is defined
            out[j] = float(fn(yj, s[k, j]))
    return out


def roc_auc_per_au(labels, scores, *, mask=None) -> np.ndarray:
    """Per-AU area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`) over the known
    frames, threshold-free; NaN for an AU whose known frames are all of one class. ``scores`` may
    be any monotone score (probabilities, intensities)."""
    from sklearn.metrics import roc_auc_score

    return _per_au_ranking(labels, scores, mask, roc_auc_score)


def average_precision_per_au(labels, scores, *, mask=None) -> np.ndarray:
    """Per-AU average precision (area under the precision-recall curve,
    :func:`sklearn.metrics.average_precision_score`) over the known frames; NaN as for the AUC.
    Its chance level is the AU's occurrence rate, not 0.5."""
    from sklearn.metrics import average_precision_score

    return _per_au_ranking(labels, scores, mask, average_precision_score)


#: candidate thresholds of :func:`choose_thresholds` (0.01 .. 0.99)
THRESHOLD_GRID = np.round(np.arange(1, 100) / 100.0, 2)


def choose_thresholds(labels, scores, *, mask=None, grid=None, default: float = 0.5) -> np.ndarray:
    """Per-AU decision thresholds that maximise F1-frame (``"paper"`` convention) on the given
    frames -- pass the VALIDATION split (held-out training subjects), never the test fold.

    Each AU takes the grid value (default 0.01 .. 0.99) with the highest F1; ties go to the value
    nearest ``default``. An AU without a positive (or without any known) frame keeps ``default``.
    Returns ``(A,)`` float64.
    """
    y, s, known = _prepare(labels, scores, mask)
    g = np.asarray(THRESHOLD_GRID if grid is None else grid, dtype=np.float64).reshape(-1)
    A = y.shape[1]
    out = np.full(A, float(default))
    if y.shape[0] == 0:
        return out
    for j in range(A):
        k = known[:, j]
        yj, sj = y[k, j], s[k, j]
        if not yj.any():
            continue
        pred = sj[None, :] >= g[:, None]  # (G, n)
        tp = (pred & yj).sum(1).astype(np.float64)
        fp = (pred & ~yj).sum(1).astype(np.float64)
        fn = float(yj.sum()) - tp
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out[j] = float(g[best[np.argmin(np.abs(g[best] - default))]])
    return out


def bootstrap_f1_ci(labels, scores, *, groups=None, n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                    threshold=0.5, mask=None, chunk: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-AU F1-frame (``"paper"``) with a percentile bootstrap CI: ``(f1, low, high)``, each
    ``(A,)``. ``groups`` (one id per frame, e.g. the subject) resamples whole groups (cluster
    bootstrap); otherwise frames."""
    y, s, known = _prepare(labels, scores, mask)
    N, A = y.shape
    pred = (s >= np.asarray(threshold, dtype=np.float64)) & known
    unit_idx, n_units = _bootstrap_units(groups, N)
    S = _unit_sums(y, known, (pred,), unit_idx, n_units)  # (U, 3A)

    def f1_of(counts):
        c = counts.reshape(counts.shape[:-1] + (3, A))
        return f1_from_counts(c[..., 0, :], c[..., 1, :], c[..., 2, :], "paper")

    point = f1_of(S.sum(axis=0, dtype=np.float64))
    point = np.where(known.sum(0) > 0, point, np.nan)
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, A))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        draws = rng.integers(0, n_units, size=(k, n_units))
        mult = np.bincount((draws + (np.arange(k) * n_units)[:, None]).ravel(), minlength=k * n_units)
        boots[start:start + k] = f1_of((mult.reshape(k, n_units).astype(S.dtype) @ S).astype(np.float64))
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha], axis=0) if n_boot else (point * np.nan, point * np.nan)
    return point, np.where(np.isnan(point), np.nan, low), np.where(np.isnan(point), np.nan, high)
