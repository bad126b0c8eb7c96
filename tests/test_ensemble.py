"""Ensembles: members from checkpoints or trained together, mean/vote combination by hand, one model
for checkpoints, complexity and the evaluator."""
import pytest
import torch

from audet.complexity import complexity_report
from audet.models import create_model
from audet.models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from audet.models.ensemble import Ensemble


def members(n=2, aus=(1, 2, 4)):
    torch.manual_seed(0)
    return [create_model("resnet_tiny", num_aus=len(aus), aus=list(aus), width=4).eval() for _ in range(n)]


def test_mean_and_vote_by_hand():
    ms = members(3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        p = torch.stack([torch.sigmoid(m.forward_logits(x)) for m in ms])
        mean = Ensemble(ms, "mean").eval()
        assert torch.allclose(torch.sigmoid(mean.forward_logits(x)), p.mean(0), atol=1e-6)
        vote = Ensemble(ms, "vote").eval()
        assert torch.allclose(torch.sigmoid(vote.forward_logits(x)), (p >= 0.5).float().mean(0).clamp(1e-6, 1 - 1e-6))
        assert torch.equal(mean(x).logits, mean.forward_logits(x)) and mean(x).aux["member_logits"].shape == (3, 2, 3)


def test_members_must_agree():
    a = create_model("resnet_tiny", num_aus=3, aus=[1, 2, 4], width=4)
    b = create_model("resnet_tiny", num_aus=3, aus=[1, 2, 6], width=4)
    with pytest.raises(ValueError, match="same AUs"):
        Ensemble([a, b])
    with pytest.raises(ValueError, match="combine"):
        Ensemble([a], "median")


def test_from_checkpoints_round_trip_and_complexity(tmp_path):
    ms = members(2)
    paths = [save_checkpoint(m, tmp_path / f"m{i}.safetensors")[0] for i, m in enumerate(ms)]
    ens = Ensemble.from_checkpoints(paths, combine="mean")
    x = torch.randn(2, 3, 64, 64)
    save_checkpoint(ens, tmp_path / "ens.safetensors")
    meta = read_checkpoint_meta(tmp_path / "ens.safetensors")
    assert meta["model"] == "ensemble" and [m["model"] for m in meta["model_config"]["members"]] == ["resnet_tiny"] * 2
    back = load_checkpoint(tmp_path / "ens.safetensors")
    with torch.no_grad():
        assert torch.equal(back.forward_logits(x), ens.forward_logits(x))
    # complexity: one model, the sum of its members
    one = complexity_report(ms[0], 64)
    both = complexity_report(ens, 64)
    assert both["params"] == 2 * one["params"] and both["flops"] == 2 * one["flops"]


def test_trained_together_loss_terms_and_gradients():
    ens = create_model("ensemble", num_aus=3, aus=[1, 2, 4],
                       members=[{"model": "resnet_tiny", "args": {"width": 4}}] * 2).train()
    x = torch.randn(4, 3, 64, 64)
    y = (torch.rand(4, 3) > 0.5).float()
    ctx = ens.loss_context(None, y.numpy(), torch.ones_like(y).numpy())
    terms = ens.loss_terms(ens(x), {"labels": y, "mask": torch.ones_like(y)}, ctx)
    assert set(terms) == {"m0/au", "m1/au"}
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in ens.parameters())


def test_trained_together_by_the_engine(tmp_path):
    from helpers import tensor_config, tensor_datamodule

    from audet.engine.fit import fit

    cfg = tensor_config(tmp_path / "run", **{
        "model.name": "ensemble", "trainer.max_epochs": 1,
        "model.args": {"members": [{"model": "resnet_tiny", "args": {"width": 4}}] * 2, "combine": "vote"}})
    res = fit(cfg, datamodule=tensor_datamodule(), verbose=False)
    assert 0 <= res["test"]["best"]["f1"] <= 1
    rows = (tmp_path / "run").glob("logs/csv/version_*/metrics.csv")
    header = next(iter(rows)).read_text().splitlines()[0]
    assert "train/m0/au_step" in header and "train/m1/au_step" in header
    model = load_checkpoint(tmp_path / "run/best.safetensors")
    assert isinstance(model, Ensemble) and model.combine == "vote" and len(model.members) == 2


def test_members_hooks_for_gradients_and_labels_only_stages_are_prefixed():
    """An ensemble forwards parameters_without_gradient (prefixed) and batch_keys (the union; None
    when a member needs the whole batch) of its members."""
    small = {"img_size": 32, "depths": [1, 1, 2], "embed_dim": 16, "causal_dim": 32, "drop_path_rate": 0.0}
    ens = create_model("ensemble", num_aus=2, aus=[1, 2], members=[
        {"model": "ac2d_av", "args": small},
        {"model": "ac2d", "args": {**small, "prototype": "epoch_stale"}}]).train()
    ens(torch.randn(2, 3, 32, 32))
    names = ens.parameters_without_gradient()
    own = dict(ens.named_parameters())
    assert names and all(n.startswith("members.1.branches.") and n in own for n in names)
    assert ens.batch_keys("vae") is None
    vae = create_model("ensemble", num_aus=2, aus=[1, 2], members=[
        {"model": "aunet_vae", "args": {"img_size": 64, "allow_random_pretrained": True}}] * 2)
    assert vae.batch_keys("vae") == ("labels", "mask") and vae.batch_keys("detector") is None
