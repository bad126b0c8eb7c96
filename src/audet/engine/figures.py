"""Figures of the reports (matplotlib, Agg backend, PNG written atomically).

- :func:`training_curves` / :func:`learning_curves_png`: every logged loss term (``train/<term>``
  per epoch) and the validation F1 per epoch of one or several runs (the CSV logs of every
  (re)start are joined, the newest value of an epoch wins);
- :func:`per_au_png`: a table of F1 per AU (rows = runs or folds) as grouped bars;
- :func:`per_au_ci_png`: per-AU F1 of several models with bootstrap CIs (``audet compare``);
- :func:`forest_png`: differences with their CIs, one line each, against zero (``audet compare``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["training_curves", "learning_curves_png", "per_au_png", "per_au_ci_png", "forest_png"]

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from audet.utils.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _plt().close(fig)
    return path


def training_curves(run: str | Path) -> pd.DataFrame | None:
    """Per-epoch ``val/f1`` and the ``train/*_epoch`` loss terms of one run directory (every
    ``logs/csv/version_*/metrics.csv``, so resumed runs are joined; the newest value of an epoch
    wins), or None without logs. A staged run's stages are joined in order (epochs renumbered)."""
    run = Path(run)
    stages = sorted((run / "stages").glob("*_*"), key=lambda p: int(p.name.split("_")[0])) if (run / "stages").is_dir() else []
    if stages:
        parts, offset = [], 0
        for st in stages:
            c = training_curves(st)
            if c is not None and len(c):
                c.index = c.index + offset
                offset = int(c.index.max()) + 1
                parts.append(c)
        return pd.concat(parts) if parts else None
    files = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda f: int(f.parent.name.split("_")[1]))
    if not files:
        return None
    d = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if "epoch" not in d:
        return None
    cols = [c for c in d.columns if c == "val/f1" or (c.startswith("train/") and c.endswith("_epoch"))]
    if not cols:
        return None
    rows = d.dropna(subset=["epoch"])[["epoch", *cols]]
    rows = rows.assign(epoch=rows["epoch"].astype(int))
    last = rows.groupby("epoch").agg(lambda x: x.dropna().iloc[-1] if x.notna().any() else float("nan"))
    return last.dropna(how="all")


def learning_curves_png(runs: Sequence[str | Path] | Mapping[str, str | Path], path: str | Path,
                        title: str | None = None) -> Path | None:
    """Left: every loss term per epoch (``train/<term>``, the total dashed); right: validation F1
    per epoch; one colour per run. ``runs``: run directories, or ``{label: run directory}``.
    Returns the path, or None when no run has logs."""
    items = runs.items() if isinstance(runs, Mapping) else ((Path(r).name, r) for r in runs)
    curves = {label: c for label, r in items if (c := training_curves(r)) is not None and len(c)}
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, c) in enumerate(curves.items()):
        col = colours[i % len(colours)]
        x = c.index.to_numpy() + 1
        terms = [k for k in c.columns if k.startswith("train/") and k != "train/loss_epoch"]
        for k, ls in [(t, "-") for t in terms] + [("train/loss_epoch", "--")]:
            if k in c and c[k].notna().any():
                name = k[len("train/"):-len("_epoch")]
                axes[0].plot(x, c[k], ls, color=col, marker="o", ms=2,
                             label=f"{label}: {name}" if len(curves) > 1 else name,
                             alpha=1.0 if ls == "--" else 0.75)
        if "val/f1" in c and c["val/f1"].notna().any():
            axes[1].plot(x, 100 * c["val/f1"], marker="o", ms=3, color=col, label=label)
    axes[0].set(xlabel="epoch", ylabel="loss (epoch mean)", title="training loss terms (total dashed)")
    axes[1].set(xlabel="epoch", ylabel="validation F1 (%)", title="held-out training subjects")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def _finish_f1_axes(fig, ax, path, title: str | None) -> Path:
    """The F1 axes of the per-AU figures (0-100 %, grid, legend, title), saved to ``path``."""
    ax.set(ylabel="F1 (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def per_au_png(table: pd.DataFrame, path: str | Path, title: str | None = None) -> Path | None:
    """Grouped bars of a per-AU F1 table (rows = runs/folds, columns ``AU<n>`` and ``Avg``, in
    percent, as :func:`audet.engine.reports.f1_table` makes it)."""
    if table is None or not len(table):
        return None
    plt = _plt()
    cols = list(table.columns)
    n, k = len(cols), len(table)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n * max(1, k) ** 0.5 + 2), 3.8))
    x = np.arange(n)
    for i, (name, row) in enumerate(table.iterrows()):
        ax.bar(x + (i - (k - 1) / 2) * width, row.to_numpy(dtype=float), width, label=str(name))
    ax.set_xticks(x, cols, rotation=45 if n > 10 else 0)
    return _finish_f1_axes(fig, ax, path, title)


def per_au_ci_png(f1: Mapping[str, Sequence[float]], low: Mapping[str, Sequence[float]],
                  high: Mapping[str, Sequence[float]], aus: Sequence[int], path: str | Path,
                  title: str | None = None) -> Path:
    """Per-AU F1 (percent) of each model as points with their CI as error bars."""
    plt = _plt()
    names = list(f1)
    A, k = len(aus), len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * A + 2), 3.8))
    x = np.arange(A)
    for i, n in enumerate(names):
        v, lo, hi = (100 * np.asarray(d[n], dtype=float) for d in (f1, low, high))
        off = (i - (k - 1) / 2) * (0.7 / max(k, 1))
        ax.errorbar(x + off, v, yerr=[np.nan_to_num(v - lo), np.nan_to_num(hi - v)], fmt="o", ms=4, capsize=2,
                    label=n)
    ax.set_xticks(x, [f"AU{a}" for a in aus])
    return _finish_f1_axes(fig, ax, path, title)


def forest_png(rows: Sequence[tuple[str, float, float, float]], path: str | Path, title: str | None = None,
               xlabel: str = "difference of F1 (points)") -> Path:
    """A forest plot: one line per ``(label, estimate, low, high)``, against a line at zero."""
    plt = _plt()
    longest = max((len(r[0]) for r in rows), default=10)
    fig, ax = plt.subplots(figsize=(5 + 0.08 * longest, 0.4 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    for yi, (_label, d, lo, hi) in zip(y, rows):
        colour = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:grey"
        ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
        ax.plot([d], [yi], "o", color=colour, ms=5)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))

