"""Tables in the papers' layout (rows = runs/folds, columns = AU1 .. AUn, Avg; F1 in percent)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audet.utils.io import write_json_atomic, write_text_atomic

__all__ = ["TEST_SELECTION", "f1_table", "per_epoch_test_table", "write_table", "write_run_report", "summary_text",
           "test_rows", "metrics_table", "metric_notes"]

#: the label every table of a run selected on the test fold carries (``selection.on_test``)
TEST_SELECTION = "test-set selection"


def _on_test(results: Mapping) -> bool:
    return bool((results.get("selection") or {}).get("on_test"))


def per_epoch_test_table(results: Mapping) -> pd.DataFrame | None:
    """Per-epoch F1-frame on the test fold (``test/f1_AU<n>`` of the history; percent), one row per
    epoch as the published test scripts print them, or None when the run did not score the test
    fold every epoch (``selection.on_test`` false)."""
    aus = results.get("aus") or []
    rows = {}
    for h in results.get("history") or []:
        per_au = {int(a): h.get(f"test/f1_AU{a}") for a in aus}
        if any(v is not None for v in per_au.values()):
            rows[f"epoch {_epoch(h.get('epoch'))}"] = {a: v for a, v in per_au.items() if v is not None}
    if not rows:
        return None
    df = f1_table(rows, aus)
    df.index.name = f"F1 ({TEST_SELECTION})"
    return df


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


def write_table(df: pd.DataFrame, stem: str | Path, title: str | None = None, notes: Sequence[str] = (),
                more: Sequence[tuple[str, pd.DataFrame]] = ()) -> tuple[Path, Path]:
    """``stem.md`` (Markdown, one decimal) and ``stem.csv`` (one decimal), atomically. ``more``:
    further ``(title, table)`` pairs appended to the Markdown only (the CSV holds ``df``)."""
    from audet.metrics import to_csv, to_markdown

    stem = Path(stem)
    md = (f"## {title}\n\n" if title else "") + to_markdown(df, decimals=1)
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    for sub, table in more:
        md += f"\n### {sub}\n\n" + to_markdown(table, decimals=1)
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
    tag = f"{TEST_SELECTION.upper()}: " if sel.get("on_test") else ""
    return (f"model selection: {tag}{sel.get('on')} (monitor {sel.get('monitor')}, best epoch "
            f"{_epoch(sel.get('best_epoch'), results.get('epochs'))})")


def _stage_lines(results: Mapping) -> list[str]:
    out = []
    for st in results.get("stages") or []:
        best = st.get("best_score")
        score = f"best {100 * best:.1f} at epoch {_epoch(st.get('best_epoch'), st.get('epochs'))}" if best is not None else "no selection"
        kind = ("collect only" if st.get("collect_only") else
                f"labels only, optim {st.get('optim')}" if st.get("labels_only") else f"optim {st.get('optim')}")
        out.append(f"stage {st.get('index')} {st.get('name')}: {st.get('epochs')} epoch(s), {kind}, "
                   f"{st.get('trainable_params', 0):,} trainable / {st.get('frozen_params', 0):,} frozen parameters; "
                   f"{score}")
    return out


def _pretrained_lines(results: Mapping) -> list[str]:
    return [f"WARNING: {part} has RANDOM weights ({status}; allow_random_pretrained)"
            for part, status in (results.get("pretrained") or {}).items() if str(status).startswith("random")]


def test_rows(results: Mapping, label: str | None = None) -> dict[str, Mapping]:
    """Rows of F1 per AU of the test results: best and last at 0.5 and, beside each, at the
    thresholds chosen on the validation split (when the checkpoint holds them)."""
    test = results.get("test") or {}
    rows: dict[str, Mapping] = {}
    for which in ("best", "last"):
        if which not in test:
            continue
        tag = f", {TEST_SELECTION}" if _on_test(results) else ""
        name = f"{label or results.get('model')} ({which}, epoch {_epoch(test[which].get('epoch'))}{tag})"
        rows[name] = test[which]["per_au"]
        tuned = test[which].get("tuned")
        if tuned:
            rows[f"{name}, validation thresholds"] = tuned["per_au"]
    return rows


def metrics_table(entries: Mapping[str, Mapping], aus: Sequence[int]) -> pd.DataFrame:
    """Per-AU ROC-AUC and average precision (percent) of test results ``{name: result}``."""
    rows = {}
    for name, r in entries.items():
        for key, label in (("auc", "ROC-AUC"), ("ap", "AP")):
            if r.get(key):
                rows[f"{label} {name}".strip()] = r[key]
    df = f1_table(rows, aus)
    df.index.name = "metric"
    return df


def metric_notes(entries: Mapping[str, Mapping]) -> list[str]:
    """One line per result: F1-micro (and at the validation thresholds) beside the F1-frame mean."""
    out = []
    for name, r in entries.items():
        if r.get("f1_micro") is None:
            continue
        line = f"{name}: F1-frame (mean over AUs) {_pct(r.get('f1'))}, F1-micro {_pct(r.get('f1_micro'))}"
        tuned = r.get("tuned")
        if tuned:
            thr = ", ".join(f"AU{a} {float(v):.2f}" for a, v in tuned["thresholds"].items())
            line += (f"; at the validation thresholds F1-frame {_pct(tuned.get('f1'))}, F1-micro "
                     f"{_pct(tuned.get('f1_micro'))} (thresholds {thr})")
        out.append(line)
    return out


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def write_run_report(run_dir: str | Path, results: Mapping) -> None:
    """``results.json`` plus ``report.md``/``report.csv`` with the test F1 of best and last (and,
    for a staged run, one line per stage; random pretrained parts are flagged), each at 0.5 and at
    the validation thresholds, ROC-AUC/AP per AU and F1-micro; ``curves.png`` (losses, validation
    F1 per epoch) and ``per_au.png`` (the table as bars) beside them."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / "results.json", _jsonable(results))
    test = results.get("test") or {}
    if not test:
        return
    aus = results.get("test_aus") or results["aus"]
    df = f1_table(test_rows(results), aus)
    notes = [_selection_note(results), *_stage_lines(results), *_pretrained_lines(results)]
    if (results.get("f1_convention") or "paper") != "paper":
        notes.append(f"F1 under the published code's {results['f1_convention']!r} convention "
                     "(selection.f1_convention; docs/metrics.md), not the papers' F1-frame")
    title = f"{results.get('name')}: F1-frame on the test prefix"
    if _on_test(results):
        title += f" ({TEST_SELECTION.upper()})"
        notes.append(f"WARNING: {TEST_SELECTION}: the best epoch was chosen on the test fold (selection.on_test=true, "
                     "the published code's habit); optimistic, not comparable to validation-selected results")
    entries = {which: test[which] for which in ("best", "last") if which in test}
    notes += metric_notes(entries)
    if any(r.get("tuned") for r in entries.values()):
        notes.append("thresholds chosen per AU on the validation split (held-out training subjects), stored in "
                     "best.json/last.json; the 0.5 rows are the headline")
    more = []
    mt = metrics_table(entries, aus)
    if len(mt):
        more.append(("threshold-free metrics on the test prefix (percent)", mt))
    write_table(df, run_dir / "report", title=title, notes=notes, more=more)
    per_epoch = per_epoch_test_table(results)
    if per_epoch is not None:
        write_table(per_epoch, run_dir / "report_epochs",
                    title=f"{results.get('name')}: F1-frame on the test fold after every epoch ({TEST_SELECTION.upper()})",
                    notes=[(f"{TEST_SELECTION}: every epoch scored on the test fold, as the published test scripts "
                            "do; the best row is what test-set selection reports")])
    from audet.engine.figures import learning_curves_png, per_au_png

    learning_curves_png([run_dir], run_dir / "curves.png", title=str(results.get("name")))
    per_au_png(df, run_dir / "per_au.png", title=f"{results.get('name')}: F1-frame per AU (test)")


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

        rows = test_rows(results, "test")
        lines.append(to_markdown(f1_table(rows, results.get("test_aus") or results["aus"])).rstrip())
        lines.extend(metric_notes({f"test ({k})": v for k, v in test.items()}))
    per_epoch = per_epoch_test_table(results)
    if per_epoch is not None:
        lines.append(f"per-epoch F1 on the test fold ({TEST_SELECTION}):")
        lines.append(to_markdown(per_epoch).rstrip())
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
