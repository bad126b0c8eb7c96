"""Losses against hand-computed values on tiny tensors, masking, gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audet.losses import (
    AUWeightWarning,
    attention_kl,
    au_weights,
    aunet_weighted_bce,
    aunet_weights,
    cisnet_adaptive_loss,
    cisnet_weights,
    weighted_bce,
)

LN2 = math.log(2.0)
LN3 = math.log(3.0)

# 2 samples x 2 AUs. sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, so
#   -log(0.5) = ln2, -log(1 - 0.75) = ln4 = 2 ln2.
X = [[0.0, LN3], [LN3, 0.0]]
Y = [[1.0, 0.0], [0.0, 1.0]]


def _xy(requires_grad=False):
    return torch.tensor(X, requires_grad=requires_grad), torch.tensor(Y)


# ------------------------------------------------------------------------------- au_weights
def test_au_weights_hand_computed():
    # AU0: 1 positive of 4 -> N/N_occ = 4, v = 3
    # AU1: labels 1,1,0,9 -> 3 known, 2 positive -> N/N_occ = 1.5, v = 0.5
    labels = np.array([[1, 1], [0, 1], [0, 0], [0, 9]])
    w, v = au_weights(labels)
    np.testing.assert_allclose(w, [4 / 5.5, 1.5 / 5.5])
    np.testing.assert_allclose(v, [3.0, 0.5])
    assert w.sum() == pytest.approx(1.0)
    w_list, _ = au_weights(labels, scale="list")  # the _weight.txt files: w * J
    np.testing.assert_allclose(w_list, [8 / 5.5, 3 / 5.5])
    # an explicit mask does the same as the 9
    lab0 = np.where(labels == 9, 0, labels)
    w2, v2 = au_weights(lab0, mask=(labels != 9))
    np.testing.assert_allclose(w2, w)
    np.testing.assert_allclose(v2, v)


def test_au_weights_torch_in_torch_out():
    w, v = au_weights(torch.tensor([[1, 0], [0, 1], [0, 1]]))
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([3 / 4.5, 1.5 / 4.5]))
    torch.testing.assert_close(v, torch.tensor([2.0, 0.5]))


def test_au_weights_no_positive_is_finite_and_warns():
    labels = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])
    with pytest.warns(AUWeightWarning, match=r"\[1\]"):
        w, v = au_weights(labels)
    assert np.isfinite(w).all() and np.isfinite(v).all()
    # AU1 takes the smallest inverse rate of the others (both 4 here): w uniform
    np.testing.assert_allclose(w, [1 / 3] * 3)
    np.testing.assert_allclose(v, [3.0, 1.0, 3.0])


def test_aunet_and_cisnet_weights():
    labels = np.array([[1, 1], [0, 1], [0, 0], [0, 9]])
    np.testing.assert_allclose(aunet_weights(labels), au_weights(labels)[0])
    np.testing.assert_allclose(cisnet_weights(labels), [1 / 4, 2 / 3])


# ------------------------------------------------------------------------------ weighted_bce
def test_weighted_bce_hand_computed():
    x, y = _xy()
    w, v = [0.25, 0.75], [3.0, 1.0]
    # sample 0: AU0 y=1 p=.5 -> v0*ln2 = 3ln2 ; AU1 y=0 p=.75 -> 2ln2
    #   sum_j w_j l_j = 0.25*3ln2 + 0.75*2ln2 = 2.25 ln2
    # sample 1: AU0 y=0 p=.75 -> 2ln2 ; AU1 y=1 p=.5 -> v1*ln2 = ln2
    #   0.25*2ln2 + 0.75*ln2 = 1.25 ln2
    # mean over the batch: 1.75 ln2
    loss = weighted_bce(x, y, None, w, v)
    assert loss.item() == pytest.approx(1.75 * LN2, rel=1e-6)
    assert weighted_bce(x, y, None, w, v, reduction="sum").item() == pytest.approx(3.5 * LN2, rel=1e-6)
    per = weighted_bce(x, y, None, w, v, reduction="none")
    torch.testing.assert_close(per, torch.tensor([[0.75 * LN2, 1.5 * LN2], [0.5 * LN2, 0.75 * LN2]]))


def test_weighted_bce_list_weights_with_mean_over_aus_match():
    # published code: list weights w*J with an element-wise mean over B x J
    x, y = _xy()
    w, v = torch.tensor([0.25, 0.75]), torch.tensor([3.0, 1.0])
    a = weighted_bce(x, y, None, w, v)
    b = weighted_bce(x, y, None, w * 2, v, au_reduction="mean")
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    # without weights: uniform 1/A -> the plain mean BCE
    plain = F.binary_cross_entropy_with_logits(x, y)
    assert weighted_bce(x, y).item() == pytest.approx(plain.item(), rel=1e-6)


def test_weighted_bce_mask_removes_missing_labels():
    x, y = _xy()
    w, v = [0.25, 0.75], [3.0, 1.0]
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # sample 1, AU0 missing
    # sample 0: 2.25 ln2 ; sample 1: only AU1 -> 0.75 ln2 ; / N=2 -> 1.5 ln2
    loss = weighted_bce(x, y, mask, w, v)
    assert loss.item() == pytest.approx(1.5 * LN2, rel=1e-6)
    # changing the masked label changes nothing
    y2 = y.clone()
    y2[1, 0] = 1.0
    assert weighted_bce(x, y2, mask, w, v).item() == pytest.approx(loss.item(), rel=1e-7)
    # a 9 in the labels without a mask is the same as masking it
    y9 = y.clone()
    y9[1, 0] = 9.0
    assert weighted_bce(x, y9, None, w, v).item() == pytest.approx(loss.item(), rel=1e-7)
    # normalize="valid": AU0 averaged over its 1 known label, AU1 over 2
    #   0.25 * 3ln2 / 1 + 0.75 * (2ln2 + ln2) / 2 = 0.75 ln2 + 1.125 ln2
    valid = weighted_bce(x, y, mask, w, v, normalize="valid")
    assert valid.item() == pytest.approx(1.875 * LN2, rel=1e-6)


def test_weighted_bce_gradient_flows_and_is_zero_where_masked():
    x, y = _xy(requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    loss = weighted_bce(x, y, mask, [0.25, 0.75], [3.0, 1.0])
    loss.backward()
    g = x.grad
    assert g[1, 0].item() == 0.0
    assert (g[0] != 0).all() and g[1, 1].item() != 0.0
    # d/dx of 0.5 * 0.25 * 3 * softplus(-x) at x=0: 0.375 * (-0.5)
    assert g[0, 0].item() == pytest.approx(-0.1875, rel=1e-6)


def test_weighted_bce_time_dimension_is_flattened():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5)
    y = (torch.rand(3, 4, 5) > 0.7).float()
    m = (torch.rand(3, 4, 5) > 0.2).float()
    w, v = torch.rand(5), torch.rand(5) * 3
    a = weighted_bce(x, y, m, w, v)
    b = weighted_bce(x.reshape(12, 5), y.reshape(12, 5), m.reshape(12, 5), w, v)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert weighted_bce(x, y, m, w, v, reduction="none").shape == (3, 4, 5)


def test_weighted_bce_is_stable_for_large_logits():
    x = torch.tensor([[100.0, -100.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0]])
    loss = weighted_bce(x, y, None, [0.5, 0.5], [2.0, 2.0])
    # 0.5 * 100 + 0.5 * 2 * 100
    assert loss.item() == pytest.approx(150.0, rel=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_weighted_bce_rejects_bad_shapes():
    with pytest.raises(ValueError):
        weighted_bce(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        weighted_bce(torch.zeros(2, 3), torch.zeros(2, 3), None, [1.0, 1.0])


# ------------------------------------------------------------------------------ AU-Net Eq. 1
def test_aunet_weighted_bce_hand_computed():
    x, y = _xy()
    # no positive weight: sample 0: 0.25 ln2 + 0.75 * 2ln2 = 1.75 ln2
    #                     sample 1: 0.25 * 2ln2 + 0.75 ln2 = 1.25 ln2 -> mean 1.5 ln2
    loss = aunet_weighted_bce(x, y, None, [0.25, 0.75])
    assert loss.item() == pytest.approx(1.5 * LN2, rel=1e-6)


# ------------------------------------------------------------------------------ CISNet Eq. 6
def test_cisnet_adaptive_loss_hand_computed():
    x, y = _xy(requires_grad=True)
    mu = [0.25, 0.5]
    # sample 0: AU0 y=1 p=.5 -> (1-.25) ln2 = .75 ln2 ; AU1 y=0 p=.75 -> .5 * 2ln2 = ln2
    # sample 1: AU0 y=0 p=.75 -> .25 * 2ln2 = .5 ln2 ; AU1 y=1 p=.5 -> (1-.5) ln2 = .5 ln2
    # sum over AUs, mean over samples: (1.75 + 1.0)/2 ln2 = 1.375 ln2
    loss = cisnet_adaptive_loss(x, y, None, mu)
    assert loss.item() == pytest.approx(1.375 * LN2, rel=1e-6)
    # the published code's normalisation (also / number of AUs)
    code = cisnet_adaptive_loss(x, y, None, mu, au_reduction="mean")
    assert code.item() == pytest.approx(0.6875 * LN2, rel=1e-6)
    # mu=None: the unweighted loss of the published code: (3ln2 + 3ln2)/2
    assert cisnet_adaptive_loss(x, y).item() == pytest.approx(3 * LN2, rel=1e-6)
    loss.backward()
    assert (x.grad != 0).all()


def test_cisnet_smoothing_matches_code_formula():
    x, y = _xy()
    s = 0.05
    # sample 0: AU0 y=1 p=.5 ; AU1 y=0 p=.75 ; sample 1: AU0 y=0 p=.75 ; AU1 y=1 p=.5
    pos = -math.log((0.5 + s) / (1 + s))
    neg = -math.log((1 + s - 0.75) / (1 + s))
    expected = ((0.75 * pos + 0.5 * neg) + (0.25 * neg + 0.5 * pos)) / 2
    got = cisnet_adaptive_loss(x, y, None, [0.25, 0.5], smoothing=s)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cisnet_mask():
    x, y = _xy()
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    a = cisnet_adaptive_loss(x, y, mask, [0.25, 0.5])
    y2 = y.clone()
    y2[0, 1] = 1.0
    assert cisnet_adaptive_loss(x, y2, mask, [0.25, 0.5]).item() == pytest.approx(a.item(), rel=1e-7)
    # (0.75 ln2 + 1.0 ln2) / 2
    assert a.item() == pytest.approx(0.875 * LN2, rel=1e-6)


# ------------------------------------------------------------------------------ AC2D Eq. 7
def test_attention_kl_hand_computed():
    gt = torch.tensor([[[[0.5, 0.5], [0.0, 0.0]]]])  # (B=1, A=1, 2, 2)
    avg = torch.full((1, 1, 2, 2), 0.25, requires_grad=True)
    # KL = 0.5 (ln .5 - ln .25) * 2 + 0 = ln2 ; element-wise mean over 4 cells = ln2 / 4
    loss = attention_kl(avg, gt)
    assert loss.item() == pytest.approx(LN2 / 4, rel=1e-6)
    assert attention_kl(avg, gt, reduction="batchmean").item() == pytest.approx(LN2, rel=1e-6)
    assert attention_kl(avg, gt, reduction="sum").item() == pytest.approx(LN2, rel=1e-6)
    loss.backward()
    # d/d avg of -gt*log(avg)/4 = -gt / (4 avg) = -0.5 where gt=.5, 0 where gt=0
    torch.testing.assert_close(avg.grad, torch.tensor([[[[-0.5, -0.5], [0.0, 0.0]]]]))


def test_attention_kl_matches_torch_mean_and_accepts_flat_layout():
    torch.manual_seed(0)
    avg = torch.softmax(torch.randn(2, 3, 16), -1)
    gt = torch.softmax(torch.randn(2, 3, 4, 4).flatten(2), -1).reshape(2, 3, 4, 4)
    ref = (gt.flatten(2) * (gt.flatten(2).log() - avg.log())).mean()
    assert attention_kl(avg, gt).item() == pytest.approx(ref.item(), rel=1e-5)
    assert attention_kl(avg.log(), gt, log_input=True).item() == pytest.approx(ref.item(), rel=1e-5)


def test_attention_kl_guards_log_zero():
    gt = torch.tensor([[[0.5, 0.5]]])
    avg = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    loss = attention_kl(avg, gt)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(avg.grad).all()
