"""Optimiser groups, lr scaling and the warm-up + cosine schedule (hand-computed values)."""
import math

import pytest
import torch
from torch import nn

from audet.engine.optim import WarmupCosine, build_optimizer, param_groups, scaled_lr
from audet.models import create_model


class _WithPos(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 2)
        self.scale = nn.Parameter(torch.ones(8))


def test_no_decay_on_norms_biases_1d_and_position_embeddings():
    groups = {g["group"]: g for g in param_groups(_WithPos(), 0.05)}
    assert set(groups["decay"]["names"]) == {"conv.weight", "fc.weight"}
    assert set(groups["no_decay"]["names"]) == {
        "pos_embed", "conv.bias", "bn.weight", "bn.bias", "ln.weight", "ln.bias", "fc.bias", "scale"}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0


def test_optimizer_param_groups_of_a_registered_model():
    model = create_model("resnet_tiny", num_aus=3, width=4)
    opt, _ = build_optimizer(model, {"lr": 2e-3, "weight_decay": 0.05}, batch_size=32, world_size=2,
                             accumulate=1, steps_per_epoch=10, max_epochs=2)
    assert isinstance(opt, torch.optim.AdamW)
    by = {g["group"]: g for g in opt.param_groups}
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert norm_ids and norm_ids <= {id(p) for p in by["no_decay"]["params"]}
    assert all(p.ndim > 1 for p in by["decay"]["params"])
    assert by["decay"]["weight_decay"] == 0.05 and by["no_decay"]["weight_decay"] == 0.0
    n_all = sum(1 for _ in model.parameters())
    assert len(by["decay"]["params"]) + len(by["no_decay"]["params"]) == n_all
    # lr = 2e-3 * (32 * 2) / 256
    assert by["decay"]["initial_lr"] == pytest.approx(5e-4)


@pytest.mark.parametrize("bs,world,acc,expected", [(256, 1, 1, 2e-3), (32, 1, 1, 2.5e-4), (32, 4, 1, 1e-3), (16, 2, 2, 5e-4)])
def test_lr_scales_with_global_batch(bs, world, acc, expected):
    assert scaled_lr(2e-3, bs, world, acc) == pytest.approx(expected)
    assert scaled_lr(2e-3, bs, world, acc, scale=False) == 2e-3


def test_warmup_cosine_hand_computed():
    f = WarmupCosine(warmup_steps=4, total_steps=12)
    # warm-up: (s + 1) / 4
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # cosine over the 8 remaining steps: 0.5 * (1 + cos(pi * (s - 4) / 8))
    assert f(4) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))  # 0.853553
    assert f(8) == pytest.approx(0.5)
    assert f(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 8)))  # 0.146447
    assert f(12) == pytest.approx(0.0)
    g = WarmupCosine(2, 10, min_ratio=0.1)
    assert g(6) == pytest.approx(0.1 + 0.9 * 0.5)


def test_scheduler_values_per_step():
    model = nn.Linear(4, 2)
    opt, sched = build_optimizer(model, {"lr": 2.56e-3, "weight_decay": 0.05, "warmup_epochs": 1},
                                 batch_size=100, world_size=1, accumulate=1, steps_per_epoch=4, max_epochs=3)
    base = 2.56e-3 * 100 / 256  # 1e-3
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [base * WarmupCosine(4, 12)(s) for s in range(12)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] == pytest.approx(2.5e-4) and lrs[3] == pytest.approx(1e-3) and lrs[8] == pytest.approx(5e-4)


def test_optimizer_names_and_frozen_parameters_left_out():
    from audet.engine.optim import build_optimizer
    from audet.models import create_model

    model = create_model("resnet_tiny", num_aus=3, width=4)
    model.freeze(["trunk.stem.*"])
    base = {"lr": 0.1, "weight_decay": 0.01, "scale_lr": False, "warmup_epochs": 0}
    kw = dict(batch_size=8, world_size=1, accumulate=1, steps_per_epoch=4, max_epochs=2)
    frozen = {id(p) for n, p in model.named_parameters() if n.startswith("trunk.stem.")}
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        opt, _ = build_optimizer(model, {**base, "name": name}, **kw)
        assert type(opt) is cls
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        assert frozen and not ids & frozen and len(ids) == sum(1 for p in model.parameters() if p.requires_grad)
    opt, _ = build_optimizer(model, {**base, "name": "sgd", "momentum": 0.9, "nesterov": True}, **kw)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="adamw, adam, sgd"):
        build_optimizer(model, {**base, "name": "lion"}, **kw)
    model.freeze(["*"])
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(model, base, **kw)


def test_aunet_recipe_decays_the_lr_by_30_percent_every_4_epochs():
    # AU-Net section V-C: AdamW from 1e-4, "degrading every 4 epochs by 30%", 12 epochs
    from audet.engine.config import load_config

    cfg = load_config("aunet_bp4d")
    opt, sched = build_optimizer(nn.Linear(4, 2), cfg["optim"], batch_size=64, world_size=1, accumulate=1,
                                 steps_per_epoch=5, max_epochs=12)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[19] == pytest.approx(1e-4)
    assert lrs[20] == lrs[39] == pytest.approx(7e-5)
    assert lrs[40] == lrs[59] == pytest.approx(4.9e-5)


def test_linspace_warmup_and_min_lr_of_ac2d_code_recipe_hand_computed():
    """AC2D recipe=code: lr 4e-3 x 24 / 256 = 3.75e-4; warm-up numpy.linspace(0, lr, W) (step s has
    lr * s / (W - 1), step 0 has lr 0); cosine to min_lr 1e-6. W = 4 steps (1 epoch), T = 12."""
    from audet.engine.config import load_config

    cfg = load_config("ac2d_bp4d", ["recipe=code"])
    assert cfg["data"]["batch_size"] == 24 and cfg["optim"]["warmup_formula"] == "linspace"
    opt, sched = build_optimizer(nn.Linear(4, 2), cfg["optim"], batch_size=cfg["data"]["batch_size"], world_size=1,
                                 accumulate=1, steps_per_epoch=4, max_epochs=3)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # by hand: 3.75e-4 * [0, 1/3, 2/3, 1]; then 1e-6 + 3.74e-4 * 0.5 * (1 + cos(pi * (s - 4) / 8))
    assert lrs[0] == 0.0
    assert lrs[1] == pytest.approx(1.25e-4) and lrs[2] == pytest.approx(2.5e-4) and lrs[3] == pytest.approx(3.75e-4)
    assert lrs[4] == pytest.approx(3.75e-4)
    assert lrs[8] == pytest.approx(1.88e-4)  # 1e-6 + 3.74e-4 / 2
    assert lrs[11] == pytest.approx(1.52345e-5, rel=1e-4)  # 1e-6 + 3.74e-4 * 0.0380602 (cos(7 pi / 8) = -0.92388)
    # the default formula: (s + 1) / W, so step 0 already moves
    assert WarmupCosine(4, 12)(0) == 0.25 and WarmupCosine(4, 12, warmup_formula="linspace")(0) == 0.0
    assert WarmupCosine(1, 12, warmup_formula="linspace")(0) == 1.0
    with pytest.raises(ValueError, match="warmup_formula"):
        WarmupCosine(4, 12, warmup_formula="exp")


def test_parameters_without_gradient_are_skipped_by_adamw():
    """AC2D epoch_stale, epoch 0: the intervention layers are zero-touched (DDP) but take no part in
    the loss; the engine drops their gradients, so AdamW neither decays nor moves them (the authors'
    optimiser sees grad None). Once prototypes exist they train and decay like the rest."""
    from audet.engine.task import AUTask
    from audet.models import LossContext, create_model

    torch.manual_seed(0)
    m = create_model("ac2d", num_aus=2, img_size=32, depths=[1, 1, 2], embed_dim=16, causal_dim=32,
                     drop_path_rate=0.0, prototype="epoch_stale").train()
    task = AUTask({"optim": {"lr": 1.0, "weight_decay": 0.05}, "seed": 0, "data": {"batch_size": 2}}, m, LossContext())
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=0.1, weight_decay=0.05)
    inter = {n for n, _ in m.named_parameters() if ".intervention." in n}
    out = m(torch.randn(2, 3, 32, 32))
    out.logits.sum().backward()
    assert set(m.parameters_without_gradient()) == inter
    assert all(p.grad is not None and not p.grad.any() for n, p in m.named_parameters() if n in inter)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    task.on_before_optimizer_step(opt)
    opt.step()
    for n, p in m.named_parameters():
        if n in inter:
            assert p.grad is None and torch.equal(p, before[n]) and p not in opt.state, n
    assert not torch.equal(m.branches[0].head.weight, before["branches.0.head.weight"])
    # epoch 1: prototypes from epoch 0 -> the intervention takes part and nothing is dropped
    m.on_train_batch_end(out, {})
    m.on_train_epoch_end(0)
    opt.zero_grad()
    m(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    assert tuple(m.parameters_without_gradient()) == ()
    task.on_before_optimizer_step(opt)
    opt.step()
    w = "branches.0.intervention.w_x.weight"
    assert not torch.equal(dict(m.named_parameters())[w], before[w])


def test_weight_decay_scope_all_decays_every_parameter():
    """optim.weight_decay_scope=all: the plain torch optimiser (CISNet's published SGD decays norms
    and biases too); the default keeps them out."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = param_groups(model, 5e-4, scope="all")
    assert len(groups) == 1 and groups[0]["weight_decay"] == 5e-4
    assert len(groups[0]["names"]) == len(list(model.parameters()))
    default = {g["group"]: g["names"] for g in param_groups(model, 5e-4)}
    assert set(default["decay"]) == {"0.weight", "3.weight"}
    with pytest.raises(ValueError, match="weight_decay_scope"):
        param_groups(model, 5e-4, scope="some")


def test_training_time_f1_follows_selection_f1_convention():
    from audet.engine.task import AUTask
    from audet.models import LossContext, create_model

    m = create_model("resnet_tiny", num_aus=2, width=4)
    for conv in ("paper", "cis"):
        task = AUTask({"optim": {}, "seed": 0, "data": {"batch_size": 2}, "selection": {"f1_convention": conv}},
                      m, LossContext())
        task._eval_step({"image": torch.randn(2, 3, 32, 32), "labels": torch.ones(2, 2), "mask": torch.ones(2, 2),
                         "sequence": torch.tensor([0, 0]), "frame": torch.tensor([0, 1])}, 0)
        assert task._evaluators[0].convention == conv
