"""AUNet (aunet.md): losses on hand-computed cases, TDN frame alignment, FAN weight files, the
refusal without FAN weights, stages and gradient flow. Small inputs (64 x 64, batch 2)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audet.models.checkpoint import map_state_by_au
from audet.models import create_model
from audet.models.base import PretrainedWeightsMissing, load_pretrained_parts

LAYOUT = Path(__file__).resolve().parent / "data" / "aunet_fan_layout.tsv"


def _model(name="aunet", **kw):
    kw.setdefault("img_size", 64)
    if "resnet" not in name:
        kw.setdefault("allow_random_pretrained", True)
    torch.manual_seed(0)
    m = create_model(name, num_aus=4, aus=[1, 2, 4, 6], **kw)
    load_pretrained_parts(m)
    return m


# ---------------------------------------------------------------------------------------------
# losses (Eq. 2-3)
def test_consistency_loss_hand_computed():
    from audet.losses import aunet_consistency_loss, aunet_consistency_loss_code

    mu_p = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar_p = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])  # Sigma_p = [1, 2], [1, 1]
    mu_g = torch.zeros(2, 2)
    logvar_g = torch.zeros(2, 2)  # Sigma_g = [1, 1]
    # sample 0: ||mu||^2 = 1 + 4 = 5, ||Sigma_p - Sigma_g||^2 = 0 + 1 = 1 -> 6; sample 1: 0
    assert aunet_consistency_loss(mu_p, logvar_p, mu_g, logvar_g).item() == pytest.approx(3.0)
    assert aunet_consistency_loss(mu_p, logvar_p, mu_g, logvar_g, torch.tensor([1.0, 0.0])).item() == pytest.approx(6.0)
    # published code: mse(mu) + mean(std_p): sample 0: 5/2 + (1 + sqrt 2)/2, sample 1: 0 + 1
    want = ((2.5 + (1 + math.sqrt(2)) / 2) + 1.0) / 2
    got = aunet_consistency_loss_code(mu_p, torch.exp(0.5 * logvar_p), mu_g).item()
    assert got == pytest.approx(want)


def test_vae_loss_hand_computed():
    from audet.losses import aunet_kl_normal, aunet_vae_loss

    assert aunet_kl_normal(torch.tensor([[1.0]]), torch.tensor([[0.0]])).item() == pytest.approx(0.5)
    # KL(N(0, e) || N(0, 1)) = 0.5 (e - 1 - 1)
    assert aunet_kl_normal(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item() == pytest.approx(0.5 * (math.e - 2))
    t = aunet_vae_loss(torch.zeros(3, 2), torch.tensor([[1.0, 0.0]] * 3), torch.ones(3, 1), torch.zeros(3, 1), lam=0.1)
    assert t["bce"].item() == pytest.approx(2 * math.log(2))  # summed over the 2 AUs
    assert t["kl"].item() == pytest.approx(0.05)
    masked = aunet_vae_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.zeros(1, 1), torch.zeros(1, 1),
                            mask=torch.tensor([[1.0, 0.0]]))
    assert masked["bce"].item() == pytest.approx(math.log(2))
    # train_vae.py sums over the batch (vae_reduction="sum"): 3 samples -> 3x the mean
    summed = aunet_vae_loss(torch.zeros(3, 2), torch.tensor([[1.0, 0.0]] * 3), torch.ones(3, 1), torch.zeros(3, 1),
                            lam=0.1, reduction="sum")
    assert summed["bce"].item() == pytest.approx(6 * math.log(2)) and summed["kl"].item() == pytest.approx(0.15)
    with pytest.raises(ValueError, match="reduction"):
        aunet_vae_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 1), reduction="max")


def test_model_vae_reduction_option_scales_the_vae_terms():
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 5)
    terms = {}
    for red in ("mean", "sum"):
        m = _model("aunet_vae", vae_reduction=red)
        m.on_stage_start("vae")
        torch.manual_seed(1)
        terms[red] = m.vae_terms(y, torch.ones_like(y))
        assert m.config["vae_reduction"] == red
    assert terms["sum"]["vae_bce"].item() == pytest.approx(5 * terms["mean"]["vae_bce"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="vae_reduction"):
        _model("aunet_vae", vae_reduction="max")


def test_consistency_term_uses_frozen_encoder():
    m = _model("aunet_vae")
    m.on_stage_start("detector")
    assert all(not p.requires_grad for p in m.vae.parameters())
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    # a perfect (saturated) prediction has (almost) zero consistency loss
    near = m.consistency_term(torch.tensor([[30.0, -30.0, 30.0, -30.0]]), labels, None)
    far = m.consistency_term(torch.tensor([[-30.0, 30.0, -30.0, 30.0]]), labels, None)
    assert near.item() < 1e-8 < far.item()
    # frames with an unknown label do not count
    unk = m.consistency_term(torch.tensor([[-30.0, 30.0, -30.0, 30.0]]), labels, torch.tensor([[1.0, 1.0, 0.0, 1.0]]))
    assert unk.item() == 0.0


# ---------------------------------------------------------------------------------------------
# TDN frame alignment by five landmarks
def _face49(size=64) -> np.ndarray:
    from helpers import _template49

    return _template49(size)


def test_similarity_transform_recovers_known_motion():
    from audet.geometry import five_points, similarity_transform, transform_points

    pts = five_points(_face49())
    a, s = math.radians(12.0), 1.15
    M = np.array([[s * math.cos(a), -s * math.sin(a), 3.0], [s * math.sin(a), s * math.cos(a), -2.0]])
    moved = transform_points(pts, M)
    np.testing.assert_allclose(similarity_transform(pts, moved), M, atol=1e-9)
    np.testing.assert_allclose(transform_points(moved, similarity_transform(moved, pts)), pts, atol=1e-9)


def test_align_clip_to_frame_undoes_head_motion():
    import cv2

    from audet.geometry import align_clip_to_frame, five_points, transform_points

    size = 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ref = np.stack([128 + 100 * np.sin(xx / 7.0), 128 + 100 * np.cos(yy / 9.0), (xx + yy) * 2], -1).astype(np.uint8)
    lm0 = _face49(size)
    a, s = math.radians(-8.0), 0.95
    c = size / 2
    R = np.array([[s * math.cos(a), -s * math.sin(a)], [s * math.sin(a), s * math.cos(a)]])
    M = np.hstack([R, (np.array([c, c]) - R @ np.array([c, c]) + np.array([2.0, -1.5]))[:, None]])
    moved = cv2.warpAffine(ref, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    lm1 = transform_points(lm0, M)
    frames = np.stack([moved, ref, moved])  # t-T, t, t+T
    out, lm, mats = align_clip_to_frame(frames, np.stack([lm1, lm0, lm1]), reference=1)
    assert np.array_equal(out[1], ref) and np.allclose(mats[1], np.eye(2, 3))
    np.testing.assert_allclose(five_points(lm[0]), five_points(lm0), atol=1e-6)
    np.testing.assert_allclose(lm[2], lm0, atol=1e-6)
    inner = (slice(16, 48), slice(16, 48))  # away from the borders the warp lands back on frame t
    err = np.abs(out[0][inner].astype(float) - ref[inner].astype(float)).mean()
    before = np.abs(moved[inner].astype(float) - ref[inner].astype(float)).mean()
    assert err < 0.25 * before


def test_transform_aligns_clip_from_model_preprocess():
    from audet.data.transforms import EvalTransform

    m = _model("aunet_tdn")
    assert m.preprocess["clip"] == {"offsets": [-10, 0, 10], "targets": "centre"}
    tf = EvalTransform.from_preprocess(m.preprocess)
    assert tf.align_reference == 1 and tf.crop == 64 and tf.resize == 68
    lm0 = _face49(200)
    lm_shift = lm0 + np.array([5.0, -3.0])
    frames = np.full((3, 200, 200, 3), 100, np.uint8)
    x, lm = tf(frames, np.stack([lm_shift, lm0, lm_shift]))
    assert x.shape == (3, 3, 64, 64) and float(x.max()) <= 1.0  # RGB in [0, 1], no mean/std
    np.testing.assert_allclose(lm[0], lm[1], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# FAN weights
def _reference_state(num_stacks_extra: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {}
    for line in LAYOUT.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape = line.split("\t")
        shape = json.loads(shape)
        sd[name] = torch.tensor(1000) if name.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
    return sd


def test_fan_layout_matches_reference_and_param_count():
    from audet.models.layers.fan import FAN

    ref = _reference_state()
    fan = FAN(2)
    own = fan.state_dict()
    assert list(own) == list(ref)  # names AND order (599 entries)
    assert all(tuple(own[k].shape) == tuple(v.shape) for k, v in ref.items())
    assert sum(p.numel() for p in fan.parameters()) == 12_106_504


@pytest.mark.parametrize("fmt", ["aunet", "face_alignment", "au_net_full", "safetensors"])
def test_fan_weight_files_load(tmp_path, fmt):
    from audet.models.layers.fan import FAN, load_fan_weights

    ref = _reference_state()
    if fmt == "aunet":  # models/2dfan2.pth: a plain state dict
        path = tmp_path / "2dfan2.pth"
        torch.save(ref, path)
    elif fmt == "face_alignment":  # 2DFAN-<n>.pth.tar: {'state_dict': {'module.<name>': ...}}
        path = tmp_path / "2DFAN-2.pth.tar"
        torch.save({"state_dict": {"module." + k: v for k, v in ref.items()}}, path)
    elif fmt == "au_net_full":  # an AU_NET state dict: feature.fan.* plus the predictor
        path = tmp_path / "au_net.pth"
        torch.save({**{"feature.fan." + k: v for k, v in ref.items()}, "predictor.conv1x1.weight": torch.zeros(1)}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "fan.safetensors"
        save_file({k: v.contiguous() for k, v in ref.items()}, str(path))
    fan = FAN(2)
    load_fan_weights(fan, path)
    got = fan.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_fan_weight_file_errors(tmp_path):
    from audet.models.layers.fan import FAN, FANWeightsError, load_fan_weights

    ref = _reference_state()
    four = dict(ref)
    for k, v in ref.items():  # a 4-stack 2DFAN-4 has m2, m3 ...
        if k.startswith("m1."):
            four["m2." + k[3:]] = four["m3." + k[3:]] = v
    torch.save(four, tmp_path / "2dfan4.pth")
    with pytest.raises(FANWeightsError, match="4-stack"):
        load_fan_weights(FAN(2), tmp_path / "2dfan4.pth")
    bad = dict(ref)
    bad["l1.weight"] = torch.zeros(98, 256, 1, 1)  # WFLW 98 landmarks
    torch.save(bad, tmp_path / "wflw.pth")
    with pytest.raises(FANWeightsError, match="l1.weight"):
        load_fan_weights(FAN(2), tmp_path / "wflw.pth")
    with pytest.raises(FANWeightsError, match="does not exist"):
        load_fan_weights(FAN(2), tmp_path / "nope.pth")


def test_max_and_avg_pool_differ_with_same_weights():
    from audet.models.layers.fan import FAN

    torch.manual_seed(0)
    a = FAN(2, pool="max").eval()
    b = FAN(2, pool="avg").eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        fa, fb = a.forward_features(x), b.forward_features(x)
    assert fa.shape == (1, 768, 16, 16)
    assert (fa - fb).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------
# pretrained part: refusal, opt-in, loading through the model option
def test_refuses_without_fan_weights():
    m = create_model("aunet_fan", num_aus=4, img_size=64)
    with pytest.raises(PretrainedWeightsMissing) as err:
        load_pretrained_parts(m)
    msg = str(err.value)
    assert "fan_weights" in msg and "2dfan2.pth" in msg and "allow_random_pretrained" in msg


def test_random_fan_is_labelled():
    m = _model("aunet_fan")
    assert m.pretrained_status == {"fan": "random 2-stack FAN face-alignment network (2DFAN-2, max-pool)"}
    assert all(not p.requires_grad for p in m.fan.parameters())


def test_fan_weights_option_loads_file(tmp_path):
    ref = _reference_state()
    torch.save(ref, tmp_path / "2dfan2.pth")
    m = create_model("aunet_fan", num_aus=4, img_size=64, fan_weights=str(tmp_path / "2dfan2.pth"))
    status = load_pretrained_parts(m)
    assert status["fan"].startswith("file ")
    assert torch.equal(m.fan.conv1.weight, ref["conv1.weight"])
    m.train()
    assert not m.fan.training  # frozen: BN statistics stay fixed


# ---------------------------------------------------------------------------------------------
# variants, stages, gradients
@pytest.mark.parametrize("name,trainable", [("aunet_fan", 1_857_164), ("aunet_tdn", 2_657_036)])
def test_trainable_parameter_counts(name, trainable):
    m = create_model(name, num_aus=12, img_size=64)
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == trainable
    assert sum(p.numel() for p in m.fan.parameters()) == 12_106_504


def test_vae_latent_sizes():
    from audet.models.aunet import vae_latent_dim

    assert [vae_latent_dim(12), vae_latent_dim(8), vae_latent_dim(7)] == [8, 6, 5]
    assert vae_latent_dim(12, "DISFA") == 6


def test_flip_tta_is_mean_of_flips():
    m = _model("aunet_fan").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = m.forward_logits(x)
        flipped = m.forward_logits(torch.flip(x, dims=(-1,)))
        m.flip_tta = True
        tta = m.forward_logits(x)
    assert torch.allclose(tta, 0.5 * (plain + flipped), atol=1e-6)
    assert not torch.allclose(tta, plain)


def test_clip_input_and_repeated_frame():
    m = _model("aunet_tdn").eval()
    clip = torch.rand(2, 3, 3, 64, 64)
    with torch.no_grad():
        out = m.forward_logits(clip)
        still = m.forward_logits(clip[:, 1])  # frames only: neighbours = frame t
        same = m.forward_logits(clip[:, [1, 1, 1]])
    assert out.shape == (2, 4)
    assert torch.allclose(still, same, atol=1e-6) and not torch.allclose(out, still)


def _batch(B=2):
    return {"image": torch.rand(B, 3, 3, 64, 64), "labels": torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]][:B]),
            "mask": torch.ones(B, 4)}


def test_stages_switch_loss_terms_and_gradients():
    from audet.models.base import LossContext

    m = _model("aunet")
    ctx = m.loss_context(None, np.array([[1, 0, 1, 0], [0, 1, 0, 1]], float), np.ones((2, 4)))
    assert isinstance(ctx, LossContext) and ctx.au_weight.sum().item() == pytest.approx(1.0)
    m.train()
    b = _batch()
    # stage 1: only the VAE (Eq. 2); the image path is skipped
    m.on_stage_start("vae")
    terms = m.loss_terms(m(b["image"]), b, ctx)
    assert set(terms) == {"vae_bce", "vae_kl"}
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in m.vae.parameters())
    assert all(p.grad is None for p in m.predictor.parameters())
    m.zero_grad(set_to_none=True)
    # stage 2: Eq. 1 + gamma Eq. 3 against the frozen encoder
    m.on_stage_start("detector")
    terms = m.loss_terms(m(b["image"]), b, ctx)
    assert set(terms) == {"au", "consistency"}
    sum(terms.values()).backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n, _ in trainable} == {"predictor"}
    no_grad = [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)]
    assert not no_grad, no_grad
    assert all(p.grad is None for p in m.fan.parameters())
    assert all(p.grad is None for p in m.vae.parameters())


def test_vae_stage_refused_without_vae():
    m = _model("aunet_tdn")
    with pytest.raises(ValueError, match="no label VAE"):
        m.on_stage_start("vae")


def test_resnet18a_gradients():
    m = _model("aunet_resnet18a", img_size=64)
    m.train()
    m.on_stage_start("detector")
    b = _batch()
    ctx = m.loss_context(None, b["labels"].numpy(), b["mask"].numpy())
    sum(m.loss_terms(m(b["image"]), b, ctx).values()).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert m.pretrained_parts() == {}


def test_disfa_from_bp4d_maps_classifier_rows_and_keeps_vae_fresh():
    """Section V-A: DISFA starts from BP4D weights; AU rows by identity, each dataset its own VAE."""
    bp4d = create_model("aunet", num_aus=12, aus=[1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24], img_size=64)
    disfa = create_model("aunet", num_aus=8, aus=[1, 2, 4, 6, 9, 12, 25, 26], img_size=64, vae_latent=6)
    old = bp4d.state_dict()
    fresh_vae = {k: v.clone() for k, v in disfa.state_dict().items() if k.startswith("vae.")}
    state, report = map_state_by_au(disfa, old, bp4d.aus, disfa.aus)
    w_old, w_new = old["predictor.predictor.3.weight"], state["predictor.predictor.3.weight"]
    assert torch.equal(w_new[5], w_old[6])  # AU12 <- AU12
    assert torch.equal(w_new[:4], w_old[:4])  # AU1, 2, 4, 6
    assert not torch.equal(w_new[4], w_old[5])  # AU9 has no BP4D twin: keeps its init
    assert report["fresh_aus"] == [9, 25, 26]
    assert torch.equal(state["predictor.conv1x1.weight"], old["predictor.conv1x1.weight"])
    assert all(torch.equal(state[k], v) for k, v in fresh_vae.items()) and sorted(report["reset"]) == sorted(fresh_vae)
    disfa.load_state_dict(state)


def test_aunet_crop_rules():
    from audet.geometry import aunet_crop_box

    box = (0.0, 0.0, 100.0, 130.0)  # w 100, h 130, centre (50, 65)
    np.testing.assert_allclose(aunet_crop_box(box, "paper"), [-15.0, 0.0, 115.0, 130.0])
    side = 200.0 * 230.0 / 260.0  # published code: 200 (w + h) / 260
    np.testing.assert_allclose(aunet_crop_box(box, "code"), [50 - side / 2, 65 - side / 2, 50 + side / 2, 65 + side / 2])
    with pytest.raises(ValueError, match="crop rule"):
        aunet_crop_box(box, "retina")


@pytest.mark.parametrize("name", ["aunet_tdn", "aunet_resnet18a"])
def test_fusion_must_be_two_weights_in_both_networks(name):
    kw = {"allow_random_pretrained": True} if name != "aunet_resnet18a" else {}
    with pytest.raises(ValueError, match=r"fusion must be \(alpha, beta\)"):
        create_model(name, num_aus=4, img_size=64, fusion=(1.0, 1.0, 1.0), **kw)
    m = create_model(name, num_aus=4, img_size=64, fusion=(0.9, 0.1), **kw)
    assert m.config["fusion"] == [0.9, 0.1] and m.config["img_size"] == 64 and m.num_aus == 4


def test_final_pooling_is_the_authors_avg_pool2d_bitwise():
    """The predictor pools with avg_pool2d (kernel 4 at 256 px) exactly as the authors' AUFAN_TDN_
    (``F.avg_pool2d(x, 4)``): bitwise equal, where ``mean()`` differs by ~1e-6 (float32)."""
    import torch.nn.functional as F

    from audet.models.aunet import AUNetPredictor

    torch.manual_seed(0)
    p = AUNetPredictor(3, in_channels=8, width=16, hidden=8, temporal=False).eval()
    cap = {}
    p.ConvNet_2.register_forward_hook(lambda mod, i, o: cap.__setitem__("x", o))
    with torch.no_grad():
        feats = p.forward_features(torch.randn(2, 8, 64, 64) * 10)
    assert cap["x"].shape[-2:] == (4, 4)
    assert torch.equal(feats, F.avg_pool2d(cap["x"], 4).view(2, -1))


def test_training_transform_has_no_colour_jitter_as_section_v_c():
    """AUNet section V-C lists flip, rotation, shift, scaling, blur, compression and dropout: no colour
    jitter. The model declares it off and the data module's training transform follows."""
    from audet.data.datamodule import AUDataModule
    from audet.data.transforms import TrainTransform
    from audet.models.fan_pretrain import fan_preprocess

    m = _model("aunet_tdn")
    assert m.preprocess["augment"] == {"brightness": 0.0, "contrast": 0.0}
    tf = TrainTransform.from_preprocess(m.preprocess)
    assert (tf.brightness, tf.contrast, tf.flip_p) == (0.0, 0.0, 0.5)
    dm = AUDataModule("unused", "BP4D", preprocess=m.preprocess)
    assert (dm.train_transform.brightness, dm.train_transform.contrast) == (0.0, 0.0)
    assert fan_preprocess(64)["augment"] == {"brightness": 0.0, "contrast": 0.0}
