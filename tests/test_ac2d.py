"""AC2D model: parameter counts, shapes of every variant, gradients, losses, prototype state."""
from __future__ import annotations

import math

import pytest
import torch

from audet.models.checkpoint import map_state_by_au
from audet.models import LossContext, create_model, list_models, model_info

VARIANTS = ["ac2d", "ac2d_bnet", "ac2d_av", "ac2d_ae", "ac2d_avces", "ac2d_avcsd"]
BP4D = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
DISFA = (1, 2, 4, 6, 9, 12, 25, 26)


def tiny(name="ac2d", num_aus=2, **kw):
    """AC2D at 64 x 64 (8 x 8 stage-3 tokens), depths 1/1/2, no drop path: fast and deterministic."""
    cfg = dict(img_size=64, depths=(1, 1, 2), drop_path_rate=0.0)
    cfg.update(kw)
    return create_model(name, num_aus=num_aus, **cfg)


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def make_batch(B=2, A=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(B, A, generator=g) > 0.5).float()
    labels[0, 0], labels[1, 0] = 1.0, 0.0  # both classes present
    return {
        "image": torch.randn(B, 3, size, size, generator=g),
        "labels": labels,
        "mask": torch.ones(B, A),
        "subcenters": torch.rand(B, A, 2, 2, generator=g) * size,
    }


# ---------------------------------------------------------------------------------------------
# parameter counts (no forward)
def test_param_count_12_aus_exact():
    m = create_model("ac2d", num_aus=12)
    assert nparams(m) == 3_625_196
    trunk = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("branches."))
    assert trunk == 444_896
    assert nparams(m.branches[0]) == 265_025
    assert nparams(m.branches[0].intervention) == 74_880


def test_param_count_8_aus_exact():
    assert nparams(create_model("ac2d", aus=DISFA)) == 2_565_096


@pytest.mark.parametrize(
    "name,expected",
    [
        ("ac2d_avces", 3_625_196),
        ("ac2d_bnet", 3_625_196 - 12 * 74_880),
        ("ac2d_av", 3_625_196 - 12 * 74_880),
        ("ac2d_ae", 3_625_196 - 12 * 74_880),
        ("ac2d_avcsd", 3_625_196 - 11 * 74_880),
    ],
)
def test_variant_param_counts(name, expected):
    assert nparams(create_model(name, num_aus=12)) == expected


def test_registry_and_model_info():
    assert set(VARIANTS) <= set(list_models("ac2d*"))
    info = model_info("ac2d")
    assert info["recipe"]["paper"]["base_lr"] == 2e-3 and info["recipe"]["paper"]["grad_clip_norm"] == 3.0
    assert info["recipe"]["code"]["base_lr"] == 4e-3 and info["recipe"]["code"]["grad_clip_norm"] == 1.0
    assert model_info("ac2d_bnet")["variant"] == "B-Net"
    m = create_model("ac2d", num_aus=12)
    assert m.preprocess["crop_size"] == 176 and m.preprocess["mean"] == (0.5, 0.5, 0.5)
    assert m.config["prototype"] == "batch" and m.config["confounder_scale"] == "paper"
    assert m.config["lambda_a"] == 12800.0 and m.constrained_index == 1


@pytest.mark.parametrize("kw", [{"prototype": "weekly"}, {"confounder_scale": "x"}, {"attention_loss": "all"}, {"img_size": 100}])
def test_bad_options_raise(kw):
    with pytest.raises(ValueError):
        create_model("ac2d", num_aus=2, **kw)


# ---------------------------------------------------------------------------------------------
# forward
@pytest.mark.parametrize("name", VARIANTS)
def test_output_shapes_every_variant(name):
    torch.manual_seed(0)
    m = tiny(name, num_aus=3).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 64), return_full_attention=True)
    assert out.logits.shape == (2, 3)
    assert out.aux["attention"].shape == (2, 3, 8, 8)
    assert out.aux["features"].shape == (2, 3, 64)
    assert out.aux["attention_full"].shape == (2, 3, 4 * 64 * 64)
    assert ("attention_logmean" in out.aux) == (name == "ac2d_ae")
    assert torch.isfinite(out.logits).all()


def test_full_size_forward_shapes_and_no_huge_tensors_by_default():
    torch.manual_seed(0)
    m = create_model("ac2d", num_aus=12).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 176, 176))
    assert out.logits.shape == (1, 12)
    assert out.aux["attention"].shape == (1, 12, 22, 22)
    assert out.aux["features"].shape == (1, 12, 64)
    assert "attention_full" not in out.aux


def test_attention_rows_sum_to_one():
    torch.manual_seed(1)
    m = tiny("ac2d_av", num_aus=2).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 64), return_full_attention=True)
    full = out.aux["attention_full"].reshape(2, 2, 4, 64, 64)
    assert torch.allclose(full.sum(-1), torch.ones(2, 2, 4, 64), atol=1e-5)
    assert (full >= 0).all()
    mean = out.aux["attention"]
    assert torch.allclose(mean.sum((-1, -2)), torch.ones(2, 2), atol=1e-5)
    assert torch.allclose(mean.reshape(2, 2, 64), full.mean(dim=(2, 3)), atol=1e-6)


def test_gradient_flows_into_trunk_and_branch():
    torch.manual_seed(0)
    m = tiny("ac2d", num_aus=2).train()
    b = make_batch()
    out = m(b["image"])
    sum(m.loss_terms(out, b, LossContext()).values()).backward()
    for name in [
        "stem.proj.0.weight", "stage1.0.attn.q.weight", "stage1.0.attn.up_conv.weight", "embed2.proj.weight",
        "stage2.0.mlp.fc1.weight", "branches.0.embed.proj.weight", "branches.1.blocks.0.attn.kv.weight",
        "branches.0.blocks.1.attn.q.weight", "branches.0.norm.weight", "branches.1.head.weight",
        "branches.0.intervention.w_x.weight", "branches.0.intervention.w_z.weight",
    ]:
        g = m.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name
    # one prototype => softmax == 1 => W_Q and W_K get exactly zero gradient (Eq. 12d)
    for name in ["branches.0.intervention.w_q.weight", "branches.0.intervention.w_k.weight"]:
        g = m.get_parameter(name).grad
        assert g is not None and g.abs().max() == 0, name


# ---------------------------------------------------------------------------------------------
# losses
def test_loss_terms_positive_and_keys():
    torch.manual_seed(0)
    b = make_batch()
    ctx = LossContext(au_weight=torch.tensor([0.4, 0.6]), pos_weight=torch.tensor([1.5, 2.0]))
    for name, keys in [("ac2d", {"au", "attention"}), ("ac2d_ae", {"au", "attention"}), ("ac2d_bnet", {"au"})]:
        m = tiny(name).train()
        terms = m.loss_terms(m(b["image"]), b, ctx)
        assert set(terms) == keys, name
        for k, v in terms.items():
            assert v.ndim == 0 and v.item() > 0 and math.isfinite(v.item()), (name, k)


def test_attention_loss_matches_eq7_by_hand():
    from audet.geometry import ac2d_attention_maps

    torch.manual_seed(0)
    m = tiny("ac2d_av").eval()
    b = make_batch()
    with torch.no_grad():
        out = m(b["image"])
        la = m.loss_terms(out, b, LossContext())["attention"]
    gt = ac2d_attention_maps(b["subcenters"], image_size=64, sigma=3)
    ref = (gt * (gt.log() - out.aux["attention"].log())).mean() * 12800.0
    assert torch.allclose(la, ref, rtol=1e-5)


def test_each_channel_loss_is_mean_of_per_channel_kl():
    from audet.geometry import ac2d_attention_maps

    torch.manual_seed(0)
    m = tiny("ac2d_ae").eval()
    b = make_batch()
    with torch.no_grad():
        out = m(b["image"], return_full_attention=True)
        la = m.loss_terms(out, b, LossContext())["attention"] / m.lambda_a
    gt = ac2d_attention_maps(b["subcenters"], image_size=64, sigma=3).reshape(2, 2, 1, 64)
    full = out.aux["attention_full"].reshape(2, 2, 4 * 64, 64)  # every (head, query) channel
    ref = (gt * (gt.log() - full.log())).mean()
    assert torch.allclose(la, ref, rtol=1e-5)


def test_attention_loss_grad_reaches_only_up_to_constrained_block_and_bnet_has_none():
    torch.manual_seed(0)
    b = make_batch()
    m = tiny("ac2d_av").train()
    m.loss_terms(m(b["image"]), b, LossContext())["attention"].backward()
    ci = m.constrained_index  # depths (1, 1, 2): block 0 is the (n3 - 1)-th
    assert ci == 0
    assert m.get_parameter(f"branches.0.blocks.{ci}.attn.q.weight").grad.abs().sum() > 0
    assert m.get_parameter("stem.proj.0.weight").grad.abs().sum() > 0
    for name in [f"branches.0.blocks.{ci}.mlp.fc1.weight", f"branches.0.blocks.{ci}.attn.proj.weight",
                 f"branches.0.blocks.{ci + 1}.attn.q.weight", "branches.0.head.weight"]:
        g = m.get_parameter(name).grad
        assert g is None or g.abs().max() == 0, name

    bnet = tiny("ac2d_bnet").train()
    torch.manual_seed(3)
    out = bnet(b["image"])
    l1 = sum(bnet.loss_terms(out, b, LossContext()).values())
    b2 = dict(b, subcenters=torch.rand_like(b["subcenters"]) * 64)
    l2 = sum(bnet.loss_terms(out, b2, LossContext()).values())
    assert l1.item() == l2.item()  # the sub-centres do not enter B-Net's loss
    l1.backward()
    assert bnet.get_parameter("branches.0.blocks.1.attn.q.weight").grad.abs().sum() > 0  # via L_u only


# ---------------------------------------------------------------------------------------------
# sample prototypes
def test_epoch_stale_prototypes_via_hooks_and_state_dict():
    torch.manual_seed(0)
    m = tiny("ac2d", prototype="epoch_stale").train()
    b1, b2 = make_batch(seed=1), make_batch(seed=2)
    m.on_train_epoch_start(0)
    assert not bool(m.proto_valid)
    feats = []
    for b in (b1, b2):
        out = m(b["image"])
        with torch.no_grad():
            ref = m(b["image"], intervention=False)
        assert torch.allclose(out.logits, ref.logits, atol=1e-6)  # epoch 0: no intervention
        m.on_train_batch_end(out, b)
        feats.append(out.aux["features"].detach())
    m.on_train_epoch_end(0)
    assert bool(m.proto_valid)
    mean = torch.cat(feats).mean(0)
    assert torch.allclose(m.proto_k, mean, atol=1e-6)
    assert torch.allclose(m.proto_v, mean, atol=1e-6)  # paper scale: V = mean f (Eq. 13)
    assert float(m.proto_count) == 4.0
    m.on_train_epoch_end(0)  # idempotent: nothing new gathered
    assert torch.allclose(m.proto_k, mean, atol=1e-6)

    sd = m.state_dict()
    assert {"proto_k", "proto_v", "proto_count", "proto_valid"} <= set(sd)
    fresh = tiny("ac2d", prototype="epoch_stale")
    fresh.load_state_dict(sd)
    m.eval(), fresh.eval()
    x = b1["image"]
    with torch.no_grad():
        a, c, off = m(x).logits, fresh(x).logits, m(x, intervention=False).logits
    assert torch.allclose(a, c, atol=1e-6)
    assert not torch.allclose(a, off, atol=1e-4)  # the intervention changes the output
    # Eq. 10 with one prototype: W_X f + W_Z V, then the head
    f = m(x).aux["features"].detach()
    br = m.branches[1]
    ref = br.head(br.intervention.w_x(f[:, 1]) + br.intervention.w_z(m.proto_v[1:2])).squeeze(-1)
    assert torch.allclose(a[:, 1], ref, atol=1e-5)


def test_code_confounder_scale_divides_by_n():
    torch.manual_seed(0)
    m = tiny("ac2d", prototype="epoch_stale", confounder_scale="code").train()
    out = m(make_batch()["image"])
    m.on_train_batch_end(out, {})
    m.on_train_epoch_end(0)
    assert torch.allclose(m.proto_v, m.proto_k / 2, atol=1e-7)


def test_batch_prototype_is_current_minibatch_mean_and_eval_uses_stored():
    torch.manual_seed(0)
    m = tiny("ac2d").train()
    x = make_batch()["image"]
    out = m(x)
    f = out.aux["features"].detach()
    br = m.branches[0]
    k = f[:, 0].mean(0, keepdim=True)
    ref = br.head(br.intervention.w_x(f[:, 0]) + br.intervention.w_z(k)).squeeze(-1)
    assert torch.allclose(out.logits[:, 0], ref, atol=1e-5)
    m.eval()
    with torch.no_grad():  # eval before any epoch end: no stored prototype -> no intervention
        assert torch.allclose(m(x).logits, m(x, intervention=False).logits)
        with pytest.raises(ValueError, match="no valid sample prototypes"):
            m(x, intervention=True)
    m.train()
    m.on_train_batch_end(out, {})
    m.on_train_epoch_end(0)
    assert bool(m.proto_valid) and torch.allclose(m.proto_k, f.mean(0), atol=1e-6)


def test_epoch_mode_prototype_pass_and_fallback():
    torch.manual_seed(0)
    m = tiny("ac2d_avces")
    assert m.wants_data_pass(0) and not tiny("ac2d").wants_data_pass(0)
    xs = [make_batch(seed=s)["image"] for s in range(3)]
    m.train()
    m.on_train_epoch_start(0)
    out = m(xs[0])
    m.on_train_batch_end(out, {})
    m.eval()
    assert m.data_pass_end([m.data_pass_step({"image": x}) for x in xs])
    with torch.no_grad():
        ref = torch.cat([m(x, intervention=False).aux["features"] for x in xs]).mean(0)
    assert torch.allclose(m.proto_k, ref, atol=1e-5) and float(m.proto_count) == 6
    m.on_train_epoch_end(0)  # must not overwrite the pass with the training batches
    assert torch.allclose(m.proto_k, ref, atol=1e-5)
    # without the pass: falls back to the gathered training features, with a warning
    m.train()
    m.on_train_epoch_start(1)
    out = m(xs[1])
    m.on_train_batch_end(out, {})
    with pytest.warns(UserWarning, match="data pass"):
        m.on_train_epoch_end(1)
    assert torch.allclose(m.proto_k, out.aux["features"].detach().mean(0), atol=1e-6)


def test_shared_intervention_variant():
    torch.manual_seed(0)
    m = tiny("ac2d_avcsd").train()
    assert m.proto_k.shape == (16 * 16, 64)
    out = m(make_batch()["image"])
    assert out.aux["rich_features"].shape == (2, 256, 64)
    sum(m.loss_terms(out, make_batch(), LossContext()).values()).backward()
    assert m.rich_intervention.w_x.weight.grad.abs().sum() > 0
    m.on_train_batch_end(out, {})
    m.on_train_epoch_end(0)
    assert bool(m.proto_valid)
    assert torch.allclose(m.proto_k, out.aux["rich_features"].mean(0), atol=1e-6)


def test_skipped_intervention_keeps_params_in_graph():
    """Epoch 0 of epoch_stale: no prototypes, but every parameter still gets a gradient (DDP)."""
    torch.manual_seed(0)
    m = tiny("ac2d", prototype="epoch_stale").train()
    b = make_batch()
    sum(m.loss_terms(m(b["image"]), b, LossContext()).values()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []


def test_prototypes_all_reduced_under_torch_distributed(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        m = tiny("ac2d", prototype="epoch_stale").train()
        out = m(make_batch()["image"])
        m.on_train_batch_end(out, {})
        m.on_train_epoch_end(0)
        assert bool(m.proto_valid) and float(m.proto_count) == 2
    finally:
        dist.destroy_process_group()


def test_au_identity_transfer_disfa_from_bp4d():
    torch.manual_seed(0)
    old = tiny("ac2d", num_aus=12, aus=BP4D, prototype="epoch_stale")
    old.set_prototypes(torch.randn(12, 64), 100.0)
    new = tiny("ac2d", num_aus=8, aus=DISFA)
    state, report = map_state_by_au(new, old.state_dict(), BP4D, DISFA)
    new.load_state_dict(state)
    assert report["fresh_aus"] == [9, 25, 26] and report["kept"] == []
    # DISFA AU12 (branch 5) <- BP4D AU12 (branch 6)
    assert torch.equal(new.branches[5].head.weight, old.branches[6].head.weight)
    assert torch.equal(new.stem.proj[0].weight, old.stem.proj[0].weight)
    assert not bool(new.proto_valid) and new.proto_k.abs().sum() == 0
    assert sorted(report["reset"]) == ["proto_count", "proto_k", "proto_v", "proto_valid"]


# ---------------------------------------------------------------------------------------------
def test_tiny_ac2d_overfits_small_batch():
    torch.manual_seed(0)
    m = tiny("ac2d", num_aus=2, depths=(1, 1, 1)).train()  # 1 stage-3 block: it is the constrained one
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.float32)
    b = {"image": torch.randn(8, 3, 64, 64, generator=g), "labels": y, "mask": torch.ones_like(y),
         "subcenters": torch.rand(8, 2, 2, 2, generator=g) * 64}
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    first = last = None
    for _ in range(30):
        terms = m.loss_terms(m(b["image"]), b, LossContext())
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if first is None:
            first = {k: v.item() for k, v in terms.items()}
        last = {k: v.item() for k, v in terms.items()}
    assert last["au"] < 0.2 * first["au"], (first, last)
    assert sum(last.values()) < 0.2 * sum(first.values()), (first, last)


# ---------------------------------------------------------------------------------------------
# stage 3 as one batched computation (branch_impl="batched", default) vs the per-branch loop
def _pair(name, **kw):
    torch.manual_seed(0)
    loop = tiny(name, num_aus=3, branch_impl="loop", **kw)
    batched = tiny(name, num_aus=3, branch_impl="batched", **kw)
    batched.load_state_dict(loop.state_dict())
    return loop, batched


def test_default_branch_impl_is_auto_and_bad_value_raises():
    m = tiny()
    assert m.branch_impl == "auto" and m.config["branch_impl"] == "auto"
    x1, x2 = torch.zeros(1, 3, 64, 64), torch.zeros(2, 3, 64, 64)
    assert m._batched(x1) and not m._batched(x2)  # stacked for one image on the CPU, loop for batches
    assert tiny(branch_impl="batched")._batched(x2) and not tiny(branch_impl="loop")._batched(x1)
    with pytest.raises(ValueError, match="branch_impl"):
        tiny(branch_impl="vmap")


def test_batched_branches_keep_state_dict_names():
    loop, batched = _pair("ac2d")
    keys = list(batched.state_dict())
    assert keys == list(loop.state_dict())
    assert "branches.2.blocks.1.attn.up_conv.weight" in keys and "branches.0.intervention.w_z.bias" in keys


@pytest.mark.parametrize("name", ["ac2d", "ac2d_ae", "ac2d_avcsd", "ac2d_bnet"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batched_branches_equal_loop_outputs_loss_and_gradients(name, mode):
    loop, batched = _pair(name)
    if mode == "eval" and loop.has_intervention:  # stored prototypes in eval
        proto = torch.randn(loop.proto_k.shape)
        for m in (loop, batched):
            m.set_prototypes(proto, 8.0)
    b = make_batch(A=3)
    ctx = LossContext(au_weight=torch.tensor([0.2, 0.3, 0.5]), pos_weight=torch.tensor([1.5, 2.0, 1.0]))
    outs, losses = [], []
    for m in (loop, batched):
        m.train(mode == "train")
        out = m(b["image"], return_full_attention=True)
        loss = sum(m.loss_terms(out, b, ctx).values())
        loss.backward()
        outs.append(out)
        losses.append(loss.detach())
    (lo, bo) = outs
    assert set(lo.aux) == set(bo.aux)
    torch.testing.assert_close(bo.logits, lo.logits, atol=1e-5, rtol=0)
    for k in lo.aux:
        torch.testing.assert_close(bo.aux[k], lo.aux[k], atol=1e-5, rtol=0, msg=k)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-6)
    gl = dict(loop.named_parameters())
    n = 0
    for k, p in batched.named_parameters():
        assert (p.grad is None) == (gl[k].grad is None), k
        if p.grad is not None:
            torch.testing.assert_close(p.grad, gl[k].grad, atol=1e-5, rtol=1e-4, msg=k)
            n += k.startswith("branches.2.")
    assert n > 10  # the last branch's parameters got (equal) gradients


@pytest.mark.parametrize("impl", ["batched", "loop", "auto"])
def test_forward_logits_equals_forward_and_mutates_nothing(impl):
    torch.manual_seed(0)
    m = tiny("ac2d", num_aus=3, branch_impl=impl).eval()
    m.set_prototypes(torch.randn(3, 64), 4.0)
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(m.forward_logits(x), m(x).logits, atol=1e-5, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_batched_branches_with_drop_path_train_and_match_in_eval():
    torch.manual_seed(0)
    loop = tiny("ac2d_av", num_aus=2, branch_impl="loop", drop_path_rate=0.5)
    batched = tiny("ac2d_av", num_aus=2, drop_path_rate=0.5, branch_impl="batched")
    batched.load_state_dict(loop.state_dict())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(batched.eval()(x).logits, loop.eval()(x).logits, atol=1e-5, rtol=0)
    torch.manual_seed(1)
    t1 = batched.train()(x).logits
    torch.manual_seed(2)
    t2 = batched(x).logits
    assert not torch.allclose(t1, t2)  # stochastic depth is active in training


@pytest.mark.parametrize("sr", [1, 2])
def test_stacked_block_equals_each_block_with_attention_outputs(sr):
    from audet.models.layers import Block
    from audet.models.layers.stacked import stacked_block

    torch.manual_seed(0)
    blocks = [Block(16, 2, sr_ratio=sr) for _ in range(3)]
    for blk in blocks:  # non-trivial norms and biases
        for p in blk.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 2, 64, 16)  # (A, B, N, C) on an 8 x 8 grid
    out, info = stacked_block(x, blocks, 8, 8, ("mean", "logmean"))
    fused, _ = stacked_block(x, blocks, 8, 8)
    for j, blk in enumerate(blocks):
        ref, ref_info = blk.forward_attn(x[j], 8, 8, ("mean", "logmean"))
        torch.testing.assert_close(out[j], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(fused[j], ref, atol=1e-5, rtol=0)
        for k in ("mean", "logmean"):
            torch.testing.assert_close(info[k][j], ref_info[k], atol=1e-5, rtol=0)


def test_intervention_identity_init_starts_as_bnet_head_and_default_is_the_authors():
    paper = tiny("ac2d")
    assert paper.config["intervention_init"] == "restv2"
    w = paper.branches[0].intervention.w_x.weight.detach()
    assert not torch.equal(w, torch.eye(w.shape[0])) and float(w.std()) < 0.03  # std-0.02 init
    m = tiny("ac2d", intervention_init="identity")
    for br in m.branches:
        iv = br.intervention
        assert torch.equal(iv.w_x.weight, torch.eye(iv.dim)) and not iv.w_z.weight.any()
        assert not iv.w_x.bias.any() and not iv.w_z.bias.any()
    # Eq. 10 then returns f itself for any prototypes, so the logits are head(f) (B-Net's classifier)
    f = torch.randn(3, m.embed_dim)
    keys = torch.randn(1, m.embed_dim)
    torch.testing.assert_close(m.branches[0].intervention(f, keys, keys), f)
    shared = tiny("ac2d_avcsd", intervention_init="identity").rich_intervention
    assert torch.equal(shared.w_x.weight, torch.eye(shared.dim))
    with pytest.raises(ValueError, match="intervention_init"):
        tiny("ac2d", intervention_init="zeros")
