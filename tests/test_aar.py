"""AAR (aar.md): graph maths, GRU gating, losses, variants, any-length sequences, sizes."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from audet.complexity import count_parameters
from audet.models import create_model, list_models
from audet.models.base import LossContext
from audet.models.layers.graph import (
    SpatialGraphConv,
    SpatioTemporalGraphConv,
    adaptive_graph_conv,
    au_specific_parameters,
    au_specific_product,
    gru_update,
    normalized_adjacency,
    propagation_matrix,
    shared_graph_conv,
)
from audet.models.layers.region import LocalConvReLU, RegionLearning

VARIANTS = ["aar_bnet", "aar_bwnet", "aar_aa", "aar_aa_gsh", "aar_aa_gsp", "aar_aa_gsp_tavg", "aar"]
TINY = dict(unit_dim=2, img_size=32, clip_length=4)  # 2*8 = 16 channels at 8x8, features 24


def tiny(name: str, num_aus: int = 3, **kw):
    torch.manual_seed(0)
    return create_model(name, num_aus=num_aus, aus=[1, 2, 4, 6, 7][:num_aus], **{**TINY, **kw})


def tiny_batch(B=2, T=3, A=3, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(B, T, 3, side, side, generator=g),
        "labels": (torch.rand(B, T, A, generator=g) > 0.5).float(),
        "mask": torch.ones(B, T, A),
        "subcenters": torch.rand(B, T, A, 2, 2, generator=g) * side,
    }


CTX = LossContext(au_weight=torch.tensor([0.5, 0.3, 0.2]), pos_weight=torch.tensor([1.0, 2.0, 3.0]))


# ------------------------------------------------------------------------------------------------
# graph maths (Eq. 9-11, 15)
def test_normalized_adjacency_hand_computed():
    # U U^T = [[1,1,-1],[1,2,-1],[-1,-1,1]] -> ReLU -> [[1,1,0],[1,2,0],[0,0,1]], total 6 (Eq. 10)
    U = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    want = torch.tensor([[1.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]) / 6
    torch.testing.assert_close(normalized_adjacency(U), want)
    torch.testing.assert_close(propagation_matrix(U), torch.eye(3) + want)
    assert float(normalized_adjacency(U).sum()) == pytest.approx(1.0)  # N divides by the sum over a AND b


def test_parameter_pool_and_adaptive_graph_conv_hand_computed():
    Q = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    W = torch.tensor([[[3.0]], [[-1.0]]])  # pool of c_e = 2 matrices 1x1
    theta = au_specific_parameters(Q, W)  # Eq. 9: AU1 3, AU2 0.5*3 + 2*(-1) = -0.5
    torch.testing.assert_close(theta, torch.tensor([[[3.0]], [[-0.5]]]))
    U = torch.tensor([[1.0], [2.0]])  # N(R(UU^T)) = [[1, 2], [2, 4]] / 9
    F_in = torch.tensor([[1.0], [2.0]])
    # (I + N) F = [10/9 + 4/9, 2/9 + 26/9] = [14/9, 28/9]; then AU-specific: [14/9 * 3, 28/9 * -0.5]
    torch.testing.assert_close(adaptive_graph_conv(F_in, U, Q, W), torch.tensor([[14 / 3], [-14 / 9]]))
    # Eq. 15 with one shared theta: every AU uses 2
    torch.testing.assert_close(shared_graph_conv(F_in, U, torch.tensor([[2.0]])), torch.tensor([[28 / 9], [56 / 9]]))


def test_au_specific_product_is_per_au_matrix():
    X = torch.randn(5, 3, 4)
    theta = torch.randn(3, 4, 2)
    Z = au_specific_product(X, theta)
    for a in range(3):
        torch.testing.assert_close(Z[:, a], X[:, a] @ theta[a])


def test_spatial_graph_layer_uses_pool_and_adjacency():
    layer = SpatialGraphConv(num_nodes=3, in_dim=4, out_dim=5, pool_dim=2, specific=True)
    assert layer.U.shape == (3, 2) and layer.Q.shape == (3, 2) and layer.W.shape == (2, 4, 5)
    x = torch.randn(2, 7, 3, 4)
    want = au_specific_product(propagation_matrix(layer.U) @ x, torch.einsum("mk,kio->mio", layer.Q, layer.W))
    torch.testing.assert_close(layer(x), want)
    shared = SpatialGraphConv(3, 4, 5, 2, specific=False)
    assert not hasattr(shared, "Q") and shared.theta.shape == (4, 5)


# ------------------------------------------------------------------------------------------------
# GRU gating (Eq. 12-13)
def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_gst_gru_gating_hand_computed():
    layer = SpatioTemporalGraphConv(num_nodes=1, dim=1, pool_dim=1, specific=True)
    with torch.no_grad():
        layer.U.fill_(1.0)  # N(R(UU^T)) = [[1]] -> P = I + N = 2
        layer.Q.fill_(1.0)  # Theta = W
        layer.W_z.copy_(torch.tensor([[[0.5], [1.0]]]))  # rows: [h, x]
        layer.W_r.copy_(torch.tensor([[[1.0], [-1.0]]]))
        layer.W_h.copy_(torch.tensor([[[2.0], [0.5]]]))
    x = torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1)
    # tau = 1, h0 = 0: z = s(2*1*1), r irrelevant (h0 = 0), h~ = tanh(2*1*0.5)
    z1 = _sig(2.0)
    h1 = (1 - z1) * math.tanh(1.0)
    # tau = 2, x = -1: z = s(2 h1 0.5 - 2), r = s(2 h1 + 2), h~ = tanh(2 r h1 2 - 2 * 0.5)
    z2 = _sig(h1 - 2.0)
    r2 = _sig(2 * h1 + 2.0)
    ht2 = math.tanh(4 * r2 * h1 - 1.0)
    h2 = z2 * h1 + (1 - z2) * ht2
    out = layer(x)
    torch.testing.assert_close(out.flatten(), torch.tensor([h1, h2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.forward_reference(x).flatten(), torch.tensor([h1, h2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(gru_update(torch.tensor(2.0), torch.tensor(0.25), torch.tensor(-1.0)),
                               torch.tensor(0.25 * 2.0 - 0.75))


@pytest.mark.parametrize("specific", [True, False])
def test_gst_fast_path_matches_step_by_step(specific):
    torch.manual_seed(1)
    layer = SpatioTemporalGraphConv(num_nodes=4, dim=6, pool_dim=3, specific=specific)
    x = torch.randn(2, 5, 4, 6)
    torch.testing.assert_close(layer(x), layer.forward_reference(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# region layer: the vectorised patches equal the literal per-patch loop, train and eval
def test_local_conv_vectorised_equals_loop_with_running_stats():
    torch.manual_seed(0)
    a = LocalConvReLU(4, 4, 6, 3)
    b = copy.deepcopy(a)
    x = torch.randn(3, 6, 16, 16)
    a.train(), b.train()
    torch.testing.assert_close(a(x), b.forward_loop(x), rtol=1e-5, atol=1e-5)
    for bn_a, bn_b in zip(a.bns, b.bns):
        torch.testing.assert_close(bn_a.running_mean, bn_b.running_mean)
        torch.testing.assert_close(bn_a.running_var, bn_b.running_var)
        assert int(bn_a.num_batches_tracked) == int(bn_b.num_batches_tracked) == 1
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b.forward_loop(x), rtol=1e-5, atol=1e-5)


def test_region_layer_needs_divisible_size():
    with pytest.raises(ValueError, match="divisible by 16"):
        RegionLearning(3, 2)(torch.randn(1, 3, 40, 40))


# ------------------------------------------------------------------------------------------------
# losses (Eq. 3-6, 14)
def test_attention_regression_loss_value():
    from audet.losses import aar_attention_regression_loss

    pred = torch.tensor([[0.0, 1.0], [1.0, 0.5]])
    gt = torch.ones(2, 2)
    assert float(aar_attention_regression_loss(pred, gt)) == pytest.approx((1 + 0 + 0 + 0.25) / 4)
    with pytest.raises(ValueError, match="differ in shape"):
        aar_attention_regression_loss(pred, torch.ones(3, 3))


def test_predefined_maps_and_attention_term_hand_computed():
    model = tiny("aar_aa")
    sub = torch.full((1, 1, 3, 2, 2), 8.0)  # both sub-centres at (8, 8) px -> cell floor(8 * 8/32 + .5) = 2
    M = model.predefined_attention(sub)
    a = torch.arange(8.0)
    want = torch.exp(-((a[:, None] - 2) ** 2 + (a[None, :] - 2) ** 2) / (2 * 9.0))  # Eq. 1-2, sigma 3
    assert M.shape == (1, 1, 3, 8, 8)
    torch.testing.assert_close(M[0, 0, 1], want)
    batch = tiny_batch(B=1, T=1)
    batch["subcenters"] = sub
    model.train()
    out = model(batch["image"])
    terms = model.loss_terms(out, batch, CTX)
    la = ((out.aux["attention"] - M) ** 2).mean()  # Eq. 3
    assert float(terms["attention"].detach()) == pytest.approx(2.0 * float(la.detach()), rel=1e-5)  # lambda_a = 2 (Eq. 6)
    from audet.losses import weighted_bce

    want_u0 = weighted_bce(out.aux["logits0"], batch["labels"], batch["mask"], CTX.au_weight, CTX.pos_weight)
    assert float(terms["au0"].detach()) == pytest.approx(float(want_u0.detach()), rel=1e-6)


def test_bnet_is_unweighted_and_bwnet_weighted():
    from audet.losses import weighted_bce

    batch = tiny_batch()
    for name, w, v in (("aar_bnet", None, None), ("aar_bwnet", CTX.au_weight, CTX.pos_weight)):
        model = tiny(name)
        out = model(batch["image"])
        terms = model.loss_terms(out, batch, CTX)
        assert set(terms) == {"au1"}  # Table VI: no AL, only L_u^(1)
        assert "attention" not in out.aux and "logits0" not in out.aux
        want = weighted_bce(out.logits, batch["labels"], batch["mask"], w, v)
        assert float(terms["au1"].detach()) == pytest.approx(float(want.detach()), rel=1e-6)


def test_stage_selects_loss_terms_and_logits():
    model = tiny("aar")
    batch = tiny_batch()
    model.on_stage_start("attention")
    out = model(batch["image"])
    assert set(model.loss_terms(out, batch, CTX)) == {"au0", "attention"}
    torch.testing.assert_close(out.logits, out.aux["logits0"])  # validation measures p^(0) in stage 1
    model.on_stage_start("relation")
    out = model(batch["image"])
    assert set(model.loss_terms(out, batch, CTX)) == {"au1"}
    torch.testing.assert_close(out.logits, out.aux["logits1"])
    model.on_stage_start("")
    assert set(model.loss_terms(model(batch["image"]), batch, CTX)) == {"au0", "attention", "au1"}


# ------------------------------------------------------------------------------------------------
# every variant: gradient to every parameter, any-length sequences, logits-only path
@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_gets_a_gradient(name):
    model = tiny(name)
    model.train()
    batch = tiny_batch()
    terms = model.loss_terms(model(batch["image"]), batch, CTX)
    torch.stack(list(terms.values())).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"{name}: no gradient for {missing[:8]}"


@pytest.mark.parametrize("name", ["aar", "aar_aa_gsp_tavg", "aar_aa"])
def test_any_length_sequences(name):
    model = tiny(name).eval()
    x = torch.randn(2, 7, 3, 32, 32)
    with torch.no_grad():
        for T in (1, 3, 7):
            y = model.forward_logits(x[:, :T])
            assert y.shape == (2, T, 3)
            torch.testing.assert_close(y, model(x[:, :T]).logits)
        frame = model.forward_logits(x[:, 0])  # a frame alone: (B, A), a sequence of one
        assert frame.shape == (2, 3)
        torch.testing.assert_close(frame, model.forward_logits(x[:, :1])[:, 0])
        full = model.forward_logits(x)
        part = model.forward_logits(x[:, :3])
    if name == "aar":  # the GRU runs forward in time: later frames do not change earlier outputs
        torch.testing.assert_close(full[:, :3], part, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(full[:, 3], model.forward_logits(x[:, 3:4])[:, 0], atol=1e-4)
    if name == "aar_aa_gsp_tavg":  # T^avg: one prediction for the whole window
        torch.testing.assert_close(full, full[:, :1].expand_as(full))
    if name == "aar_aa":  # frame-level: each frame alone
        torch.testing.assert_close(full[:, 3], model.forward_logits(x[:, 3]), rtol=1e-5, atol=1e-6)


def test_bad_inputs_and_options_are_named():
    with pytest.raises(ValueError, match="temporal='gru'"):
        create_model("aar", num_aus=3, graph="none")
    with pytest.raises(ValueError, match="divisible by 16"):
        create_model("aar", num_aus=3, img_size=100)
    with pytest.raises(ValueError, match="graph="):
        create_model("aar", num_aus=3, graph="dense")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny("aar")(torch.randn(3, 32, 32))


# ------------------------------------------------------------------------------------------------
# sizes
def test_registered_variants():
    assert set(VARIANTS) <= set(list_models("aar*"))


def test_parameter_counts_paper_size():
    """12 AUs at 176: 7,175,364 parameters (paper: 7.2M); region layers as JAA-Net's 1,615,392."""
    model = create_model("aar", num_aus=12)
    assert count_parameters(model.region_learning) == 1_615_392
    C, m = 96, 12
    conv = lambda i, o: i * o * 9 + o + 2 * o  # noqa: E731  conv + bias + BN affine
    branch = conv(64, C) + 4 * conv(C, C) + (C * 9 + 1) + (C + 1)
    gst = 2 * m * 8 + 3 * 8 * 2 * C * C
    assert count_parameters(model.branches[0]) == branch
    assert count_parameters(model.relation) == 2 * gst
    assert count_parameters(model) == 1_615_392 + m * branch + 2 * gst + m * (C + 1) == 7_175_364
    assert abs(count_parameters(model) / 7.2e6 - 1) < 0.05
    assert count_parameters(create_model("aar_bnet", num_aus=12)) == 1_615_392 + 12 * (branch - C * 9 - 1 - C - 1) + 12 * 97
    assert model.preprocess["clip"] == {"length": 48} and model.preprocess["crop_size"] == 176


# ------------------------------------------------------------------------------------------------
# transfer by AU identity (DISFA from BP4D) and windowed scoring of long videos
def test_disfa_from_bp4d_maps_branches_and_graph_rows_by_au():
    from audet.models.checkpoint import map_state_by_au

    bp4d, disfa = [1, 2, 4, 6, 7, 10, 12], [1, 2, 4, 6, 9, 12, 25]
    torch.manual_seed(0)
    old = create_model("aar", num_aus=len(bp4d), aus=bp4d, **TINY)
    new = create_model("aar", num_aus=len(disfa), aus=disfa, **TINY)
    state, report = map_state_by_au(new, old.state_dict(), bp4d, disfa)
    assert report["mapped_aus"] == {1: 1, 2: 2, 4: 4, 6: 6, 12: 12} and set(report["fresh_aus"]) == {9, 25}
    o, n = old.state_dict(), state
    assert torch.equal(n["branches.5.convs.0.0.weight"], o["branches.6.convs.0.0.weight"])  # AU12 <- AU12
    assert torch.equal(n["branches.4.convs.0.0.weight"], new.state_dict()["branches.4.convs.0.0.weight"])  # AU9 fresh
    for key in ("relation.0.U", "relation.1.Q", "classifier.weight", "classifier.bias"):
        assert torch.equal(n[key][5], o[key][6]) and torch.equal(n[key][:4], o[key][:4]), key
    assert torch.equal(n["relation.0.W_z"], o["relation.0.W_z"])  # the shared pool is copied


def test_long_video_scored_once_per_frame_in_windows(tmp_path):
    """Sequences of 7 frames in disjoint padded windows of 3: every labelled frame scored once."""
    from helpers import make_prepared

    from audet.data.dataset import AUDataset
    from audet.data.transforms import EvalTransform
    from audet.engine.scoring import AUEvaluator

    root = make_prepared(tmp_path / "d", n_subjects=3, frames=7, n_parts=3)
    ds = AUDataset(root, "SYNTH_part1", clip={"length": 3, "windows": "disjoint", "pad": True},
                   transform=EvalTransform(crop=32, resize=40))
    model = tiny("aar", num_aus=4, clip_length=3).eval()
    ev = AUEvaluator([1, 2, 4, 6])
    with torch.no_grad():
        for i in range(len(ds)):
            b = {k: v.unsqueeze(0) for k, v in ds[i].items()}
            ev.process(b, model.forward_logits(b["image"]))
    assert len(ds) == 3 and ev.evaluate()["n"] == 7  # 7 frames -> windows 3 + 3 + (1 + 2 padded)


def test_flops_per_frame_by_formula():
    """One 176 x 176 frame, 12 AUs: 19,173,176,064 FLOPs = 9.59 GMACs (paper prints 10.2G; see docs)."""
    from audet.complexity import count_flops

    model = create_model("aar", num_aus=12)
    r = count_flops(model, inputs=torch.randn(1, 3, 176, 176))
    m, C, P, ce = 12, 96, 44 * 44, 8
    region = 1_124_057_088  # JAA-Net's region layers, counted on the authors' module (reference tsv)
    branch = 2 * P * 9 * (64 * C + 4 * C * C + C) + 2 * C  # conv1, conv2-5, attention conv; p^(0) head
    gst = 3 * 2 * m * ce * 2 * C * C  # Theta = Q W for the three gates (Eq. 9)
    gst += 2 * m * C * 3 * C + 2 * m * C * 2 * C + 2 * m * C * C  # input halves; recurrent z, r; h~
    gst += 3 * 2 * m * m * C + 2 * m * m * ce  # three propagations; U U^T
    assert r["flops"] == region + m * branch + 2 * gst == 19_173_176_064
    assert abs(r["gmacs"] / 10.2 - 1) < 0.07  # -6.0%: the documented, measured difference
