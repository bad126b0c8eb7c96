"""``compare``: several checkpoints on one prepared test split, one table, paired bootstrap CIs.

Every model is scored on the same frames (every labelled frame once, aligned by (sequence,
frame), so frame and clip models compare frame by frame) on the AUs all of them and the data share.
The table has one row per model plus the all-present prior (every AU predicted on every frame, the
F1 floor of a detector that learned nothing); each model's difference of mean F1 to the first
(reference) model gets a paired cluster-bootstrap CI that resamples SUBJECTS (frames of one subject
are not independent; the folds are split on subjects). Figures: per-AU F1 with bootstrap CIs
(:func:`audet.engine.figures.per_au_ci_png`) and a forest plot of the differences
(:func:`audet.engine.figures.forest_png`). ``benchmarks/compare_models.py`` trains models with one
config and compares them through this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Scored", "resolve_checkpoint", "score_checkpoints", "compare_scored", "write_comparison"]


@dataclass
class Scored:
    """Aligned per-frame outputs of several models: ``probs[name]`` ``(N, A)``, ``labels``/``mask``
    ``(N, A)``, ``keys`` ``(N, 2)`` (sequence index, frame), ``subjects`` ``(N,)`` names, ``aus``."""

    probs: dict[str, np.ndarray]
    labels: np.ndarray
    mask: np.ndarray
    keys: np.ndarray
    subjects: np.ndarray
    aus: list[int]
    prefix: str
    data: str


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A checkpoint file, or a run folder's ``<which>.safetensors``."""
    p = Path(path)
    if p.is_dir():
        ck = p / f"{which}.safetensors"
        if not ck.is_file():
            raise FileNotFoundError(f"{p}: a folder without {which}.safetensors; give a run folder of `audet train` "
                                    "or a checkpoint file")
        return ck
    if not p.exists() and not p.with_suffix(".safetensors").exists():
        raise FileNotFoundError(f"{p}: no such checkpoint or run folder")
    return p


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the shortest trailing part of each run folder's path (the folder of a
    ``best``/``last`` checkpoint, else the file without suffix) that tells them apart."""
    stems = [(p.parent if p.stem in ("best", "last") else p.with_suffix("")).resolve().parts for p in paths]
    for n in range(1, max(len(s) for s in stems) + 1):
        names = ["/".join(s[-n:]) for s in stems]
        if len(set(names)) == len(names):
            return names
    return [f"{s[-1]}#{i + 1}" for i, s in enumerate(stems)]  # the same checkpoint twice


def score_checkpoints(checkpoints: Mapping[str, str | Path] | Sequence[str | Path], root: str | Path, prefix: str, *,
                      which: str = "best", batch_size: int = 64, num_workers: int = 0, device: str = "cpu") -> Scored:
    """Score each checkpoint on ``root``/``prefix`` (shared AUs) and align the rows by frame."""
    from torch.utils.data import DataLoader

    from audet.data.meta import data_aus
    from audet.facs import resolve_aus
    from audet.models.checkpoint import load_checkpoint
    from audet.engine.evaluate import eval_dataset, run_evaluator
    from audet.engine.scoring import AUEvaluator

    if not isinstance(checkpoints, Mapping):
        paths = [resolve_checkpoint(c, which) for c in checkpoints]
        checkpoints = dict(zip(_labels(paths), paths))
    if len(checkpoints) < 1:
        raise ValueError("give at least one checkpoint")
    models = {n: load_checkpoint(resolve_checkpoint(p, which), map_location=device) for n, p in checkpoints.items()}
    have = data_aus(root, required=True)
    aus = [a for a in have if all(a in (m.aus or []) for m in models.values())]
    if not aus:
        raise ValueError(f"the checkpoints and the data ({have}) share no AU")
    probs: dict[str, np.ndarray] = {}
    labels = mask = keys = subjects = None
    for name, model in models.items():
        _, cols = resolve_aus([int(a) for a in model.aus], aus, source=f"checkpoint {name}")  # the one AU -> column owner
        ds = eval_dataset(root, prefix, aus, model.preprocess)
        ev = run_evaluator(model, DataLoader(ds, batch_size=batch_size, num_workers=num_workers),
                           AUEvaluator(aus, cols), device)
        p, y, m = ev.arrays()
        k = ev.keys()
        order = np.lexsort((k[:, 1], k[:, 0]))
        p, y, m, k = p[order], y[order], m[order], k[order]
        if keys is not None and not np.array_equal(keys, k):
            raise ValueError(f"{name} scored other frames than {next(iter(models))}: not comparable")
        probs[name] = p
        labels, mask, keys = y, m, k
        subjects = np.array([str(ds.sequences[int(i)]).split("/")[0] for i in k[:, 0]])
    return Scored(probs, labels, mask, keys, subjects, aus, prefix, str(root))


def compare_scored(s: Scored, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """The table (prior + models, F1 percent per AU and Avg), per-AU bootstrap CIs per model, and the
    paired subject-bootstrap difference of each model's mean F1 to the first (reference) model."""
    from audet.metrics import au_report, bootstrap_f1_ci, paired_bootstrap_f1_diff

    lab = np.where(s.mask > 0, s.labels, 9)
    rows = []
    t = au_report(lab, np.ones_like(s.labels), s.aus)
    t.index = ["prior (all present)"]
    rows.append(t)
    names = list(s.probs)
    per_au = {}
    for n in names:
        t = au_report(lab, s.probs[n], s.aus)
        t.index = [n]
        rows.append(t)
        per_au[n] = bootstrap_f1_ci(lab, s.probs[n], groups=s.subjects, n_boot=n_boot, seed=seed, ci=ci)
    df = pd.concat(rows)
    df.index.name = "F1"
    ref = names[0]
    diffs = []
    for n in names[1:]:
        b = paired_bootstrap_f1_diff(lab, s.probs[n], s.probs[ref], n_boot=n_boot, seed=seed, groups=s.subjects, ci=ci)
        diffs.append({"model": n, "reference": ref, "f1": 100 * b.f1_a, "diff": 100 * b.diff, "low": 100 * b.low,
                      "high": 100 * b.high, "p_value": b.p_value})
    prior = paired_bootstrap_f1_diff(lab, s.probs[ref], np.ones_like(s.labels, dtype=np.float64), n_boot=n_boot,
                                     seed=seed, groups=s.subjects, ci=ci)
    return {"table": df, "per_au_ci": per_au, "diffs": diffs, "reference": ref, "n_subjects": int(len(set(s.subjects))),
            "n_frames": int(len(s.subjects)), "n_boot": n_boot, "ci": ci,
            "prior": {"diff": 100 * prior.diff, "low": 100 * prior.low, "high": 100 * prior.high}}


def write_comparison(out: str | Path, s: Scored, res: dict, notes: Sequence[str] = ()) -> list[Path]:
    """``out/comparison.md/.csv`` (table + differences), ``out/per_au_ci.png``, ``out/forest.png``."""
    from audet.engine.figures import forest_png, per_au_ci_png
    from audet.metrics import to_markdown
    from audet.utils.io import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ci = f"{100 * res['ci']:.0f}%"
    lines = [f"# {Path(s.data).name}, test prefix {s.prefix}: F1-frame (%), {res['n_frames']} frames, "
             f"{res['n_subjects']} subjects\n", to_markdown(res["table"]), "",
             f"Paired cluster bootstrap over {res['n_subjects']} test SUBJECTS ({res['n_boot']} resamples), "
             f"difference of mean F1 to {res['reference']} (points):\n",
             f"| model | mean F1 | diff to {res['reference']} | {ci} CI | P(diff <= 0) |", "|---|---:|---:|---:|---:|"]
    for d in res["diffs"]:
        lines.append(f"| {d['model']} | {d['f1']:.1f} | {d['diff']:+.1f} | [{d['low']:+.1f}, {d['high']:+.1f}] | "
                     f"{d['p_value']:.3f} |")
    p = res["prior"]
    lines += ["", f"{res['reference']} vs the all-present prior: {p['diff']:+.1f} [{p['low']:+.1f}, {p['high']:+.1f}] "
              f"({ci} CI, same bootstrap).", *notes]
    write_text_atomic(out / "comparison.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "comparison.csv", res["table"].to_csv(float_format="%.1f"))
    names = list(s.probs)
    pc = res["per_au_ci"]
    figs = [per_au_ci_png({n: pc[n][0] for n in names}, {n: pc[n][1] for n in names}, {n: pc[n][2] for n in names},
                          s.aus, out / "per_au_ci.png",
                          title=f"F1 per AU with {ci} subject-bootstrap CIs ({res['n_subjects']} subjects)")]
    rows = [(f"{d['model']} - {d['reference']}", d["diff"], d["low"], d["high"]) for d in res["diffs"]]
    rows.append((f"{res['reference']} - prior", p["diff"], p["low"], p["high"]))
    figs.append(forest_png(rows, out / "forest.png", title=f"difference of mean F1, {ci} paired subject bootstrap"))
    return [out / "comparison.md", out / "comparison.csv", *figs]
