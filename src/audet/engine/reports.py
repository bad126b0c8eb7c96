"""Tables in the papers' layout (rows = runs/folds, columns = AU1 .. AUn, Avg; F1 in percent)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audet.utils.io import write_json_atomic, write_text_atomic

__all__ = ["f1_table", "write_table", "write_run_report", "summary_text"]


def f1_table(rows: Mapping[str, Mapping[int, float]], aus: Sequence[int], scale: float = 100.0) -> pd.DataFrame:
    """``{row name: {au: f1 in [0,1]}}`` -> DataFrame with columns ``AU<n>`` and ``Avg`` (percent)."""
    cols = [f"AU{a}" for a in aus]
    data = []
    for per_au in rows.values():
        # an AU without test positives has F1 NaN, which results.json stores as null
        got = [per_au.get(int(a), per_au.get(str(a))) for a in aus]
        vals = [float("nan") if v is None else float(v) * scale for v in got]
        finite = [v for v in vals if not math.isnan(v)]
        data.append(vals + [float(np.mean(finite)) if finite else float("nan")])
    df = pd.DataFrame(data, index=list(rows), columns=cols + ["Avg"])
    df.index.name = "F1"
    return df


def write_table(df: pd.DataFrame, stem: str | Path, title: str | None = None, notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """``stem.md`` (Markdown, one decimal) and ``stem.csv`` (one decimal), atomically."""
    from audet.metrics import to_csv, to_markdown

    stem = Path(stem)
    md = (f"## {title}\n\n" if title else "") + to_markdown(df, decimals=1)
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    md_path, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    write_text_atomic(md_path, md)
    write_text_atomic(csv_path, to_csv(df, decimals=1))
    return md_path, csv_path


def _epoch(e, of=None) -> str:
    """An epoch for people: counted from 1, as the progress lines count them (``epoch 3/10``);
    checkpoints, results.json and histories keep Lightning's 0-based ``current_epoch``."""
    if e is None:
        return "-"
    return f"{int(e) + 1}" + (f"/{int(of)}" if of else "")


def _selection_note(results: Mapping) -> str:
    sel = results.get("selection") or {}
    return (f"model selection: {sel.get('on')} (monitor {sel.get('monitor')}, best epoch "
            f"{_epoch(sel.get('best_epoch'), results.get('epochs'))})")


def _stage_lines(results: Mapping) -> list[str]:
    out = []
    for st in results.get("stages") or []:
        best = st.get("best_score")
        score = f"best {100 * best:.1f} at epoch {_epoch(st.get('best_epoch'), st.get('epochs'))}" if best is not None else "no selection"
        kind = "collect only" if st.get("collect_only") else f"optim {st.get('optim')}"
        out.append(f"stage {st.get('index')} {st.get('name')}: {st.get('epochs')} epoch(s), {kind}, "
                   f"{st.get('trainable_params', 0):,} trainable / {st.get('frozen_params', 0):,} frozen parameters; "
                   f"{score}")
    return out


def _pretrained_lines(results: Mapping) -> list[str]:
    return [f"WARNING: {part} has RANDOM weights ({status}; allow_random_pretrained)"
            for part, status in (results.get("pretrained") or {}).items() if str(status).startswith("random")]


def write_run_report(run_dir: str | Path, results: Mapping) -> None:
    """``results.json`` plus ``report.md``/``report.csv`` with the test F1 of best and last (and,
    for a staged run, one line per stage; random pretrained parts are flagged)."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / "results.json", _jsonable(results))
    test = results.get("test") or {}
    if not test:
        return
    aus = results.get("test_aus") or results["aus"]
    rows = {}
    for which in ("best", "last"):
        if which in test:
            label = f"{results.get('model')} ({which}, epoch {_epoch(test[which].get('epoch'))})"
            rows[label] = test[which]["per_au"]
    df = f1_table(rows, aus)
    notes = [_selection_note(results), *_stage_lines(results), *_pretrained_lines(results)]
    if (results.get("selection") or {}).get("on_test"):
        notes.append("WARNING: selected on the test fold (selection.on_test=true); not comparable to "
                     "validation-selected results")
    write_table(df, run_dir / "report", title=f"{results.get('name')}: F1-frame on the test prefix", notes=notes)


def summary_text(results: Mapping) -> str:
    lines = [f"== {results.get('name')} ({results.get('model')}, recipe {results.get('recipe')}) =="]
    lines.append(f"run dir: {results.get('run_dir')}")
    lines.append(_selection_note(results))
    lines.extend(_stage_lines(results))
    lines.extend(_pretrained_lines(results))
    sel = results.get("selection") or {}
    if sel.get("best_score") is not None:
        lines.append(f"best {sel.get('monitor')}: {100 * sel['best_score']:.1f}")
    test = results.get("test") or {}
    if test:
        from audet.metrics import to_markdown

        rows = {f"test ({k}, epoch {_epoch(v.get('epoch'))})": v["per_au"] for k, v in test.items()}
        lines.append(to_markdown(f1_table(rows, results.get("test_aus") or results["aus"])).rstrip())
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
