"""AAR's m AU branches as ONE stacked computation (``branch_impl="stacked"``) vs the per-branch
loop (``"loop"``, the reference): same outputs (logits, p^(0), attention maps M^, losses), same
gradients of every parameter, same BatchNorm running statistics, with and without attention
learning (section III-B)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from audet.models import create_model, model_info
from audet.models.aar import AUAttentionBranch, stacked_branches
from audet.models.layers.stacked import stacked_batch_norm
from audet.models.base import LossContext

from helpers import randomize

VARIANTS = ["aar_bnet", "aar_bwnet", "aar_aa", "aar"]
ALL_VARIANTS = ["aar_bnet", "aar_bwnet", "aar_aa", "aar_aa_gsh", "aar_aa_gsp", "aar_aa_gsp_tavg", "aar"]
TINY = dict(unit_dim=2, img_size=48, clip_length=4, pool_dim=2)
AUS = [1, 2, 4]
ATOL = 1e-5
CTX = LossContext(au_weight=torch.tensor([0.5, 0.3, 0.2]), pos_weight=torch.tensor([1.0, 2.0, 3.0]))


def pair(name: str):
    """The loop and stacked models with identical (randomised: BN affine and running stats too) state."""
    torch.manual_seed(0)
    loop = randomize(create_model(name, num_aus=len(AUS), aus=AUS, branch_impl="loop", **TINY), seed=1)
    stacked = create_model(name, num_aus=len(AUS), aus=AUS, branch_impl="stacked", **TINY)
    stacked.load_state_dict(loop.state_dict())
    assert list(stacked.state_dict()) == list(loop.state_dict())  # names unchanged
    return loop, stacked


def batch(B=2, T=4, side=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = len(AUS)
    return {
        "image": torch.randn(B, T, 3, side, side, generator=g),
        "labels": (torch.rand(B, T, A, generator=g) > 0.5).float(),
        "mask": torch.ones(B, T, A),
        "subcenters": torch.rand(B, T, A, 2, 2, generator=g) * side,
    }


def close(a, b, atol=ATOL):
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


def run(model, b):
    out = model(b["image"])
    terms = model.loss_terms(out, b, CTX)
    return out, terms, sum(terms.values())


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_stacked_equals_loop_outputs_losses_gradients_and_running_stats(name, mode):
    loop, stacked = pair(name)
    b = batch()
    for m in (loop, stacked):
        m.train(mode == "train")
    outs = [run(m, b) for m in (loop, stacked)]
    (o1, t1, l1), (o2, t2, l2) = outs
    close(o1.logits, o2.logits)
    assert set(o1.aux) == set(o2.aux)
    for k in o1.aux:  # logits0 = p^(0), logits1 = p^(1), attention = M^
        close(o1.aux[k], o2.aux[k])
    if loop.attention_learning:
        assert {"logits0", "attention"} <= set(o1.aux) and o1.aux["attention"].shape == (2, 4, 3, 12, 12)
    assert set(t1) == set(t2)
    for k in t1:
        close(t1[k], t2[k])
    l1.backward()
    l2.backward()
    p2 = dict(stacked.named_parameters())
    for n, p in loop.named_parameters():
        assert (p.grad is None) == (p2[n].grad is None), n
        if p.grad is not None:
            assert (p.grad - p2[n].grad).abs().max().item() <= ATOL, n
    assert any(n.startswith("branches.") and p.grad is not None for n, p in stacked.named_parameters())
    s2 = stacked.state_dict()
    for n, v in loop.state_dict().items():  # running stats written back per branch, counters too
        if "running" in n:
            assert (v - s2[n]).abs().max().item() <= 1e-6, n
        elif n.endswith("num_batches_tracked"):
            assert int(v) == int(s2[n]) == (1 if mode == "train" else 0), n


@pytest.mark.parametrize("name", VARIANTS)
def test_stacked_forward_logits_on_frames_and_clips(name):
    loop, stacked = pair(name)
    loop.eval(), stacked.eval()
    x = batch()["image"]
    with torch.no_grad():
        close(loop.forward_logits(x), stacked.forward_logits(x))  # clips (B, T, m)
        close(loop.forward_logits(x[:, 0]), stacked.forward_logits(x[:, 0]))  # frames (B, m)
        close(loop.forward_logits(x[:1, 0]), stacked.forward_logits(x[:1, 0]))  # batch 1


def test_frozen_branches_in_eval_inside_a_training_model():
    """Stage ``relation`` keeps the attention network in eval mode while the rest trains."""
    loop, stacked = pair("aar")
    for m in (loop, stacked):
        m.train()
        m.region_learning.eval()
        m.branches.eval()
        m.on_stage_start("relation")
    b = batch()
    (o1, _, l1), (o2, _, l2) = run(loop, b), run(stacked, b)
    close(o1.logits, o2.logits)
    close(l1, l2)
    s1, s2 = loop.state_dict(), stacked.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1 if k.startswith("branches."))
    assert all(int(v) == 0 for k, v in s2.items() if k.endswith("num_batches_tracked"))


def test_stacked_branches_is_the_per_branch_stack():
    """:func:`stacked_branches` on its own, with a raw (non-sigmoid) attention map."""
    torch.manual_seed(0)
    brs = nn.ModuleList(AUAttentionBranch(5, 6, True, "none") for _ in range(3))
    randomize(brs, seed=2)
    x = torch.randn(2, 5, 8, 8)
    brs.eval()
    with torch.no_grad():
        f, att, lg = stacked_branches(x, brs)
        ref = [br(x) for br in brs]
    close(f, torch.stack([r[0] for r in ref], 1))
    close(att, torch.stack([r[1] for r in ref], 1))
    close(lg, torch.stack([r[2] for r in ref], 1))
    assert att.min() < 0  # no sigmoid


@pytest.mark.parametrize("momentum", [0.1, None])
def test_stacked_batch_norm_updates_each_branch_like_the_module(momentum):
    torch.manual_seed(0)
    ref = [nn.BatchNorm2d(4, momentum=momentum) for _ in range(3)]
    ours = [nn.BatchNorm2d(4, momentum=momentum) for _ in range(3)]
    for r, o in zip(ref, ours):
        o.load_state_dict(r.state_dict())
    for _ in range(3):  # cumulative averaging (momentum None) uses 1 / num_batches_tracked
        x = torch.randn(5, 12, 3, 3)
        want = torch.cat([bn(c) for bn, c in zip(ref, x.chunk(3, dim=1))], dim=1)
        close(stacked_batch_norm(x, ours), want)
    for r, o in zip(ref, ours):
        for k, v in r.state_dict().items():
            assert (v.float() - o.state_dict()[k].float()).abs().max().item() <= 1e-6, k
    ours[1].num_batches_tracked.add_(1)  # unequal counters: per-branch fallback, still exact
    ref[1].num_batches_tracked.add_(1)
    x = torch.randn(5, 12, 3, 3)
    want = torch.cat([bn(c) for bn, c in zip(ref, x.chunk(3, dim=1))], dim=1)
    close(stacked_batch_norm(x, ours), want)
    for r, o in zip(ref, ours):
        close(r.running_mean, o.running_mean, 1e-6)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_option_registered_for_every_variant(name):
    assert model_info(name)["reference_args"] == {"branch_impl": "loop"}
    m = create_model(name, num_aus=3, aus=AUS, branch_impl="stacked", **TINY)
    assert m.branch_impl == m.config["branch_impl"] == "stacked"
    assert create_model(name, num_aus=3, aus=AUS, **TINY).branch_impl == "auto"
    with pytest.raises(ValueError, match="branch_impl"):
        create_model(name, num_aus=3, aus=AUS, branch_impl="batched", **TINY)


def test_auto_is_the_loop_on_the_cpu_and_stacked_elsewhere():
    m = create_model("aar", num_aus=3, aus=AUS, **TINY)
    for B in (1, 8):
        assert not m._stacked(torch.empty(B, 16, 12, 12))
    assert m._stacked(torch.empty(1, 16, 12, 12, device="meta"))
    m.branch_impl = "stacked"
    assert m._stacked(torch.empty(8, 16, 12, 12))
    m.branch_impl = "loop"
    assert not m._stacked(torch.empty(1, 16, 12, 12, device="meta"))
