"""Metrics beside F1-frame and per-AU thresholds chosen on the validation split (issue 18, item 3)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from audet.metrics import (average_precision_per_au, bootstrap_f1_ci, choose_thresholds, f1_micro,
                           roc_auc_per_au)
from helpers import tensor_config, tensor_datamodule


def test_f1_micro_pools_every_decision_by_hand():
    y = np.array([[1, 0], [1, 9], [0, 1], [0, 0]])
    s = np.array([[0.9, 0.6], [0.2, 0.9], [0.7, 0.8], [0.1, 0.1]])
    # AU a: TP 1, FN 1, FP 1; AU b (row 1 unknown): TP 1, FP 1 -> pooled TP 2, FP 2, FN 1
    assert f1_micro(y, s) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # per-AU thresholds: AU a at 0.15 -> TP 2, FP 1; AU b at 0.7 -> TP 1, FP 0
    assert f1_micro(y, s, threshold=[0.15, 0.7]) == pytest.approx(2 * 3 / (2 * 3 + 1))


def test_auc_and_ap_equal_scikit_learn_on_the_known_frames():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 3)) < 0.4).astype(int)
    y[:5, 1] = 9
    y[:, 2] = 0  # one class only: undefined
    s = rng.random((60, 3))
    auc, ap = roc_auc_per_au(y, s), average_precision_per_au(y, s)
    k = y[:, 1] != 9
    assert auc[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert auc[1] == pytest.approx(roc_auc_score(y[k, 1], s[k, 1]))
    assert ap[1] == pytest.approx(average_precision_score(y[k, 1], s[k, 1]))
    assert np.isnan(auc[2]) and np.isnan(ap[2])


def test_choose_thresholds_maximises_f1_and_keeps_05_without_positives():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    s = np.array([[0.3, 0.9], [0.35, 0.2], [0.1, 0.4], [0.2, 0.1]])
    t = choose_thresholds(y, s)
    assert 0.2 < t[0] <= 0.3  # separates 0.3/0.35 from 0.1/0.2; the grid value nearest 0.5 is 0.3
    assert t[0] == pytest.approx(0.3)
    assert t[1] == 0.5  # no positive: the default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert f1_score(y[:, 0], s[:, 0] >= t[0]) == 1.0


def test_bootstrap_f1_ci_brackets_the_point_and_resamples_groups():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 2)) < 0.4).astype(int)
    s = np.clip(y * 0.3 + rng.random((200, 2)) * 0.6, 0, 1)
    f1, lo, hi = bootstrap_f1_ci(y, s, groups=np.arange(200) // 20, n_boot=200)
    assert f1[0] == pytest.approx(f1_score(y[:, 0], s[:, 0] >= 0.5))
    assert np.all(lo <= f1) and np.all(f1 <= hi) and np.all(hi - lo > 0)


def _fit(tmp_path, name, dm):
    from audet.engine.fit import fit

    cfg = tensor_config(tmp_path / name, **{"trainer.max_epochs": 2})
    return fit(cfg, datamodule=dm, verbose=False)


def test_calibration_never_reads_the_test_fold(tmp_path):
    """Poisoning the test fold's labels AND images changes the test scores but not one threshold."""
    clean = _fit(tmp_path, "clean", tensor_datamodule())
    dm = tensor_datamodule()
    ds = dm.test_dataset
    ds.y = 1.0 - ds.y  # every test label flipped
    ds.x = ds.x.flip(-1) * 3.0  # and the images changed, so the test probabilities move too
    poisoned = _fit(tmp_path, "poisoned", dm)
    for which in ("best", "last"):
        a = json.loads((tmp_path / "clean" / f"{which}.json").read_text())["thresholds"]
        b = json.loads((tmp_path / "poisoned" / f"{which}.json").read_text())["thresholds"]
        assert a == b and a["chosen_on"].startswith("validation")
        assert len(a["values"]) == 3 and a["n_frames"] == 16  # the 16 validation frames
    t_clean, t_bad = clean["test"]["best"], poisoned["test"]["best"]
    assert t_clean["per_au"] != t_bad["per_au"]  # the poison reached the test scores
    # the test result carries both: 0.5 (headline) and the stored validation thresholds beside it
    thr = json.loads((tmp_path / "clean" / "best.json").read_text())["thresholds"]
    assert list(t_clean["tuned"]["thresholds"].values()) == thr["values"]
    for key in ("f1_micro", "auc", "ap"):
        assert key in t_clean
    report = (tmp_path / "clean" / "report.md").read_text()
    assert "validation thresholds" in report and "F1-micro" in report and "ROC-AUC" in report
    assert (tmp_path / "clean" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "clean" / "per_au.png").stat().st_size > 1000
