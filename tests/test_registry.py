"""Every registered model through the engine's interface: shapes, finite losses, gradient flow
(EVERY trainable parameter gets a gradient, every frozen one none), state hooks, the logits-only
path and checkpoint round trip. Uses each model's ``small_config`` (registry metadata)."""
import pytest
import torch

from audet.models.checkpoint import load_checkpoint, save_checkpoint
from audet.models import DataInfo, LossContext, ModelOutput, create_model, list_models, model_info

AUS = [1, 2, 4, 12]
def small_config(name: str) -> dict:
    """The test size every model declares at registration (``register_model(small_config=...)``)."""
    info = model_info(name)
    assert info.get("small_config") is not None, f"{name} is registered without a small_config"
    return dict(info["small_config"])


#: a DataInfo for models built from data (subject-dependent models need the vocabulary)
DATA = DataInfo(aus=AUS, subjects=["S0", "S1", "S2"], train_subjects=["S0", "S1"],
                label_stats={"n_frames": 6, "pos": [3, 3, 3, 3], "valid": [6, 6, 6, 6],
                             "train_frames_per_subject": {"S0": 3, "S1": 3}})


def make_batch(model, B=3, seed=0):
    from audet.facs import au_subcenters

    g = torch.Generator().manual_seed(seed)
    size = int(model.preprocess["crop_size"])
    clip = model.preprocess.get("clip")
    lead = (B,) if not clip else (B, len(clip.get("offsets", [])) or int(clip.get("length", 2)))
    centre = bool(clip) and clip.get("targets", clip.get("target")) == "centre"  # B x A targets
    labels = (torch.rand(*(lead[:1] if centre else lead), len(AUS), generator=g) > 0.5).float()
    labels.reshape(-1, len(AUS))[0] = 1.0
    labels.reshape(-1, len(AUS))[1] = 0.0
    lm = torch.rand(*(lead[:1] if centre else lead), 49, 2, generator=g) * size * 0.5 + size * 0.25
    return {
        "image": torch.randn(*lead, 3, size, size, generator=g),
        "labels": labels,
        "mask": torch.ones_like(labels),
        "landmarks": lm,
        "subcenters": torch.as_tensor(au_subcenters(lm, AUS)).float(),
        "subject": torch.arange(B) % 2,
        "sequence": torch.arange(B),
        "frame": torch.arange(B),
        "index": torch.arange(B),
    }


@pytest.fixture(params=list_models())
def model_and_batch(request):
    torch.manual_seed(0)
    model = create_model(request.param, num_aus=len(AUS), aus=AUS, data=DATA, **small_config(request.param))
    return model, make_batch(model)


def test_registry_lists_the_baselines():
    assert {"resnet18", "resnet_tiny"} <= set(list_models())
    with pytest.raises(KeyError, match="did you mean resnet_tiny"):
        create_model("resnet_tiyn", num_aus=2)


def test_forward_loss_gradients_hooks(model_and_batch):
    model, batch = model_and_batch
    assert model.model_name and model.aus == tuple(AUS) and model.num_aus == len(AUS)
    y = batch["labels"].reshape(-1, len(AUS)).numpy()
    ctx = model.loss_context(model.data_info, y, (y >= 0).astype("float32"))
    assert isinstance(ctx, LossContext)
    model.train()
    model.on_train_epoch_start(0)
    out = model(batch["image"])
    assert isinstance(out, ModelOutput)
    assert out.logits.shape[-1] == len(AUS)
    terms = model.loss_terms(out, batch, ctx)
    assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values()), terms
    loss = sum(terms.values())
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    assert params, "no trainable parameter"
    # timm's rule: EVERY trainable parameter receives a (finite) gradient, no frozen one does
    no_grad = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"{len(no_grad)} trainable parameters without gradient: {no_grad[:10]}"
    assert all(p.grad is None for _, p in frozen), [n for n, p in frozen if p.grad is not None][:10]
    with torch.no_grad():
        model.on_train_batch_end(ModelOutput(out.logits.detach(), {k: v.detach() for k, v in out.aux.items()}), batch)
    model.on_train_epoch_end(0)
    # the hooks leave the model usable; the logits-only path gives the same logits as forward in eval
    model.eval()
    with torch.no_grad():
        full = model(batch["image"]).logits
        assert torch.isfinite(full).all()
        # equal up to float rounding: forward_logits may use fused attention (AC2D does)
        torch.testing.assert_close(model.forward_logits(batch["image"]), full, atol=1e-5, rtol=0)


def test_frozen_modules_stay_in_eval_and_get_no_gradient(model_and_batch):
    """freeze(): requires_grad False, sub-modules locked in eval mode through train()."""
    model, batch = model_and_batch
    total = sum(p.numel() for p in model.parameters())
    first = next(n for n, m in model.named_modules() if n and 0 < sum(p.numel() for p in m.parameters()) < total)
    names = model.freeze([first + ".*"])
    assert names and all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(first + "."))
    model.train()
    assert not model.get_submodule(first).training and all(not m.training for m in model.get_submodule(first).modules())
    assert any(m.training for n, m in model.named_modules() if n and not n.startswith(first))
    out = model(batch["image"])
    y = batch["labels"].reshape(-1, len(AUS)).numpy()
    sum(model.loss_terms(out, batch, model.loss_context(model.data_info, y, (y >= 0).astype("float32"))).values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in names)
    assert all(p.grad is not None for n, p in model.named_parameters() if n not in names)
    model.unfreeze()
    model.train()
    assert model.get_submodule(first).training


def test_checkpoint_round_trip(model_and_batch, tmp_path):
    model, batch = model_and_batch
    model.train()
    with torch.no_grad():  # move BN statistics / prototypes away from their init
        out = model(batch["image"])
        model.on_train_epoch_start(0)
        model.on_train_batch_end(ModelOutput(out.logits, dict(out.aux)), batch)
        model.on_train_epoch_end(0)
    model.eval()
    w, _ = save_checkpoint(model, tmp_path / "m.safetensors", epoch=1)
    loaded = load_checkpoint(w)
    assert type(loaded) is type(model) and loaded.model_name == model.model_name
    # the factory's bound arguments (recorded by the registry) rebuild the same model
    assert loaded.config == model.config and list(loaded.aus) == AUS
    assert set(loaded.state_dict()) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        assert torch.equal(model(batch["image"]).logits, loaded(batch["image"]).logits)
