"""ESCDA: LSC mask maths (Eq. 1-6) and its gradient in eps, GDA's dual-directional attention,
the averaging / voting ensembles, every Table 5/6 variant, parameter counts, pretrained backbone."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from audet.geometry import lsc_attention_maps
from audet.losses import au_weights, escda_au_weights, escda_weighted_loss
from audet.models import create_model, list_models, model_info
from audet.models.base import LogitsOnly, load_pretrained_parts
from audet.models.ensemble import Ensemble
from audet.models.escda import GDA, LSC, lsc_mask, predefined_mask, template_subcenters
from audet.models.layers.directional import DirectionalAttention
from audet.models.layers.ntb import (
    EMHSA, NextTransformerBlock, attention_weights, constrain_attention, constrained_self_attention,
)

VARIANTS = ["escda_ls", "escda_lsc_fix", "escda_lsc", "escda_ua", "escda_gda", "escda_v", "escda"]
BP4D = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
#: a narrow ESCDA at 64 x 64 (4 x 4 backbone map): fast
TINY = dict(width=0.125, depths=(1, 1, 1), input_size=64, crop_size=64)


def tiny(name, aus=(1, 2, 4), **kw):
    cfg = dict(TINY)
    if name in ("escda", "escda_v"):
        cfg["lsc"] = {"head_dim": 16}
    elif name.startswith("escda_l"):
        cfg["head_dim"] = 16
    cfg.update(kw)
    return create_model(name, aus=list(aus), **cfg)


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def batch(B=4, A=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(B, A, generator=g) > 0.5).float()
    labels[0], labels[1] = 1.0, 0.0
    return {"image": torch.randn(B, 3, size, size, generator=g), "labels": labels, "mask": torch.ones(B, A)}


# ---------------------------------------------------------------------------------------------
# Eq. 1-3: the predefined mask
def test_predefined_mask_eq1_2_hand_values():
    # AU with sub-centres at cells (row 1, col 1) and (row 1, col 5) of a 7 x 7 map of a 112 input
    # (cell = floor(x * 7 / 112 + 0.5)): pixels 16 -> cell 1, 80 -> cell 5.
    sub = np.array([[[16.0, 16.0], [80.0, 16.0]]])
    m = predefined_mask(sub, 7, 112, sigma=3.0)[0]
    assert m.shape == (7, 7)
    assert m[1, 1] == pytest.approx(1.0) and m[1, 5] == pytest.approx(1.0)
    # (row 4, col 3): distance^2 to (1, 1) = 9 + 4 = 13, to (1, 5) = 9 + 4 = 13 -> exp(-13 / 18)
    assert float(m[4, 3]) == pytest.approx(math.exp(-13 / 18), rel=1e-6)
    # (row 6, col 0): to (1, 1) 25 + 1 = 26 (the nearer one wins the max, Eq. 2)
    assert float(m[6, 0]) == pytest.approx(math.exp(-26 / 18), rel=1e-6)
    assert float(m.min()) > 0 and float(m.max()) <= 1


def test_lsc_mask_eq3_values_and_geometry_agreement():
    base = torch.tensor([1.0, 0.5, 0.0])
    assert torch.allclose(lsc_mask(base, 1.0), torch.tensor([1.0, 0.75, 0.5]))
    assert torch.allclose(lsc_mask(base, 0.0), base)  # LSC^(fix): M = M~
    assert torch.allclose(lsc_mask(base, 1e6), torch.ones(3), atol=1e-5)  # eps -> inf: no constraint
    # the same maths as audet.geometry.lsc_attention_maps from the sub-centres
    sub = template_subcenters([1, 12])
    eps = torch.tensor([0.3, 2.0])
    ours = lsc_mask(predefined_mask(sub, 7, 112), eps[:, None, None])
    ref = lsc_attention_maps(torch.as_tensor(sub, dtype=torch.float32), eps, image_size=112, map_size=7)
    assert torch.allclose(ours, ref.float(), atol=1e-6)


def test_lsc_mask_gradient_in_eps():
    base = torch.tensor([0.2, 0.9, 1.0])
    eps = torch.tensor(0.5, requires_grad=True)
    lsc_mask(base, eps).sum().backward()
    expected = float(((1 - base) / (1 + 0.5) ** 2).sum())  # d/d eps (b + eps)/(1 + eps)
    assert float(eps.grad) == pytest.approx(expected, rel=1e-6)


def test_branch_eps_is_softplus_nonnegative_and_gets_gradient():
    m = tiny("escda_lsc")
    br = m.branches[0]
    assert float(br.eps().detach()) == pytest.approx(0.1, rel=1e-5)  # eps_init
    # the chain rule through eps = softplus(rho): d mask / d rho = d mask / d eps * sigmoid(rho)
    base = m.mask_base[0].flatten()
    lsc_mask(base, br.eps()).sum().backward()
    expected = float(((1 - base) / (1 + br.eps().detach()) ** 2).sum() * torch.sigmoid(br.eps_rho.detach()))
    assert float(br.eps_rho.grad) == pytest.approx(expected, rel=1e-5)
    # gradient descent that pushes eps down as far as it can: eps stays >= 0
    opt = torch.optim.SGD([br.eps_rho], lr=100.0)
    for _ in range(20):
        opt.zero_grad()
        br.eps().backward()  # minimise eps
        opt.step()
    assert float(br.eps().detach()) >= 0.0
    br.eps_rho.data.fill_(-200.0)
    assert float(br.eps().detach()) == 0.0 and not torch.isnan(br.eps()).item()
    assert "branches.0.eps_rho" in m.no_weight_decay()


def test_variants_mask_kinds():
    assert tiny("escda_ls").eps() is None and tiny("escda_ls").masks() is None
    fix = tiny("escda_lsc_fix")
    assert torch.equal(fix.eps(), torch.zeros(3)) and torch.allclose(fix.masks(), fix.mask_base)
    assert not any(n.endswith("eps_rho") for n, _ in fix.named_parameters())
    ada = tiny("escda_lsc")
    assert sum(n.endswith("eps_rho") for n, _ in ada.named_parameters()) == 3  # one eps_i per AU


def test_template_mask_peaks_where_the_au_is():
    sub = template_subcenters([1, 12])  # brow vs mouth corners, in pixels of the 112 input
    m = predefined_mask(sub, 7, 112)
    assert m.shape == (2, 7, 7)
    rows = [int(m[i].amax(dim=1).argmax()) for i in range(2)]
    assert rows[0] < 3 < rows[1]  # AU1 (inner brows) high on the face, AU12 (lip corners) low


# ---------------------------------------------------------------------------------------------
# Eq. 4-6: the constrained attention
def test_constrained_attention_hand_example():
    q = torch.zeros(1, 1, 2, 1)  # identical queries -> uniform softmax over the two keys (Eq. 4)
    k = torch.tensor([[[[1.0], [3.0]]]])
    v = torch.tensor([[[[2.0], [4.0]]]])
    a0 = attention_weights(q, k)
    assert torch.allclose(a0, torch.full((1, 1, 2, 2), 0.5))
    mask = torch.tensor([1.0, 0.5])
    a = constrain_attention(a0, mask)  # Eq. 5: columns (keys) scaled, rows no longer sum to 1
    assert torch.allclose(a, torch.tensor([[[[0.5, 0.25], [0.5, 0.25]]]]))
    out, (a0_, a_) = constrained_self_attention(q, k, v, mask, explicit=True)  # Eq. 6
    assert torch.allclose(out, torch.tensor([[[[2.0], [2.0]]]]))  # 0.5*2 + 0.25*4
    fast, none = constrained_self_attention(q, k, v, mask)
    assert none is None and torch.allclose(fast, out)
    # d' scaling of Eq. 4: scores / sqrt(d')
    q2, k2 = torch.tensor([[[[1.0, 1.0]]]]), torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    p = torch.softmax(torch.tensor([2.0, 0.0]) / math.sqrt(2), 0)
    assert torch.allclose(attention_weights(q2, k2)[0, 0, 0], p)


def test_fast_path_equals_explicit_attention_in_the_block():
    torch.manual_seed(0)
    ntb = NextTransformerBlock(64, 64, head_dim=16).eval()
    x = torch.randn(2, 64, 4, 4)
    mask = torch.rand(16) * 0.9 + 0.1
    fast = ntb(x, mask)
    slow, (a0, a) = ntb(x, mask, return_attention=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert a0.shape == (2, 3, 16, 16)  # 48 E-MHSA channels / head_dim 16 = 3 heads, 16 tokens
    assert torch.allclose(a0.sum(-1), torch.ones(2, 3, 16), atol=1e-5)
    assert torch.allclose(a, a0 * mask, atol=1e-6)
    # a mask of ones is the vanilla NTB (LS)
    assert torch.allclose(ntb(x, torch.ones(16)), ntb(x, None), atol=1e-5)


def test_emhsa_batch_masks():
    torch.manual_seed(1)
    att = EMHSA(32, head_dim=16)
    x = torch.randn(2, 5, 32)
    masks = torch.rand(2, 5)
    both, _ = att(x, masks)
    one, _ = att(x[1:], masks[1])
    assert torch.allclose(both[1:], one, atol=1e-6)


def test_lsc_returns_attention_maps():
    m = tiny("escda_lsc").eval()
    x = torch.randn(2, 3, 64, 64)
    out = m(x, return_attention=True)
    assert out.aux["attention"].shape == (2, 3, 4, 4) and out.aux["attention_pre"].shape == (2, 3, 4, 4)
    assert torch.allclose(out.logits, m.forward_logits(x), atol=1e-5)
    # A_i averaged over heads and queries = A'_i averaged, times M_i (the mask is per key)
    assert torch.allclose(out.aux["attention"], out.aux["attention_pre"] * m.masks()[None], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# GDA: dual-directional attention
@pytest.mark.parametrize("directions", ["hw", "h", "w"])
def test_directional_attention_shapes(directions):
    att = DirectionalAttention(16, 3, 5, directions)
    a = att(torch.randn(2, 16, 3, 5))
    assert a.shape == (2, 16, 3, 5) and bool(((a > 0) & (a < 1)).all())
    if directions == "h":  # one value per row
        assert torch.allclose(a, a[..., :1].expand_as(a))
    if directions == "w":  # one value per column
        assert torch.allclose(a, a[..., :1, :].expand_as(a))
    with pytest.raises(ValueError, match="built for 3x5"):
        att(torch.randn(1, 16, 5, 3))


def test_directional_attention_value_on_hand_built_weights():
    C, H, W = 8, 3, 4  # C_mid = max(8, 8 // 32) = 8
    att = DirectionalAttention(C, H, W, "hw").eval()
    with torch.no_grad():
        att.linear_h.conv.weight.fill_(1.0 / W)  # GDConv = the row mean
        att.linear_w.conv.weight.fill_(1.0 / H)  # GDConv = the column mean
        for conv in (att.conv1, att.conv_h, att.conv_w):
            conv.weight.copy_(torch.eye(C)[:, :, None, None])
            conv.bias.zero_()
    eps = att.bn1.eps  # every BatchNorm is (x - 0) / sqrt(1 + eps) in eval
    x = torch.arange(H)[:, None] * 1.0 + torch.arange(W)[None, :] * 0.5  # x[i, j] = i + j/2
    x = (x[None] * torch.arange(1, C + 1)[:, None, None] / C)[None]  # channel c scales by (c+1)/C
    bn = lambda t: t / math.sqrt(1 + eps)  # noqa: E731
    z_h = bn(bn(x.mean(dim=3, keepdim=True)))  # GDConv + its BN, then bn1 (conv1 = identity)
    z_w = bn(bn(x.mean(dim=2, keepdim=True)))
    g_h = torch.sigmoid(F.hardswish(z_h))
    g_w = torch.sigmoid(F.hardswish(z_w))
    expected = g_h * g_w  # (1, C, H, 1) * (1, C, 1, W)
    assert torch.allclose(att(x), expected, atol=1e-6)


def test_gda_multiplies_the_map_by_the_attention():
    m = tiny("escda_gda").eval()
    feats = m.forward_features(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, 64, 4, 4)
    y = feats * m.attention(feats)
    assert torch.allclose(m.forward_head(feats), m.fc(m.gdconv(y).flatten(1)), atol=1e-6)
    with torch.no_grad():  # attention of ones -> the plain GDConv classifier
        m.attention.conv_h.bias.fill_(50.0)
        m.attention.conv_w.bias.fill_(50.0)
        m.attention.conv_h.weight.zero_()
        m.attention.conv_w.weight.zero_()
    assert torch.allclose(m.forward_head(feats), m.fc(m.gdconv(feats).flatten(1)), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# ensembles (the contract's Ensemble built by the escda / escda_v factories)
def _member_probs(ens, x):
    with torch.no_grad():
        return torch.stack([torch.sigmoid(m.forward_logits(x)) for m in ens.members])


def test_escda_averages_lsc_and_gda():
    torch.manual_seed(0)
    ens = tiny("escda").eval()
    x = torch.randn(3, 3, 64, 64)
    p = _member_probs(ens, x)
    with torch.no_grad():
        got = torch.sigmoid(ens.forward_logits(x))
    assert torch.allclose(got, (p[0] + p[1]) / 2, atol=1e-5)  # p = (p_L + p_G) / 2 (section 3.3)


def test_escda_v_votes_and_a_tie_counts_as_occurrence():
    torch.manual_seed(0)
    ens = tiny("escda_v").eval()
    with torch.no_grad():  # make the members disagree in a known way: LSC says yes to AU 0 only,
        for br, bias in zip(ens.members[0].branches, (5.0, -5.0, -5.0)):  # GDA to AU 1 only
            br.fc.weight.zero_()
            br.fc.bias.fill_(bias)
        ens.members[1].fc.weight.zero_()
        ens.members[1].fc.bias.copy_(torch.tensor([-5.0, 5.0, -5.0]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        decision = torch.sigmoid(ens.forward_logits(x)) >= 0.5
    # one yes and one no -> yes (the paper's "maximum value of two models"); two no -> no
    assert decision.tolist() == [[True, True, False]] * 2
    p = _member_probs(ens, x)
    assert torch.equal(decision, p.max(dim=0).values >= 0.5)


def test_ensemble_loss_is_the_members_own_losses():
    torch.manual_seed(0)
    ens = tiny("escda")
    b = batch()
    ctx = ens.loss_context(None, b["labels"].numpy(), b["mask"].numpy())
    out = ens(b["image"])
    terms = ens.loss_terms(out, b, ctx)
    assert set(terms) == {"m0/au", "m1/au"}
    own = escda_weighted_loss(out.aux["member_logits"][1], b["labels"], b["mask"], ctx.au_weight, ctx.pos_weight)
    assert terms["m1/au"].item() == pytest.approx(own.item(), rel=1e-6)
    # each member gets only the gradient of its own loss: GDA's from m1/au alone
    terms["m1/au"].backward(retain_graph=True)
    g_own = [p.grad.clone() for p in ens.members[1].parameters()]
    ens.zero_grad()
    sum(terms.values()).backward()
    for p, g in zip(ens.members[1].parameters(), g_own):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_registered_ensembles_are_lsc_plus_gda():
    for name, combine in (("escda", "mean"), ("escda_v", "vote")):
        m = tiny(name)
        assert isinstance(m, Ensemble) and m.combine == combine
        assert isinstance(m.members[0], LSC) and m.members[0].constraint == "adaptive"
        assert isinstance(m.members[1], GDA) and m.members[1].attention.directions == "hw"
        assert m.config["combine"] == combine and m.config["members"] is None  # the factory's bound arguments
        assert nparams(m) == nparams(m.members[0]) + nparams(m.members[1])
        assert m.preprocess["crop_size"] == 64 and m.preprocess["input_size"] == 64
    with pytest.raises(TypeError, match="lsc:"):
        create_model("escda", aus=[1, 2], constraint="fixed")
    fix = create_model("escda", aus=[1, 2], **TINY, lsc={"constraint": "fixed", "head_dim": 16})
    assert fix.members[0].constraint == "fixed"


# ---------------------------------------------------------------------------------------------
# every variant
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_builds_trains_and_every_parameter_gets_a_gradient(name):
    assert name in list_models("escda*")
    assert model_info(name)["input_size"] == 112
    torch.manual_seed(0)
    m = tiny(name)
    b = batch()
    ctx = m.loss_context(None, b["labels"].numpy(), b["mask"].numpy())
    out = m(b["image"])
    assert out.logits.shape == (4, 3)
    terms = m.loss_terms(out, b, ctx)
    sum(terms.values()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m.forward_logits(b["image"]), m(b["image"]).logits, atol=1e-5)


def test_loss_is_eq7_with_eq8_weights():
    g = torch.Generator().manual_seed(3)
    labels = (torch.rand(40, 3, generator=g) > 0.7).float()
    labels[0] = 1.0
    w, v = escda_au_weights(labels.numpy())
    # Eq. 8 by hand
    n, n_occ = 40.0, labels.sum(0).numpy()
    assert np.allclose(w, (n / n_occ) / (n / n_occ).sum()) and np.allclose(v, (n - n_occ) / n_occ)
    logits = torch.randn(40, 3, generator=g)
    p = torch.sigmoid(logits)
    wt, vt = torch.tensor(w).float(), torch.tensor(v).float()
    by_hand = -(wt * (vt * labels * p.log() + (1 - labels) * (1 - p).log())).sum(1).mean()  # Eq. 7
    assert float(escda_weighted_loss(logits, labels, None, wt, vt)) == pytest.approx(float(by_hand), rel=1e-5)
    m = tiny("escda_gda")
    ctx = m.loss_context(None, labels.numpy(), np.ones((40, 3)))
    assert np.allclose(ctx.au_weight.numpy(), au_weights(labels.numpy())[0])


def test_input_is_resized_from_the_176_crop():
    m = create_model("escda_gda", aus=[1, 2], width=0.125, depths=(1, 1, 1)).eval()
    assert m.preprocess["crop_size"] == 176 and m.preprocess["input_size"] == 112
    x = torch.randn(1, 3, 176, 176)
    x112 = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        assert torch.allclose(m.forward_logits(x), m.forward_logits(x112), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("escda_gda", aus=[1], input_size=100)
    with pytest.raises(ValueError, match="constraint"):
        create_model("escda_lsc", aus=[1], constraint="soft")


# ---------------------------------------------------------------------------------------------
# parameter counts (Table 4: GDA 4.1M, LSC 27.2M for 12 AUs)
def test_param_counts_full_size():
    gda = create_model("escda_gda", aus=BP4D)
    lsc = create_model("escda_lsc", aus=BP4D)
    assert nparams(gda) == 4_073_700
    assert nparams(lsc) == 27_648_704
    assert abs(nparams(gda) / 4.1e6 - 1) < 0.05 and abs(nparams(lsc) / 27.2e6 - 1) < 0.05
    assert nparams(gda.backbone) == nparams(lsc.backbone) == 4_006_568
    assert tuple(lsc.forward_features(torch.zeros(1, 3, 112, 112)).shape) == (1, 512, 7, 7)  # c = 512, h = 7
    # LS and LSC^(fix) have no eps; UA has one GDConv and one 1x1 conv fewer
    assert nparams(create_model("escda_ls", aus=BP4D)) == 27_648_704 - 12
    assert nparams(create_model("escda_ua", aus=BP4D)) == 4_073_700 - (512 * 7 + 1024) - (16 * 512 + 512)


# ---------------------------------------------------------------------------------------------
# pretrained backbone (contract section 5): optional, from our safetensors or an MFN state dict
def test_backbone_weights_optional_and_loaded(tmp_path):
    m = tiny("escda_gda")
    part = m.pretrained_parts()["backbone"]
    assert part.required is False and part.frozen is False and part.option == "backbone_weights"
    assert load_pretrained_parts(m) == {"backbone": "absent"}  # from scratch by default

    src = tiny("escda_gda")
    f = tmp_path / "bb.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(f))
    m2 = tiny("escda_gda", backbone_weights=str(f))
    assert load_pretrained_parts(m2)["backbone"].startswith("file")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(m2.backbone.state_dict()[k], v)
    assert all(p.requires_grad for p in m2.backbone.parameters())  # fine-tuned, not frozen

    # the published MFN naming (residual stacks under .model., CA conv2/conv3), with its head
    import re

    mfn = {}
    for k, v in src.backbone.state_dict().items():
        k = re.sub(r"^(conv_[345])\.", r"\1.model.", k).replace("CA.conv_h", "CA.conv2").replace("CA.conv_w", "CA.conv3")
        mfn[k] = v
    mfn["linear.weight"] = torch.zeros(256, 512)
    pth = tmp_path / "mfn.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in mfn.items()}}, pth)
    ens = tiny("escda", backbone_weights=str(pth))
    status = load_pretrained_parts(ens)
    assert set(status) == {"m0/backbone", "m1/backbone"} and all(s.startswith("file") for s in status.values())
    for member in ens.members:
        for k, v in src.backbone.state_dict().items():
            assert torch.equal(member.backbone.state_dict()[k], v)

    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.conv.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="backbone tensors missing"):
        load_pretrained_parts(tiny("escda_gda", backbone_weights=str(bad)))


@pytest.mark.parametrize("name", ["escda_v", "escda_lsc"])
def test_checkpoint_round_trip(tmp_path, name):
    from audet.models.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = tiny(name).eval()
    if name == "escda_lsc":
        with torch.no_grad():
            m.branches[1].eps_rho.fill_(1.5)
    save_checkpoint(m, tmp_path / "m.safetensors")
    back = load_checkpoint(tmp_path / "m.safetensors").eval()
    assert type(back) is type(m) and back.config == m.config and back.model_name == name
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(back.forward_logits(x), m.forward_logits(x), atol=1e-6)


def test_resize_exports_to_onnx(tmp_path):
    """The 176 -> 112 antialiased resize has no ONNX op; under export it runs as R X R^T."""
    import onnx  # the [test] extra installs the [onnx] extra
    import onnxruntime as ort
    import warnings

    torch.manual_seed(0)
    m = create_model("escda_gda", aus=[1, 2], width=0.125, depths=(1, 1, 1)).eval()
    x = torch.randn(2, 3, 176, 176)
    r = m._resize_matrix(176)
    assert r.shape == (112, 176) and torch.allclose(r.sum(1), torch.ones(112), atol=1e-6)
    assert torch.allclose(r @ x @ r.T, m.resize_input(x), atol=1e-4)

    wrapper = LogitsOnly(m).eval()
    path = tmp_path / "gda.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"])
    onnx.checker.check_model(onnx.load(str(path)))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    wrapper.eval()
    with torch.no_grad():
        ref = m.forward_logits(x).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
