"""CISNet (papers/cisnet.md): the CIS subject dictionary and attention (Eq. 3-5) on hand-built
examples, the collect-only first epoch, gradient flow, the adaptive loss (Eq. 6), errors for data
without subjects, the plug-in on another backbone, the parameter count and the converter round trip."""
from __future__ import annotations

import math

import pytest
import torch

from audet.models.checkpoint import map_state_by_au
from audet.models import create_model
from audet.models.base import DataInfo, LogitsOnly, LossContext, ModelOutput
from audet.models.layers.causal_subject import SubjectCausalIntervention
from helpers import randomize as _randomize

AUS = [1, 2, 4, 12]
SUBJECTS = ["F001", "F002", "M001", "M002", "M003"]
TRAIN = ["F001", "M001", "M002"]  # F002 and M003 are validation/test subjects
TINY = {"backbone_args": {"width": 4}, "img_size": 32}


def data_info(train=TRAIN):
    return DataInfo(aus=AUS, subjects=SUBJECTS, train_subjects=list(train))


def tiny(name="cisnet_tiny", **kw):
    torch.manual_seed(0)
    return create_model(name, aus=AUS, data=data_info(), **{**TINY, **kw})


def identity_cis(rows=(0, -1, 1, 2)):
    """CIS with d_in = d_m = 2 and W_Q = W_K = W_X = W_S = I, zero biases (hand-computable)."""
    cis = SubjectCausalIntervention(2, 2, rows)
    with torch.no_grad():
        for lin in (cis.intervention.w_q, cis.intervention.w_k, cis.intervention.w_x, cis.intervention.w_z):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    return cis


# ------------------------------------------------------------------------------------------------
# dictionary maths (hand-built example)
def fill_example(cis):
    # global subjects 0, 2, 3 are training subjects (rows 0, 1, 2); global 1 is not
    f = torch.tensor([[1.0, 0.0], [3.0, 2.0], [9.0, 9.0], [0.0, 4.0], [2.0, 2.0], [4.0, 0.0], [0.0, 2.0]])
    s = torch.tensor([0, 0, 1, 2, 3, 3, 3])
    used = cis.collect(f[:3], s[:3]) + cis.collect(f[3:], s[3:])  # two batches
    return used


def test_dictionary_prototypes_priors_and_values():
    cis = identity_cis()
    assert not cis.valid
    assert fill_example(cis) == 6  # the non-training subject's frame is ignored
    assert not cis.valid  # nothing changes before the pass ends
    assert cis.finalize()
    K = torch.tensor([[2.0, 1.0], [0.0, 4.0], [2.0, 4.0 / 3.0]])  # per-subject means s_i
    P = torch.tensor([2 / 6, 1 / 6, 3 / 6])  # n_s / N
    assert cis.valid and bool(cis.dict_present.all())
    assert torch.allclose(cis.dict_keys, K) and torch.allclose(cis.dict_priors, P)
    assert torch.allclose(cis.dict_values, P[:, None] * K)  # V = P * K (Eq. 4)
    assert cis.dict_counts.tolist() == [2.0, 1.0, 3.0]
    assert cis.accumulated == 0  # accumulator reset: the next epoch starts afresh
    # refreshed every epoch: a second pass replaces (not averages with) the first
    cis.collect(torch.tensor([[1.0, 1.0]]), torch.tensor([2]))
    assert cis.finalize()
    assert cis.dict_counts.tolist() == [0.0, 1.0, 0.0] and cis.dict_present.tolist() == [False, True, False]
    assert torch.allclose(cis.dict_keys[1], torch.tensor([1.0, 1.0])) and cis.dict_priors.tolist() == [0.0, 1.0, 0.0]


def test_empty_pass_keeps_dictionary_and_bad_ids_are_refused():
    cis = identity_cis()
    assert not cis.finalize() and not cis.valid
    with pytest.raises(ValueError, match="subject index out of range"):
        cis.collect(torch.zeros(1, 2), torch.tensor([4]))
    with pytest.raises(ValueError, match=r"features must be \(B, 2\)"):
        cis.collect(torch.zeros(1, 3), torch.tensor([0]))


def test_attention_and_output_against_hand_computation():
    cis = identity_cis()
    fill_example(cis)
    cis.finalize()
    K = [[2.0, 1.0], [0.0, 4.0], [2.0, 4.0 / 3.0]]
    P = [2 / 6, 1 / 6, 3 / 6]
    f = [0.5, -1.0]
    scores = [(f[0] * k[0] + f[1] * k[1]) / math.sqrt(2) for k in K]  # Eq. 5, d_m = 2
    e = [math.exp(s) for s in scores]
    alpha = [x / sum(e) for x in e]
    r = [sum(alpha[i] * P[i] * K[i][d] for i in range(3)) for d in range(2)]  # Eq. 4
    out = [f[d] + r[d] for d in range(2)]  # Eq. 3 with W_X = W_S = I
    ft = torch.tensor([f])
    assert torch.allclose(cis.attention(ft), torch.tensor([alpha]), atol=1e-6)
    assert torch.allclose(cis.confounder(ft), torch.tensor([r]), atol=1e-6)
    cis.eval()
    assert torch.allclose(cis(ft), torch.tensor([out]), atol=1e-6)
    assert torch.equal(cis(ft, enabled=False), ft)  # the authors' subject_infos=None path


def test_absent_subject_gets_no_attention():
    cis = identity_cis()
    cis.collect(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 3]))  # row 1 (global 2) unseen
    cis.finalize()
    a = cis.attention(torch.tensor([[0.3, 0.7]]))
    assert a[0, 1] == 0 and torch.isclose(a.sum(), torch.tensor(1.0))


def test_empty_dictionary_is_identity_and_required_when_asked():
    cis = identity_cis()
    f = torch.randn(3, 2)
    cis.eval()
    assert torch.equal(cis(f), f)
    with pytest.raises(ValueError, match="dictionary is empty"):
        cis(f, enabled=True)


# ------------------------------------------------------------------------------------------------
# the model: subjects from the data, collect-only first epoch, data pass
def test_model_without_subjects_is_refused():
    with pytest.raises(ValueError, match="needs subject ids from the data"):
        create_model("cisnet_tiny", aus=AUS, **TINY)
    with pytest.raises(ValueError, match="needs subject ids from the data"):
        create_model("cisnet_r18", aus=AUS, data=DataInfo(aus=AUS))
    # the baseline without CIS does not need them
    assert create_model("cisnet_tiny_base", aus=AUS, **TINY).cis is None


def test_dictionary_rows_follow_training_subjects():
    m = tiny()
    assert m.dictionary_subjects == TRAIN and m.cis.num_rows == 3
    assert m.cis.subject_rows.tolist() == [0, -1, 1, 2, -1]
    # without a training subset every subject gets a row
    m2 = create_model("cisnet_tiny", aus=AUS, data=DataInfo(aus=AUS, subjects=SUBJECTS), **TINY)
    assert m2.cis.num_rows == 5


def batches(n=3, B=4, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        labels = (torch.rand(B, len(AUS), generator=g) > 0.5).float()
        out.append({
            "image": torch.randn(B, 3, size, size, generator=g),
            "labels": labels,
            "mask": torch.ones_like(labels),
            "subject": torch.tensor([0, 2, 3, 1])[:B],  # global ids; 1 = F002 is not a training subject
        })
    return out


def test_collect_only_first_epoch_fills_the_dictionary():
    m = tiny()
    data = batches()
    before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("cis.dict")}
    m.eval()
    with torch.no_grad():
        plain = m.forward_logits(data[0]["image"])
        assert torch.allclose(plain, m.classifier(m.forward_features(data[0]["image"])))  # CIS = identity
    # epoch 0 (collect_only stage): the engine runs only the data pass
    assert m.wants_data_pass(0)
    with torch.no_grad():
        results = [m.data_pass_step(b) for b in data]
    assert results == [3, 3, 3]  # F002's frames are ignored
    assert not m.cis.valid
    m.data_pass_end(results)
    assert m.cis.valid
    with torch.no_grad():
        feats = torch.cat([m.forward_features(b["image"]) for b in data])
    subj = torch.cat([b["subject"] for b in data])
    for row, g in enumerate([0, 2, 3]):
        assert torch.allclose(m.cis.dict_keys[row], feats[subj == g].mean(0), atol=1e-5)
    assert torch.allclose(m.cis.dict_priors, torch.full((3,), 1 / 3))
    # no parameter or BatchNorm statistic moved during the collect-only epoch
    for k, v in before.items():
        assert torch.equal(v, m.state_dict()[k]), k
    with torch.no_grad():
        assert not torch.allclose(m.forward_logits(data[0]["image"]), plain)  # CIS now intervenes
    assert m.wants_data_pass(1)  # refreshed every epoch (dictionary="pass")


def test_data_pass_needs_subject_ids():
    m = tiny()
    b = batches(1)[0]
    del b["subject"]
    with pytest.raises(ValueError, match="no 'subject' ids"):
        m.data_pass_step(b)


def test_train_steps_dictionary_is_the_codes_memory_bank():
    m = tiny(dictionary="train_steps")
    data = batches()
    assert m.wants_data_pass(0)  # empty dictionary: collect-only pass first
    m.eval()
    with torch.no_grad():
        m.data_pass_end([m.data_pass_step(b) for b in data])
    assert not m.wants_data_pass(1)
    m.train()
    m.on_train_epoch_start(1)
    feats = []
    for b in data:
        out = m(b["image"])
        feats.append(out.aux["features"].detach())
        m.on_train_batch_end(ModelOutput(out.logits.detach(), {"features": feats[-1]}), b)
    m.on_train_epoch_end(1)
    f = torch.cat(feats)
    subj = torch.cat([b["subject"] for b in data])
    assert torch.allclose(m.cis.dict_keys[0], f[subj == 0].mean(0), atol=1e-5)


def test_eval_without_intervention_option():
    m = tiny(eval_intervention=False)
    data = batches()
    m.eval()
    with torch.no_grad():
        m.data_pass_end([m.data_pass_step(b) for b in data])
        x = data[0]["image"]
        assert torch.allclose(m.forward_logits(x), m.classifier(m.forward_features(x)))


# ------------------------------------------------------------------------------------------------
# loss (Eq. 6), gradients, one training step on the plug-in backbone
def test_loss_context_and_variants():
    from audet.losses import cisnet_adaptive_loss

    m = tiny()
    labels = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 9, 1]]).float()
    mask = (labels != 9).float()
    ctx = m.loss_context(data_info(), labels.numpy(), mask.numpy())
    assert torch.allclose(ctx.extra["mu"], torch.tensor([3 / 4, 1 / 4, 0.0, 3 / 4]))
    b = {"labels": labels, "mask": mask}
    logits = torch.randn(4, 4)
    out = ModelOutput(logits)
    mu = ctx.extra["mu"]
    # Eq. 6 by hand for sample 0: -sum_i (1-mu_i) p_i log q_i + mu_i (1-p_i) log(1-q_i)
    q = torch.sigmoid(logits)
    per = -((1 - mu) * labels * torch.log(q) + mu * (1 - labels) * torch.log(1 - q)) * mask
    assert torch.allclose(m.loss_terms(out, b, ctx)["au"], per.sum(1).mean(), atol=1e-5)
    with pytest.raises(ValueError, match="needs mu"):
        m.loss_terms(out, b, LossContext())
    unw = tiny(loss="unweighted").loss_terms(out, b, ctx)["au"]
    assert torch.allclose(unw, cisnet_adaptive_loss(logits, labels, mask, None))
    code = tiny(loss="code").loss_terms(out, b, LossContext())["au"]
    assert torch.allclose(code, cisnet_adaptive_loss(logits, labels, mask, None, au_reduction="mean", smoothing=0.05))


def tiny_with_dictionary():
    """A tiny CISNet whose dictionary was filled by a data pass, in train mode, with its first
    batch and the loss context of that batch's labels."""
    m = tiny()
    data = batches()
    m.eval()
    with torch.no_grad():
        m.data_pass_end([m.data_pass_step(b) for b in data])
    m.train()
    b = data[0]
    return m, b, m.loss_context(None, b["labels"].numpy(), b["mask"].numpy())


def test_gradient_flow_through_cis():
    m, b, ctx = tiny_with_dictionary()
    loss = m.loss_terms(m(b["image"]), b, ctx)["au"]
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    iv = m.cis.intervention
    # several subjects: the attention is not constant, so W_Q and W_K learn (unlike AC2D's single key)
    for lin in (iv.w_q, iv.w_k, iv.w_x, iv.w_z):
        assert lin.weight.grad.abs().sum() > 0
    assert m.encoder.stem[0].weight.grad.abs().sum() > 0
    assert all(not b.requires_grad for n, b in m.named_buffers() if n.startswith("cis."))


def test_plugin_backbone_trains_a_step():
    """CIS on the registered resnet_tiny trunk: one SGD step of the paper's recipe changes the
    weights and lowers the loss on that batch."""
    m, b, ctx = tiny_with_dictionary()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    w0 = m.cis.intervention.w_q.weight.clone()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = m.loss_terms(m(b["image"]), b, ctx)["au"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert not torch.equal(w0, m.cis.intervention.w_q.weight)


def test_clip_input_runs_frame_by_frame():
    m = tiny()
    m.eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        y = m.forward_logits(x)
        assert y.shape == (2, 3, 4)
        assert torch.allclose(y[1], m.forward_logits(x[1]), atol=1e-5)


def test_flop_context_restores_empty_dictionary():
    m = tiny()
    with m.flop_count_context():
        assert m.cis.valid
    assert not m.cis.valid and not bool(m.cis.dict_present.any())


def test_au_transfer_moves_classifier_rows_and_drops_dictionary():
    src = tiny()
    src.eval()
    with torch.no_grad():
        src.data_pass_end([src.data_pass_step(b) for b in batches()])
    new_aus = [2, 1, 25]
    dst = create_model("cisnet_tiny", aus=new_aus, data=DataInfo(aus=new_aus, subjects=["A", "B"]), **TINY)
    state, rep = map_state_by_au(dst, src.state_dict(), AUS, new_aus)
    assert torch.equal(state["classifier.2.weight"][0], src.state_dict()["classifier.2.weight"][1])
    assert torch.equal(state["classifier.2.weight"][1], src.state_dict()["classifier.2.weight"][0])
    assert torch.equal(state["projector.weight"], src.state_dict()["projector.weight"])
    assert not bool(state["cis.dict_valid"]) and "cis.dict_keys" in rep["reset"]
    dst.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# the published model's size and the converter
def test_resnet34_parameter_count_is_the_published_models():
    m = create_model("cisnet_r34", aus=[1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24],
                     data=DataInfo(aus=list(range(12)), subjects=[f"S{i}" for i in range(27)]))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(m) == 22_368_908  # original-checkpoints/cis_resnet34_12au.tsv
    assert (count(m.encoder), count(m.projector), count(m.cis), count(m.classifier)) == (21_284_672, 262_656, 787_968, 33_612)
    base = create_model("cisnet_r34_base", num_aus=12)
    assert count(base) == 22_368_908 - 787_968


def randomize(model, seed=0):
    return _randomize(model, seed, skip=("cis.dict",))


@pytest.fixture(scope="module")
def r18_pair(tmp_path_factory):
    """A random cisnet_r18 with a filled dictionary and its authors'-style final_model.pt."""
    from audet.models.convert.cisnet import to_authors_checkpoint

    subs = [f"S{i}" for i in range(6)]
    m = randomize(create_model("cisnet_r18", aus=AUS, data=DataInfo(aus=AUS, subjects=subs)))
    g = torch.Generator().manual_seed(1)
    n = torch.tensor([5.0, 3, 7, 4, 6, 5])
    m.cis.set_dictionary(torch.rand(6, 512, generator=g), n / n.sum(), counts=n)
    path = tmp_path_factory.mktemp("cis") / "final_model.pt"
    ck = to_authors_checkpoint(m)
    assert ck["model"]["encoder.0.weight"].shape == (64, 3, 7, 7) and "subject_attention.qmap.weight" in ck["model"]
    torch.save(ck, path)
    return m.eval(), path, subs


def test_converter_round_trip(r18_pair):
    from audet.models.convert.cisnet import convert_cisnet

    m, path, subs = r18_pair
    c = convert_cisnet(path, AUS, subjects=subs, input_convention="rgb_norm")
    assert c.model_name == "cisnet_r18" and c.conversion_report["backbone"] == "resnet18"
    for k, v in m.state_dict().items():
        if k != "cis.dict_counts":  # the file has priors only: counts come back as the priors
            assert torch.equal(v, c.state_dict()[k]), k
    assert torch.allclose(c.cis.dict_counts, m.cis.dict_counts / m.cis.dict_counts.sum())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.forward_logits(x), c.forward_logits(x))


def test_converted_model_maps_audet_input_to_the_authors_bgr_unit(r18_pair):
    """input_convention="bgr_unit" (converter default): audet RGB [-1, 1] in, the authors' BGR/255
    computation inside (compared with a plain torchvision ResNet-18 fed BGR/255)."""
    import torchvision

    from audet.models.convert.cisnet import convert_cisnet

    m, path, subs = r18_pair
    c = convert_cisnet(path, AUS, subjects=subs)
    assert c.input_convention == "bgr_unit"
    tv = torchvision.models.resnet18(weights=None)
    tv.fc = torch.nn.Identity()
    # the authors' encoder = torchvision children()[:-1]; loading through it fills tv itself
    torch.nn.Sequential(*list(tv.children())[:-1]).load_state_dict(
        {k[len("encoder."):]: v for k, v in m.state_dict().items() if k.startswith("encoder.")})
    tv.eval()
    g = torch.Generator().manual_seed(3)
    rgb255 = torch.randint(0, 256, (2, 3, 64, 64), generator=g).float()
    ours_in = (rgb255 / 255 - 0.5) / 0.5
    bgr_unit = rgb255.flip(1) / 255
    with torch.no_grad():
        f = m.projector(tv(bgr_unit))
        ref = m.classifier(m.cis(f))
        assert torch.allclose(c.forward_logits(ours_in), ref, atol=1e-5)
        # the 5-D authors' layout N x 1 x 3 x H x W gives N x 1 x A
        assert torch.allclose(c.forward_logits(ours_in[:, None])[:, 0], ref, atol=1e-5)


def test_bgr_unit_input_is_the_authors_bitwise_for_every_8bit_level(r18_pair):
    """All 256 levels through audet's data path (to_tensor: v * (1/255), then (x - 0.5) / 0.5) and
    the converted model's input mapping give exactly the authors' BGR v / 255: 0.0 difference,
    so train-mode outputs and gradients equal theirs too (no 1.5e-8 input error to amplify)."""
    import numpy as np

    from audet.data.transforms import to_tensor
    from audet.models.convert.cisnet import convert_cisnet

    m, path, subs = r18_pair
    c = convert_cisnet(path, AUS, subjects=subs)
    levels = np.arange(256, dtype=np.uint8)
    img = np.stack([np.tile(levels.reshape(16, 16, 1), (1, 1, 3))[..., [0, 1, 2]]] * 2)  # (2, 16, 16, 3)
    img[1] = img[1][::-1, ::-1]  # channels see different levels at each position
    img[1, ..., 1] = 255 - img[1, ..., 1]
    ours = to_tensor(img, c.preprocess["mean"], c.preprocess["std"])  # (2, 3, 16, 16) as the data path serves it
    authors = torch.from_numpy(img.astype(np.float64) / 255.0).float().permute(0, 3, 1, 2).flip(1)  # BGR / 255
    assert torch.equal(c._adapt_input(ours), authors)
    # anything off the 8-bit grid (colour jitter) is mapped, not snapped
    off = torch.full((1, 3, 2, 2), 0.123456)
    assert torch.allclose(c._adapt_input(off), ((off * 0.5) + 0.5).flip(1), atol=0, rtol=0)
    c.train()
    x = torch.nn.functional.interpolate(ours, size=64)
    ref = torch.nn.functional.interpolate(authors, size=64)
    torch.manual_seed(0)
    a = c.forward_logits(x)
    torch.manual_seed(0)
    b = c.classifier(c.cis(c.projector(c.encoder(ref))))
    assert torch.equal(a, b)


def test_converter_bare_epoch_file_and_errors(r18_pair, tmp_path):
    from audet.models.convert.cisnet import ConversionError, convert_cisnet

    m, path, subs = r18_pair
    ck = torch.load(path, weights_only=True)
    bare = tmp_path / "epoch5_model.pt"
    torch.save({"module." + k: v for k, v in ck["model"].items()}, bare)  # DataParallel prefix
    c = convert_cisnet(bare, AUS, subjects=subs)
    assert not c.cis.valid and not c.conversion_report["dictionary"]  # runs without CIS until a data pass
    with pytest.raises(ConversionError, match="no subject dictionary"):
        convert_cisnet(bare, AUS)
    with pytest.raises(ConversionError, match="8 AUs|4 AU"):
        convert_cisnet(path, "DISFA", subjects=subs)
    wrong = dict(ck, model={**ck["model"], "projector.weight": torch.zeros(3, 3)})
    with pytest.raises(ConversionError, match="wrong shapes: projector.weight"):
        convert_cisnet(wrong, AUS, subjects=subs)
    with pytest.raises(ConversionError, match="not a CISNet checkpoint"):
        convert_cisnet({"model": {"x": torch.zeros(1)}}, AUS)


class _Payload:  # an arbitrary object in a pickle must never be unpickled
    pass


def test_converter_refuses_unsafe_pickles(tmp_path):
    from audet.models.convert.cisnet import ConversionError, convert_cisnet

    p = tmp_path / "evil.pt"
    torch.save({"model": {"final.2.weight": torch.zeros(4, 64)}, "extra": _Payload()}, p)
    with pytest.raises(ConversionError, match="weights_only=True"):
        convert_cisnet(p, AUS)


def test_optional_imagenet_encoder_part(tmp_path):
    """The published code initialises the encoder from torchvision ImageNet weights: an optional,
    trainable pretrained part read from a torchvision state_dict file (names remapped)."""
    import torchvision

    from audet.models.base import load_pretrained_parts

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    subs = DataInfo(aus=AUS, subjects=["A", "B"])
    m = create_model("cisnet_r18", aus=AUS, data=subs)
    assert load_pretrained_parts(m) == {"encoder": "absent"}  # not required: trains from scratch
    m = create_model("cisnet_r18", aus=AUS, data=subs, encoder_weights=str(tmp_path / "resnet18.pth"))
    assert load_pretrained_parts(m)["encoder"].startswith("file ")
    assert torch.equal(m.encoder[0].weight, tv.conv1.weight) and torch.equal(m.encoder[7][1].bn2.bias, tv.layer4[1].bn2.bias)
    assert all(p.requires_grad for p in m.encoder.parameters())
    bad = create_model("cisnet_r34", aus=AUS, data=subs, encoder_weights=str(tmp_path / "resnet18.pth"))
    with pytest.raises(ValueError, match="not a torchvision ResNet of this depth"):
        load_pretrained_parts(bad)


def test_resnet34_flops_match_the_authors_model():
    """FlopCounterMode counts of the authors' model (cis_resnet34_12au.tsv header): 9,578,326,016
    with a 27-subject dictionary (the empty dictionary is restored afterwards)."""
    from audet.complexity import count_flops

    m = create_model("cisnet_r34", num_aus=12, data=DataInfo(aus=list(range(12)), subjects=[f"S{i}" for i in range(27)]))
    assert count_flops(m.eval(), 256)["flops"] == 9_578_326_016  # flop_count_context fills the dictionary
    assert not m.cis.valid


def test_forward_logits_exports_to_onnx_with_the_dictionary():
    """The logits-only path (with a partly filled dictionary: one subject masked) traces to ONNX and
    onnxruntime gives the same logits."""
    import io

    import onnxruntime as ort

    m = tiny()
    m.eval()
    with torch.no_grad():
        m.data_pass_end([m.data_pass_step(b) for b in batches(2, B=2)])  # subjects 0 and 2 only
    assert m.cis.dict_present.tolist() == [True, True, False]

    x = torch.randn(2, 3, 32, 32)
    buf = io.BytesIO()
    import warnings

    with warnings.catch_warnings():  # the dictionary's valid flag is a trace-time constant
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(LogitsOnly(m).eval(), (x,), buf, input_names=["x"], output_names=["y"], dynamo=False)
    y = ort.InferenceSession(buf.getvalue()).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert abs(y - m.forward_logits(x).numpy()).max() < 1e-5


def test_complexity_command_builds_subject_models_with_placeholder_subjects(capsys):
    import json

    from audet.cli import main

    assert main(["complexity", "cisnet_tiny", "--aus", "1,2,4,12", "--subjects", "5", "--size", "32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "cisnet_tiny" and r["params"] == sum(p.numel() for p in create_model("cisnet_tiny", aus=AUS, data=data_info()).parameters())


def test_converter_base_model_without_cis(tmp_path):
    from audet.models.convert.cisnet import convert_cisnet, to_authors_checkpoint

    m = randomize(create_model("cisnet_r18_base", aus=AUS)).eval()
    ck = to_authors_checkpoint(m)
    assert not any(k.startswith("subject_attention.") for k in ck["model"]) and "K_subject" not in ck
    torch.save(ck["model"], tmp_path / "epoch15_model.pt")
    c = convert_cisnet(tmp_path / "epoch15_model.pt", AUS, input_convention="rgb_norm")
    assert c.model_name == "cisnet_r18_base" and c.cis is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.forward_logits(x), c.forward_logits(x))
