"""LSC's AU branches evaluated stacked (``branch_impl="stacked"``) equal the per-branch loop
(``"loop"``, the reference): logits, attention maps (Eq. 4-5), gradients (eps_rho of Eq. 3 too)
and the BatchNorm running statistics, for LS (no mask), LSC^(fix) and LSC (registry small config)."""
from __future__ import annotations

import pytest
import torch
from helpers import randomize

from audet.models import create_model, model_info
from audet.models.escda import LSC
from audet.models.layers.ntb import NextTransformerBlock
from audet.models.layers.stacked import stacked_batch_norm
from audet.models.layers.stacked_ntb import branch_maps, stacked_ntb

LSC_VARIANTS = ["escda_ls", "escda_lsc_fix", "escda_lsc"]
AUS = [1, 2, 4, 12]


def pair(name, seed=0):
    """The same randomised weights (BN statistics too) built twice: loop and stacked."""
    cfg = dict(model_info(name)["small_config"])
    loop = randomize(create_model(name, aus=AUS, branch_impl="loop", **cfg), seed)
    stacked = create_model(name, aus=AUS, branch_impl="stacked", **cfg)
    stacked.load_state_dict(loop.state_dict())
    return loop, stacked


def images(B=4, seed=1):
    return torch.randn(B, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def batch(B=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(B, len(AUS), generator=g) > 0.5).float()
    labels[0], labels[1] = 1.0, 0.0
    return {"image": images(B), "labels": labels, "mask": torch.ones(B, len(AUS))}


def test_option_checked_and_recorded():
    with pytest.raises(ValueError, match="branch_impl"):
        create_model("escda_lsc", aus=AUS, branch_impl="batched", **model_info("escda_lsc")["small_config"])
    m = create_model("escda_lsc", aus=AUS, **model_info("escda_lsc")["small_config"])
    assert m.branch_impl == "auto" and m.config["branch_impl"] == "auto"
    for name in LSC_VARIANTS + ["escda", "escda_v"]:
        assert model_info(name)["reference_args"] == {"branch_impl": "loop"}
    assert "reference_args" not in model_info("escda_gda")


@pytest.mark.parametrize("name", LSC_VARIANTS)
def test_eval_logits_and_attention_equal_the_loop(name):
    loop, stacked = pair(name)
    loop.eval(), stacked.eval()
    x = images()
    with torch.no_grad():
        ref = loop.forward_logits(x)
        assert ref.std() > 1e-2  # a discriminative random network, not a constant
        torch.testing.assert_close(stacked.forward_logits(x), ref, atol=1e-5, rtol=0)
        if name == "escda_ls":
            return
        a, b = loop(x, return_attention=True), stacked(x, return_attention=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    for key in ("attention_pre", "attention"):
        assert b.aux[key].shape == (4, len(AUS), 4, 4)
        torch.testing.assert_close(b.aux[key], a.aux[key], atol=1e-6, rtol=0)
    # the constraint acts: A_i = A'_i (x) M_i differs from A'_i
    assert (a.aux["attention"] - a.aux["attention_pre"]).abs().max() > 1e-3


@pytest.mark.parametrize("explicit", [False, True], ids=["fused", "explicit"])
@pytest.mark.parametrize("name", LSC_VARIANTS)
def test_training_step_logits_gradients_and_bn_statistics_equal_the_loop(name, explicit):
    loop, stacked = pair(name)
    loop.train(), stacked.train()
    b = batch()
    ctx = loop.loss_context(None, b["labels"].numpy(), b["mask"].numpy())
    outs = {}
    for key, m in (("loop", loop), ("stacked", stacked)):
        out = m(b["image"], return_attention=explicit and name != "escda_ls")
        outs[key] = out
        sum(m.loss_terms(out, b, ctx).values()).backward()
    torch.testing.assert_close(outs["stacked"].logits, outs["loop"].logits, atol=1e-5, rtol=0)
    if explicit and name != "escda_ls":
        for key in ("attention_pre", "attention"):
            torch.testing.assert_close(outs["stacked"].aux[key], outs["loop"].aux[key], atol=1e-6, rtol=0)
    got = dict(stacked.named_parameters())
    names = [n for n, _ in loop.named_parameters()]
    assert (name == "escda_lsc") == any(n.endswith("eps_rho") for n in names)
    for n, p in loop.named_parameters():
        assert p.grad is not None and got[n].grad is not None, n
        torch.testing.assert_close(got[n].grad, p.grad, atol=1e-5, rtol=0, msg=lambda m, n=n: f"{n}: {m}")
    assert max(p.grad.abs().max() for n, p in loop.named_parameters() if n.startswith("branches")) > 1e-3
    # BN running statistics (and counters) after the training forward, every branch's own buffers
    new = stacked.state_dict()
    moved = 0
    for k, v in loop.state_dict().items():
        if "running_" in k or "num_batches_tracked" in k:
            torch.testing.assert_close(new[k], v, atol=1e-6, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
            moved += k.startswith("branches") and k.endswith("num_batches_tracked") and int(v) == 1
    assert moved == len(AUS) * 6  # NTB: patch_embed, norm1, projection, MHCA, norm2; GDConv: all updated


def test_stacked_mode_is_chosen_per_call():
    loop, stacked = pair("escda_lsc")
    x = images(2)
    auto = create_model("escda_lsc", aus=AUS, **model_info("escda_lsc")["small_config"]).eval()
    auto.load_state_dict(loop.state_dict())
    loop.eval()
    with torch.no_grad():
        torch.testing.assert_close(auto.forward_logits(x), loop.forward_logits(x), atol=1e-5, rtol=0)
    assert not loop._stacked(x) and stacked._stacked(x)
    # "auto": the loop on the CPU at any batch size (measured faster there), stacked off the CPU
    assert not auto._stacked(x) and not auto._stacked(x[:1])
    assert auto._stacked(torch.zeros(1, 64, 4, 4, device="meta"))
    with torch.no_grad():
        torch.testing.assert_close(auto.forward_logits(x[:1]), loop.forward_logits(x[:1]), atol=1e-5, rtol=0)


def test_stacked_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    from audet.inference.onnx_export import export_onnx

    _, stacked = pair("escda_lsc")
    report = export_onnx(stacked, tmp_path / "lsc.onnx", exporter="torchscript")
    assert report["max_abs_diff"] < 1e-4 and report["batches"]


def test_ensembles_pass_branch_impl_to_the_lsc_member():
    for name in ("escda", "escda_v"):
        cfg = dict(model_info(name)["small_config"])
        m = create_model(name, aus=AUS, branch_impl="loop", **cfg)
        assert isinstance(m.members[0], LSC) and m.members[0].branch_impl == "loop"
        assert m.config["branch_impl"] == "loop"  # the factory's bound arguments
        assert create_model(name, aus=AUS, **cfg).members[0].branch_impl == "auto"
        # checkpoints written before issue 21 record the members one by one
        shared = {k: cfg[k] for k in ("width", "depths", "input_size", "crop_size")}
        members = [{"model": "escda_lsc", "args": {**shared, **cfg["lsc"], "branch_impl": "loop"}},
                   {"model": "escda_gda", "args": shared}]
        again = create_model(name, aus=AUS, members=members, branch_impl="stacked")
        assert again.members[0].branch_impl == "stacked"
    with pytest.raises(ValueError, match="branch_impl"):
        create_model("escda", aus=AUS, branch_impl="fast", **model_info("escda")["small_config"])


def test_ensemble_loop_equals_stacked():
    cfg = dict(model_info("escda")["small_config"])
    loop = randomize(create_model("escda", aus=AUS, branch_impl="loop", **cfg)).eval()
    stacked = create_model("escda", aus=AUS, branch_impl="stacked", **cfg).eval()
    stacked.load_state_dict(loop.state_dict())
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(stacked.forward_logits(x), loop.forward_logits(x), atol=1e-5, rtol=0)


def test_stacked_ntb_identity_patch_embed_and_drop_path():
    """PatchEmbed is the identity when the input width is already C_s; with drop_path > 0 in eval
    the stacked block still equals the loop (stochastic depth is off in eval)."""
    torch.manual_seed(0)
    blocks = [randomize(NextTransformerBlock(48, 64, head_dim=16, drop_path=0.2), s).eval() for s in range(3)]
    assert isinstance(blocks[0].patch_embed.conv, torch.nn.Identity)
    x = torch.randn(2, 48, 4, 4)
    masks = torch.rand(3, 16)
    with torch.no_grad():
        ref = torch.cat([b(x, masks[i]) for i, b in enumerate(blocks)], dim=1)
        torch.testing.assert_close(branch_maps(stacked_ntb(x, blocks, masks), 2, 4, 4), ref, atol=1e-5, rtol=0)
    # training with drop_path: the output is a per-(branch, sample) mix of kept / dropped paths
    for b in blocks:
        b.train()
    out = stacked_ntb(x, blocks, masks)
    assert out.shape == (3, 64, 2 * 16) and torch.isfinite(out).all()


def test_stacked_batch_norm_matches_per_branch_bn_in_train_and_eval():
    torch.manual_seed(0)
    bns = [randomize(torch.nn.BatchNorm2d(5), s) for s in range(3)]
    ref = [randomize(torch.nn.BatchNorm2d(5), s) for s in range(3)]
    x = torch.randn(4, 15, 3, 3)
    for mode in (True, False):
        for b in bns + ref:
            b.train(mode)
        out = stacked_batch_norm(x, bns)
        want = torch.cat([r(c) for r, c in zip(ref, x.split(5, dim=1))], dim=1)
        torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
        for b, r in zip(bns, ref):
            for k, v in r.state_dict().items():
                torch.testing.assert_close(b.state_dict()[k], v, atol=1e-6, rtol=0)
