"""audet.engine.reports and audet.engine.cv through their public functions, on small hand-made
results (no training: a fold with a results.json is not trained again)."""
from __future__ import annotations

import json
import math

import pytest

from audet.engine.cv import cross_validate, num_folds_of
from audet.engine.reports import f1_table, summary_text, write_run_report, write_table

AUS = [1, 2, 4]


def test_f1_table_in_percent_with_nan_aus_left_out_of_avg():
    df = f1_table({"a": {1: 0.5, 2: 0.25, 4: 0.75}, "b": {"1": 1.0, "2": 0.0}}, AUS)
    assert list(df.columns) == ["AU1", "AU2", "AU4", "Avg"] and list(df.index) == ["a", "b"]
    assert df.loc["a"].tolist() == [50.0, 25.0, 75.0, 50.0]
    assert df.loc["b", "AU1"] == 100.0 and df.loc["b", "AU2"] == 0.0 and math.isnan(df.loc["b", "AU4"])
    assert df.loc["b", "Avg"] == 50.0  # mean over the AUs that have a value
    assert df.index.name == "F1"


def test_write_table_markdown_and_csv(tmp_path):
    df = f1_table({"run": {1: 0.5, 2: 0.25, 4: 0.125}}, AUS)
    md, csv = write_table(df, tmp_path / "t", title="Title", notes=["a note"])
    text = md.read_text()
    assert text.startswith("## Title\n\n")
    assert "| run | 50.0 | 25.0 | 12.5 | 29.2 |" in text and text.rstrip().endswith("- a note")
    assert csv.read_text().splitlines() == ["F1,AU1,AU2,AU4,Avg", "run,50.0,25.0,12.5,29.2"]


def _results(name: str, per_au_best: dict, per_au_last: dict | None = None, best_epoch: int = 3) -> dict:
    test = {"best": {"f1": sum(per_au_best.values()) / len(per_au_best), "per_au": per_au_best, "epoch": best_epoch}}
    if per_au_last is not None:
        test["last"] = {"f1": sum(per_au_last.values()) / len(per_au_last), "per_au": per_au_last, "epoch": 5}
    return {"name": name, "model": "tiny", "aus": AUS, "recipe": "r",
            "selection": {"monitor": "val/f1", "on": "validation", "best_epoch": best_epoch, "best_score": 0.4},
            "test": test, "run_dir": "x", "score": float("nan")}  # fmt: skip


def test_write_run_report(tmp_path):
    res = _results("exp", {1: 0.5, 2: 0.25, 4: 0.75}, {1: 0.25, 2: 0.25, 4: 0.25})
    write_run_report(tmp_path, res)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"]["best"]["per_au"] == {"1": 0.5, "2": 0.25, "4": 0.75} and saved["score"] is None  # NaN -> null
    md = (tmp_path / "report.md").read_text()
    # epochs for people count from 1, as the progress line `epoch 4/6` does (results.json keeps 0-based)
    assert "| tiny (best, epoch 4) | 50.0 | 25.0 | 75.0 | 50.0 |" in md
    assert "| tiny (last, epoch 6) | 25.0 | 25.0 | 25.0 | 25.0 |" in md
    assert "model selection: validation (monitor val/f1, best epoch 4)" in md
    text = summary_text({**res, "epochs": 6})
    assert "best val/f1: 40.0" in text and "test (best, epoch 4)" in text and "best epoch 4/6" in text
    # selected on the test fold: the report says so
    res["selection"]["on_test"] = True
    write_run_report(tmp_path, res)
    md = (tmp_path / "report.md").read_text()
    assert "WARNING: test-set selection" in md and "(best, epoch 4, test-set selection)" in md
    assert "TEST-SET SELECTION" in summary_text(res)


def _config(tmp_path, root=None, dataset=None) -> dict:
    return {"name": "cvtest", "recipe": "r", "model": {"name": "tiny", "args": {}},
            "data": {"root": str(root) if root else None, "dataset": dataset, "fold": None,
                     "train_prefix": None, "test_prefix": None},
            "output": {"dir": str(tmp_path / "cv")}}  # fmt: skip


def _finished_fold(tmp_path, cfg: dict, k: int, per_au: dict) -> None:
    """A fold directory as `fit` leaves it: report, results and the manifest of its config."""
    from audet.engine.fit import run_inputs
    from audet.engine.schema import as_config
    from audet.utils.manifest import write_manifest

    c = as_config(cfg).replace(**{"data.fold": k, "data.train_prefix": None, "data.test_prefix": None})
    write_run_report(tmp_path / "cv" / f"fold{k}", _results(f"cvtest/fold{k}", per_au))
    write_manifest(tmp_path / "cv" / f"fold{k}", run_inputs(c), command="train")


def test_cross_validate_averages_finished_folds_without_training(tmp_path):
    cfg = _config(tmp_path)
    folds = {0: {1: 0.5, 2: 0.25, 4: 0.75}, 1: {1: 0.25, 2: 0.75, 4: 0.5}}
    for k, per_au in folds.items():
        _finished_fold(tmp_path, cfg, k, per_au)
    out = cross_validate(cfg, folds=[0, 1], verbose=False)
    assert out["folds"] == [0, 1] and out["aus"] == AUS
    # each AU averaged over the folds; Avg = mean over AUs
    assert out["mean"]["per_au"] == pytest.approx({1: 0.375, 2: 0.5, 4: 0.625})
    assert out["mean"]["f1"] == pytest.approx((0.375 + 0.5 + 0.625) / 3)
    md = (tmp_path / "cv" / "cv_report.md").read_text()
    assert "| fold 0 | 50.0 | 25.0 | 75.0 | 50.0 |" in md and "| Mean | 37.5 | 50.0 | 62.5 | 50.0 |" in md
    saved = json.loads((tmp_path / "cv" / "cv_results.json").read_text())
    assert saved["per_fold"]["1"]["per_au"]["2"] == 0.75
    assert cfg["data"]["fold"] is None  # the caller's config is not modified
    # only the folds asked for
    assert cross_validate(cfg, folds=[1], verbose=False)["mean"]["per_au"] == pytest.approx({1: .25, 2: .75, 4: .5})
    # folds finished with another config are not silently reused: refused before any training
    from audet.utils.manifest import OutputMismatch

    other = {**cfg, "model": {"name": "tiny", "args": {"width": 8}}}
    with pytest.raises(OutputMismatch, match=r"config.model.args.width: <unset> -> 8.*--overwrite"):
        cross_validate(other, folds=[0, 1], verbose=False)


def test_cross_validate_fold_with_an_au_without_f1(tmp_path):
    cfg = _config(tmp_path)
    folds = {0: {1: 0.5, 2: 0.25, 4: 0.75}, 1: {1: 0.25, 2: 0.75, 4: float("nan")}}
    for k, per_au in folds.items():
        _finished_fold(tmp_path, cfg, k, per_au)
    out = cross_validate(cfg, folds=[0, 1], verbose=False)
    # each AU averaged over the folds that have it (AU4: fold 0 only)
    assert out["mean"]["per_au"] == pytest.approx({1: 0.375, 2: 0.5, 4: 0.75})


def test_num_folds_of(tmp_path):
    root = tmp_path / "prep"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"dataset": "TOY", "folds": [
        {"train": "a", "test": "b"}, {"train": "c", "test": "d"}]}))  # fmt: skip
    assert num_folds_of(_config(tmp_path, root=root)) == 2  # the prepared directory's folds
    assert num_folds_of(_config(tmp_path, dataset="BP4D")) == 3  # else the dataset's convention
    assert num_folds_of(_config(tmp_path, dataset="GFT")) == 1
    with pytest.raises(ValueError, match="number of folds"):
        num_folds_of(_config(tmp_path))
