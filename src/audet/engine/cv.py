"""``cross_validate(config)``: the subject-exclusive folds of ``dataset.json``, one table.

Each fold ``k`` trains in ``<run_dir>/fold<k>`` (``data.fold=k``); a fold whose
``results.json`` exists is not trained again, and an interrupted fold resumes from its
``last.ckpt`` -- so ``audet cv`` can be re-run after a kill. The table has one row per fold and a
``Mean`` row (each AU averaged over folds, Avg = mean over AUs: :func:`audet.metrics.mean_over_folds`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from audet.data.meta import read_dataset_meta
from audet.engine.fit import fit, run_dir_of
from audet.engine.schema import Config, as_config
from audet.utils.io import write_json_atomic

__all__ = ["cross_validate", "num_folds_of"]

log = logging.getLogger(__name__)


def num_folds_of(config: Config | Mapping) -> int:
    config = as_config(config)
    root = config.data.root
    meta = read_dataset_meta(root, required=False) if root else {}
    folds = meta.get("folds")
    if isinstance(folds, list) and folds:
        return len(folds)
    if isinstance(folds, int):
        return folds
    if isinstance(meta.get("num_folds"), int):
        return int(meta["num_folds"])
    ds = config.data.dataset or meta.get("dataset")
    if ds:
        from audet.data.folds import num_folds

        return num_folds(ds)
    raise ValueError(f"cannot tell the number of folds of {root}: no 'folds' in dataset.json and no data.dataset")


def cross_validate(config: Config | Mapping, *, folds: Sequence[int] | None = None, verbose: bool = True,
                   callbacks: Sequence = ()) -> dict:
    """Train every fold (skipping finished ones) and write ``cv_report.md/.csv`` + ``cv_results.json``."""
    import pandas as pd

    from audet.engine.reports import f1_table, write_table
    from audet.metrics import mean_over_folds

    config = as_config(config)
    base_dir = run_dir_of(config)
    ks = list(folds) if folds is not None else list(range(num_folds_of(config)))
    per_fold: dict[int, dict] = {}
    for k in ks:
        cfg = config.replace(**{"data.fold": int(k), "data.train_prefix": None, "data.test_prefix": None,
                                "output.dir": str(base_dir / f"fold{k}"), "name": f"{config.name}/fold{k}"})
        done = Path(cfg.output.dir) / "results.json"
        if done.is_file() and json.loads(done.read_text()).get("test"):
            if verbose:
                log.info(f"fold {k}: finished earlier ({done}); not retrained")
            per_fold[k] = json.loads(done.read_text())
            continue
        if verbose:
            log.info(f"== fold {k} ==")
        per_fold[k] = fit(cfg, verbose=verbose, callbacks=callbacks)

    aus = next(iter(per_fold.values()))["aus"]
    out: dict = {"name": config.name, "folds": ks, "aus": aus, "selection": None, "per_fold": {}}
    tables = []
    rows = {}
    for k in ks:
        r = per_fold[k]
        out["selection"] = r.get("selection")
        best = (r.get("test") or {}).get("best")
        if best is None:
            continue
        per_au = {int(a): v for a, v in best["per_au"].items()}
        rows[f"fold {k}"] = per_au
        out["per_fold"][str(k)] = {"f1": best["f1"], "per_au": per_au, "epoch": best.get("epoch")}
        tables.append(f1_table({"F1": per_au}, aus))  # same row name in every fold for the mean
    if tables:
        mean = mean_over_folds(tables)
        mean.index = ["Mean"]
        df = pd.concat([f1_table(rows, aus), mean])
        df.index.name = "F1"
        out["mean"] = {"per_au": {a: float(mean[f"AU{a}"].iloc[0]) / 100 for a in aus},
                       "f1": float(mean["Avg"].iloc[0]) / 100}
        sel = out.get("selection") or {}
        notes = [f"{config.model.name}, recipe {config.recipe}; best checkpoint of each fold selected on: "
                 f"{sel.get('on')}"]
        title = f"{config.name}: F1-frame, {len(tables)}-fold CV"
        if sel.get("on_test"):
            from audet.engine.reports import TEST_SELECTION

            title += f" ({TEST_SELECTION.upper()})"
            df.index.name = f"F1 ({TEST_SELECTION})"
            notes.append(f"WARNING: {TEST_SELECTION}: each fold's best epoch was chosen on its test fold "
                         "(selection.on_test=true); optimistic, not comparable to validation-selected results")
        write_table(df, base_dir / "cv_report", title=title, notes=notes)
        if verbose:
            from audet.metrics import to_markdown

            log.info(to_markdown(df))
    write_json_atomic(base_dir / "cv_results.json", out)
    return out
