"""F1-frame conventions, reports, fold means and the paired bootstrap."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from audet.metrics import (
    au_report,
    f1_frame,
    mean_over_folds,
    paired_bootstrap_f1_diff,
    precision_recall_accuracy,
    to_csv,
    to_markdown,
)

# A tiny example, 6 frames x 3 AUs (9 = missing):
#  AU0: y 1 1 0 0 9 0, s .9 .4 .6 .1 .9 .5 -> (>=.5) tp=1 fn=1 fp=2 (frames 2 and 5) tn=1
#  AU1: no positive label; one false positive (s=.7)         -> tp=0 fn=0 fp=1 tn=5
#  AU2: y 1 0 1 9 1 0, s .8 .2 .7 .99 .3 .1 -> tp=2 fn=1 fp=0 tn=1
TINY_Y = np.array(
    [
        [1, 0, 1],
        [1, 0, 0],
        [0, 0, 1],
        [0, 0, 9],
        [9, 0, 1],
        [0, 0, 0],
    ]
)
TINY_S = np.array(
    [
        [0.9, 0.1, 0.8],
        [0.4, 0.2, 0.2],
        [0.6, 0.7, 0.7],
        [0.1, 0.1, 0.99],
        [0.9, 0.1, 0.3],
        [0.5, 0.1, 0.1],
    ]
)


def _random(seed, n=400, a=5, missing=0.1):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, a)) < rng.uniform(0.05, 0.5, a)).astype(np.int64)
    y[rng.random((n, a)) < missing] = 9
    s = rng.random((n, a))
    return y, s


# ---------------------------------------------------------------------------------- f1_frame
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_f1_paper_equals_sklearn_with_missing_labels(seed):
    y, s = _random(seed)
    got = f1_frame(y, s)
    for j in range(y.shape[1]):
        keep = y[:, j] != 9
        ref = f1_score(y[keep, j], (s[keep, j] >= 0.5).astype(int), zero_division=0)
        assert got[j] == pytest.approx(ref, abs=1e-12)
    # labels + mask and torch tensors give the same values
    mask = y != 9
    y0 = np.where(mask, y, 0)
    np.testing.assert_allclose(f1_frame(y0, s, mask=mask), got)
    np.testing.assert_allclose(f1_frame(torch.from_numpy(y), torch.from_numpy(s)), got)


def test_f1_other_threshold_equals_sklearn():
    y, s = _random(7)
    got = f1_frame(y, s, threshold=0.3)
    for j in range(y.shape[1]):
        keep = y[:, j] != 9
        ref = f1_score(y[keep, j], (s[keep, j] >= 0.3).astype(int), zero_division=0)
        assert got[j] == pytest.approx(ref)


def test_f1_tiny_paper():
    # AU0: 2*1/(2*1+2+1) = 0.4 ; AU1: no positives -> 0 ; AU2: 2*2/(2*2+0+1) = 0.8
    np.testing.assert_allclose(f1_frame(TINY_Y, TINY_S), [0.4, 0.0, 0.8])


def test_f1_tiny_cis():
    # strict '>': frame 5 of AU0 (s = .5) is no longer a positive prediction -> tp=1 fp=1 fn=1
    p0, r0 = 1 / (2 + 1e-6), 0.5
    p2, r2 = 2 / (2 + 1e-6), 2 / 3
    expected = [2 * p0 * r0 / (p0 + r0 + 1e-6), -1.0, 2 * p2 * r2 / (p2 + r2 + 1e-6)]
    np.testing.assert_allclose(f1_frame(TINY_Y, TINY_S, convention="cis"), expected, rtol=1e-12)


def test_f1_tiny_aunet():
    # tp = [1, 0, 2], GT = tp+fn = [2, 0, 3], PR = tp+fp = [3, 1, 2]
    # min GT == 0 -> GT + 1 for every AU: [3, 1, 4]; min PR = 1 -> unchanged;
    # min tp == 0 -> tp + 0.01 for every AU: [1.01, 0.01, 2.01]
    tp = np.array([1.01, 0.01, 2.01])
    r = tp / np.array([3.0, 1.0, 4.0])
    p = tp / np.array([3.0, 1.0, 2.0])
    expected = 2 * r * p / (r + p)
    got = f1_frame(TINY_Y, TINY_S, convention="aunet")
    np.testing.assert_allclose(got, expected)
    assert got[0] == pytest.approx(1.01 / 3) and got[1] == pytest.approx(0.01)


def test_f1_aunet_equals_paper_without_degenerate_aus():
    y, s = _random(11, n=2000, a=4, missing=0.0)
    np.testing.assert_allclose(f1_frame(y, s, convention="aunet"), f1_frame(y, s))


def test_f1_au_without_annotation_is_nan():
    y = TINY_Y.copy()
    y[:, 1] = 9
    with pytest.warns(UserWarning, match="no annotated frame"):
        f1 = f1_frame(y, TINY_S)
    assert np.isnan(f1[1]) and f1[0] == pytest.approx(0.4)


def test_f1_rejects_logits_and_unknown_convention():
    with pytest.raises(ValueError, match="probabilities"):
        f1_frame(TINY_Y, TINY_S * 4 - 2)
    with pytest.raises(ValueError):
        f1_frame(TINY_Y, TINY_S, convention="macro")


def test_f1_accepts_clips():
    y, s = _random(5, n=60, a=3)
    np.testing.assert_allclose(f1_frame(y.reshape(6, 10, 3), s.reshape(6, 10, 3)), f1_frame(y, s))


def test_precision_recall_accuracy_tiny():
    p, r, a = precision_recall_accuracy(TINY_Y, TINY_S)
    np.testing.assert_allclose(p, [1 / 3, 0.0, 1.0])
    np.testing.assert_allclose(r, [1 / 2, 0.0, 2 / 3])
    np.testing.assert_allclose(a, [2 / 5, 5 / 6, 4 / 5])


# ----------------------------------------------------------------------------------- reports
def test_au_report_layout_and_formatting():
    df = au_report(TINY_Y, TINY_S, [1, 2, 4], metrics=("F1", "Accuracy"))
    assert list(df.columns) == ["AU1", "AU2", "AU4", "Avg"]
    assert list(df.index) == ["F1", "Accuracy"]
    np.testing.assert_allclose(df.loc["F1"].to_numpy(), [40.0, 0.0, 80.0, 40.0])
    md = to_markdown(df)
    assert md.splitlines()[0] == "| metric | AU1 | AU2 | AU4 | Avg |"
    assert "| F1 | 40.0 | 0.0 | 80.0 | 40.0 |" in md
    assert "| Accuracy | 40.0 | 83.3 | 80.0 | 67.8 |" in md
    csv = to_csv(df)
    assert csv.splitlines()[1] == "F1,40.0,0.0,80.0,40.0"


def test_au_report_cis_leaves_undefined_au_out_of_avg(tmp_path):
    df = au_report(TINY_Y, TINY_S, [1, 2, 4], convention="cis")
    assert np.isnan(df.loc["F1", "AU2"])
    assert df.loc["F1", "Avg"] == pytest.approx((df.loc["F1", "AU1"] + df.loc["F1", "AU4"]) / 2)
    assert "| - |" in to_markdown(df)
    path = tmp_path / "r.csv"
    to_csv(df, path)
    assert pd.read_csv(path, index_col=0).shape == (1, 4)


def test_mean_over_folds_arrays_and_frames():
    per_au, avg = mean_over_folds([np.array([0.2, 0.4]), np.array([0.4, 0.8]), np.array([0.3, 0.6])])
    np.testing.assert_allclose(per_au, [0.3, 0.6])
    assert avg == pytest.approx(0.45)
    f1 = au_report(TINY_Y, TINY_S, [1, 2, 4])
    f2 = f1.copy()
    f2.loc["F1", ["AU1", "AU2", "AU4"]] = [60.0, 20.0, 40.0]
    out = mean_over_folds([f1, f2])
    np.testing.assert_allclose(out.loc["F1"].to_numpy(), [50.0, 10.0, 60.0, 40.0])


# --------------------------------------------------------------------------------- bootstrap
def _two_models(seed=0, n=3000, a=6, gap=0.15):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, a)) < 0.3).astype(int)
    noise = rng.normal(0, 0.25, (n, a))
    good = np.clip(np.where(y == 1, 0.5 + gap, 0.5 - gap) + noise, 0, 1)
    bad = np.clip(np.where(y == 1, 0.52, 0.48) + rng.normal(0, 0.25, (n, a)), 0, 1)
    return y, good, bad


def test_bootstrap_identical_models():
    y, s, _ = _two_models()
    r = paired_bootstrap_f1_diff(y, s, s, n_boot=200)
    assert r.diff == 0.0 and r.low <= 0.0 <= r.high
    assert r.low == 0.0 and r.high == 0.0 and r.p_value == 1.0


def test_bootstrap_clearly_better_model():
    y, good, bad = _two_models()
    r = paired_bootstrap_f1_diff(y, good, bad, n_boot=300)
    ref = f1_frame(y, good).mean() - f1_frame(y, bad).mean()
    assert r.diff == pytest.approx(ref)
    assert r.f1_a == pytest.approx(f1_frame(y, good).mean())
    assert r.low > 0 and r.high > r.low and r.p_value == 0.0
    worse = paired_bootstrap_f1_diff(y, bad, good, n_boot=300)
    assert worse.high < 0 and worse.p_value == 1.0


def test_bootstrap_is_deterministic_for_a_seed():
    y, good, bad = _two_models(gap=0.02)
    a = paired_bootstrap_f1_diff(y, good, bad, n_boot=100, seed=3)
    b = paired_bootstrap_f1_diff(y, good, bad, n_boot=100, seed=3)
    c = paired_bootstrap_f1_diff(y, good, bad, n_boot=100, seed=4)
    np.testing.assert_array_equal(a.diffs, b.diffs)
    assert (a.low, a.high, a.p_value) == (b.low, b.high, b.p_value)
    assert not np.array_equal(a.diffs, c.diffs)


def test_block_bootstrap_widens_ci_for_correlated_frames():
    # 20 sequences of 200 frames; how much better or worse model a is than b varies per sequence
    # (shared shift q), so the frames of a sequence are not independent evidence. The frame
    # bootstrap then claims a clear difference; resampling whole sequences does not.
    rng = np.random.default_rng(1)
    n_seq, per = 20, 200
    groups = np.repeat(np.arange(n_seq), per)
    y = (rng.random((n_seq * per, 3)) < 0.3).astype(int)
    base = np.where(y == 1, 0.65, 0.35)
    q = rng.normal(0, 0.08, n_seq)[groups][:, None]
    a = np.clip(base + q * (2 * y - 1) + rng.normal(0, 0.1, y.shape), 0, 1)
    b = np.clip(base + rng.normal(0, 0.1, y.shape), 0, 1)
    frame = paired_bootstrap_f1_diff(y, a, b, n_boot=300, seed=1)
    block = paired_bootstrap_f1_diff(y, a, b, n_boot=300, seed=1, groups=groups)
    assert frame.unit == "frame" and frame.n_units == n_seq * per
    assert block.unit == "group" and block.n_units == n_seq
    assert block.diff == frame.diff
    assert (block.high - block.low) > 3 * (frame.high - frame.low)
    assert frame.high < 0  # spuriously "significant"
    assert block.low < 0 < block.high


def test_bootstrap_groups_accept_strings_and_masks():
    y, good, bad = _two_models(n=600, a=3)
    y[::7, 1] = 9
    subj = np.array([f"F{i % 12:03d}" for i in range(len(y))])
    r = paired_bootstrap_f1_diff(y, good, bad, n_boot=50, groups=subj)
    assert r.n_units == 12
    assert r.diff == pytest.approx(f1_frame(y, good).mean() - f1_frame(y, bad).mean())


def test_compare_with_prior_by_hand():
    from audet.metrics import compare_with_prior, prior_comparison_text

    # AU0: 2 of 4 present, AU1: 1 of 4 present; the model is perfect on both
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 0]], dtype=float)
    r = compare_with_prior(y, y * 0.9 + 0.05, n_boot=200, groups=[0, 0, 1, 1])
    prior = np.mean([2 * 0.5 / 1.5, 2 * 0.25 / 1.25])  # 2r / (1 + r)
    assert r.f1_a == pytest.approx(1.0) and r.f1_b == pytest.approx(prior)
    assert r.diff == pytest.approx(1.0 - prior) and r.n_units == 2 and r.unit == "group"
    text = prior_comparison_text(r, "sequences")
    assert f"{100 * prior:.1f}" in text and "over 2 sequences" in text
    # a model that predicts every AU absent is below the prior on every resample
    low = compare_with_prior(np.tile(y, (10, 1)), np.zeros((40, 2)), n_boot=200, groups=np.arange(40) // 4)
    assert low.f1_a == 0.0 and low.high < 0 and "below the prior" in prior_comparison_text(low)
