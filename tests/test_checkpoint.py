"""safetensors + JSON checkpoints: round trip, buffers, atomicity, clear errors, AU-identity init."""
import json

import pytest
import torch

from audet.models.checkpoint import (
    CheckpointError,
    init_from_checkpoint,
    load_checkpoint,
    map_state_by_au,
    read_checkpoint_meta,
    save_checkpoint,
)
from audet.models import AUModel, create_model

BP4D = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
DISFA = [1, 2, 4, 6, 9, 12, 25, 26]


def _tiny(aus, seed=0):
    torch.manual_seed(seed)
    m = create_model("resnet_tiny", num_aus=len(aus), aus=aus, width=4)
    # non-default buffers: BN running statistics
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, 32, 32))
    return m.eval()


def test_round_trip_reproduces_logits_and_buffers(tmp_path):
    m = _tiny([1, 2, 4])
    w, j = save_checkpoint(m, tmp_path / "m.safetensors", config={"a": 1}, epoch=3, metrics={"val/f1": 0.5})
    assert w.name == "m.safetensors" and j.name == "m.json"
    meta = json.loads(j.read_text())
    assert meta["model"] == "resnet_tiny" and meta["aus"] == [1, 2, 4] and meta["epoch"] == 3
    assert meta["metrics"] == {"val/f1": 0.5} and meta["audet_version"] and meta["preprocess"]["crop_size"] == 176
    loaded = load_checkpoint(w)  # no other argument
    x = torch.randn(2, 3, 40, 40)
    assert torch.equal(m(x).logits, loaded(x).logits)
    for k, v in m.state_dict().items():  # buffers (BN stats, num_batches_tracked) included
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.aus == (1, 2, 4)
    # metadata also lives in the safetensors header: the weights file alone is enough
    j.unlink()
    assert read_checkpoint_meta(w)["model"] == "resnet_tiny"
    assert torch.equal(load_checkpoint(w)(x).logits, m(x).logits)
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_wrong_checkpoints_give_clear_errors(tmp_path):
    m = _tiny([1, 2, 4])
    w, j = save_checkpoint(m, tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a 'resnet_tiny' model, not 'resnet18'"):
        load_checkpoint(w, model_name="resnet18")
    # a config that does not match the weights: shape mismatch names the tensor
    meta = json.loads(j.read_text())
    meta["model_config"]["width"] = 8
    j.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"does not fit model 'resnet_tiny'.*wrong shapes: "
                       r"trunk\.stem\.0\.weight: checkpoint \(4, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
        load_checkpoint(w)
    # another model's weights under this name: missing/unexpected keys are listed
    meta["model_config"]["width"] = 4
    meta["model"] = "resnet18"
    meta["model_config"] = {"num_aus": 3, "aus": [1, 2, 4]}
    j.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: trunk\.net\.conv1\.weight, .*"
                       r"unexpected in the checkpoint: trunk\.stages\."):
        load_checkpoint(w)
    meta["model"] = "no_such_model"
    j.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown model 'no_such_model'"):
        load_checkpoint(w)
    with pytest.raises(CheckpointError, match="never loaded|only for resuming"):
        load_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "junk.json").write_text(json.dumps({"format": "audet-checkpoint/1", "model": "resnet_tiny",
                                                    "aus": [1], "num_aus": 1, "model_config": {"width": 4}}))
    with pytest.raises(CheckpointError, match=r"junk.safetensors: not an audet checkpoint \(it is a text file"):
        load_checkpoint(tmp_path / "junk.safetensors")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not an audet checkpoint"):
        read_checkpoint_meta(tmp_path / "other.json")


def test_init_by_au_identity_disfa_from_bp4d(tmp_path):
    src = _tiny(BP4D, seed=1)
    w, _ = save_checkpoint(src, tmp_path / "bp4d")
    dst = _tiny(DISFA, seed=2)
    fresh_fc = dst.fc.weight.detach().clone()
    report = init_from_checkpoint(dst, w)
    assert report["mapped_aus"] == {1: 1, 2: 2, 4: 4, 6: 6, 12: 12}
    assert report["fresh_aus"] == [9, 25, 26]
    assert set(report["dropped_aus"]) == {7, 10, 14, 15, 17, 23, 24}
    for au in (1, 2, 4, 6, 12):
        i, j = DISFA.index(au), BP4D.index(au)
        assert torch.equal(dst.fc.weight[i], src.fc.weight[j]) and torch.equal(dst.fc.bias[i], src.fc.bias[j])
    for au in (9, 25, 26):
        i = DISFA.index(au)
        assert torch.equal(dst.fc.weight[i], fresh_fc[i])
    # the trunk (incl. BN buffers) is copied
    for k, v in src.trunk.state_dict().items():
        assert torch.equal(dst.trunk.state_dict()[k], v), k
    assert "fc.weight" in report["per_au"] and report["kept"] == []


class _Branchy(AUModel):
    """A model with one branch per AU in a ModuleList and no declarations (heuristic path)."""

    def __init__(self, aus):
        super().__init__(aus)
        self.trunk = torch.nn.Linear(3, 5)
        self.branches = torch.nn.ModuleList(torch.nn.Linear(5, 1) for _ in aus)
        self.register_buffer("proto", torch.randn(len(aus), 5))


def test_generic_heuristic_maps_module_lists_and_au_dims():
    torch.manual_seed(0)
    old, new = _Branchy([1, 2, 4, 12]), _Branchy([12, 9, 1])
    state, rep = map_state_by_au(new, old.state_dict(), [1, 2, 4, 12])
    assert rep["method"] == "heuristic" and rep["mapped_aus"] == {12: 12, 1: 1}
    assert torch.equal(state["branches.0.weight"], old.branches[3].weight)  # AU12
    assert torch.equal(state["branches.2.weight"], old.branches[0].weight)  # AU1
    assert torch.equal(state["branches.1.weight"], new.branches[1].weight)  # AU9 fresh
    assert torch.equal(state["proto"][0], old.proto[3]) and torch.equal(state["proto"][1], new.proto[1])
    assert torch.equal(state["trunk.weight"], old.trunk.weight)


def test_init_rejects_another_architecture(tmp_path):
    w, _ = save_checkpoint(_tiny([1, 2]), tmp_path / "a")
    other = create_model("resnet_tiny", num_aus=2, aus=[1, 2], width=8)
    with pytest.raises(CheckpointError, match="cannot initialise model 'resnet_tiny'.*init_strict_trunk"):
        init_from_checkpoint(other, w)


def test_describe_mismatch_names_keys_and_shapes():
    from audet.utils.state import describe_mismatch

    model = {"a.weight": (8, 3), "a.bias": (8,), "b.weight": torch.zeros(2, 2)}
    assert describe_mismatch(model, {k: torch.zeros(v) if isinstance(v, tuple) else v for k, v in model.items()}) == ""
    msg = describe_mismatch(model, {"a.weight": torch.zeros(4, 3), "b.weight": (2, 2), "z": (1,)})
    assert msg == ("missing from the checkpoint: a.bias; unexpected in the checkpoint: z; "
                   "wrong shapes: a.weight: checkpoint (4, 3) vs model (8, 3)")
    many = describe_mismatch({f"k{i}": (1,) for i in range(9)}, {}, limit=3)
    assert many == "missing from the checkpoint: k0, k1, k2, ... (9 in all)"


def test_recorded_preprocessing_is_restored(tmp_path):
    """A checkpoint trained with an opt-in resize must be evaluated with it: the JSON's
    preprocess wins over the model's defaults."""
    m = _tiny([1, 2])
    m.preprocess = {**m.preprocess, "resize": 120, "crop_size": 104}
    w, _ = save_checkpoint(m, tmp_path / "m.safetensors")
    loaded = load_checkpoint(w)
    assert loaded.preprocess["resize"] == 120 and loaded.preprocess["crop_size"] == 104
    assert create_model("resnet_tiny", num_aus=2, width=4).preprocess.get("resize") is None


def test_to_jsonable_plain_values():
    """Checkpoint metadata, DataInfo and ensemble configs go through one converter."""
    from pathlib import Path

    import numpy as np
    import torch

    from audet.utils.io import to_jsonable

    got = to_jsonable({1: np.float32(0.5), "t": torch.tensor(2.0), "a": np.arange(3), "p": Path("x/y"),
                       "nested": ({"m": torch.ones(2, 1)},), "none": None, "o": object})
    assert got == {"1": 0.5, "t": 2.0, "a": [0, 1, 2], "p": "x/y", "nested": [{"m": [[1.0], [1.0]]}],
                   "none": None, "o": str(object)}
    assert json.loads(json.dumps(got)) == got
