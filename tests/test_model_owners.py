"""One owner per model concept (issue 21): the AU list (``audet.facs``: ``default_aus``,
``parse_aus``, ``resolve_aus``; ``AUModel.aus``), the clip (the model's, ``audet.clip``) and the
model arguments (the registry records a factory's bound arguments as ``model.config``)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import make_prepared, tiny_config

from audet.clip import ClipMismatch, clip_offsets, parse_clip, served_clip
from audet.facs import DATASET_AUS, default_aus, parse_aus, resolve_aus
from audet.models import AUModel, create_model, list_models
from audet.models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from audet.models.registry import model_aus

BP4D = list(DATASET_AUS["BP4D"])
OLD = Path(__file__).parent / "data" / "checkpoint_v0"


# ------------------------------------------------------------------------------------------------
# the AU list
def test_default_aus_is_the_one_fallback():
    assert default_aus() == BP4D == [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
    assert default_aus(3) == [1, 2, 4]
    with pytest.raises(ValueError, match="give the AU list"):
        default_aus(13)
    # the registry's resolution: the list, else the data's, else the fallback; a count that disagrees is refused
    from audet.models import DataInfo

    assert model_aus([6, 1]) == [6, 1] and model_aus(None, 2) == [1, 2]
    assert model_aus(None, None, DataInfo(aus=[9, 25])) == [9, 25]
    with pytest.raises(ValueError, match="num_aus=3 but aus list 2 AUs"):
        model_aus([1, 2], 3)
    # every model family built without AUs gets the same ids (ac2d, escda, cisnet, aar looked at
    # the data or not before; now create_model decides once)
    for name, kw in (("resnet_tiny", {"width": 4}), ("escda_gda", {"width": 0.125, "depths": [1, 1, 1]}),
                     ("aar", {"img_size": 32, "unit_dim": 1, "pool_dim": 2, "clip_length": 3})):
        assert list(create_model(name, **kw).aus) == BP4D
        assert list(create_model(name, num_aus=2, **kw).aus) == [1, 2]


def test_au_model_takes_the_list_and_derives_the_count():
    class Net(AUModel):
        def __init__(self, aus):
            super().__init__(aus)

    m = Net([4, 1, 2])
    assert m.aus == (4, 1, 2) and m.num_aus == 3
    with pytest.raises(AttributeError):
        m.num_aus = 5  # derived, not a second owner
    for bad in (None, 3, []):
        with pytest.raises(ValueError, match="needs its AU numbers"):
            Net(bad)
    with pytest.raises(ValueError, match="repeats"):
        Net([1, 1])


def test_parse_aus_is_the_one_parser():
    from audet.commands._common import UsageError, parse_aus as flag_aus
    from audet.engine.config import ConfigError, resolve_config

    assert parse_aus("1,2, 4") == [1, 2, 4] and parse_aus([1.0, 2]) == [1, 2] and parse_aus(6) == [6]
    assert parse_aus("disfa") == list(DATASET_AUS["DISFA"]) and parse_aus(None) is None
    for bad, why in (("1,1", "not repeated"), ("0,2", ">= 1"), ("BP5D", "neither"), ([1.5], "not an AU number"),
                     ("", "empty")):
        with pytest.raises(ValueError, match=why):
            parse_aus(bad)
    # the flag and the config key read through it and reword its errors
    assert flag_aus("BP4D") == BP4D and flag_aus(["1", "2"]) == [1, 2]
    with pytest.raises(UsageError, match="--aus '1,1'.*not repeated"):
        flag_aus("1,1")
    assert resolve_config({"model": {"name": "resnet_tiny"}, "data": {"aus": "GFT"}})["data"]["aus"] == \
        list(DATASET_AUS["GFT"])
    with pytest.raises(ConfigError, match="data.aus"):
        resolve_config({"model": {"name": "resnet_tiny"}, "data": {"aus": [2, 2]}})


def test_resolve_aus_maps_columns_by_hand():
    assert resolve_aus([1, 2, 4, 6]) == ([1, 2, 4, 6], [0, 1, 2, 3])
    assert resolve_aus([1, 2, 4, 6], [6, 1]) == ([6, 1], [3, 0])
    assert resolve_aus(3, [9, 25, 26]) == ([9, 25, 26], [0, 1, 2])  # unknown ids: the list names every column
    with pytest.raises(ValueError, match=r"P1 has no labels for AU9, AU25 \(it has AUs \[1, 2, 4, 6\]\)"):
        resolve_aus([1, 2, 4, 6], [1, 9, 25], source="P1")
    with pytest.raises(ValueError, match="3 label columns but 2 AUs"):
        resolve_aus(3, [1, 2])
    with pytest.raises(ValueError, match="unknown"):
        resolve_aus(3)
    with pytest.raises(ValueError, match="repeats"):
        resolve_aus([1, 2], [1, 1])


def test_a_model_built_without_aus_has_the_same_ids_everywhere(tmp_path):
    """Training (AUTask), evaluation (`audet evaluate`), inference and ONNX metadata all read
    model.aus (before: 0..A-1 in training/evaluation, 1..A in inference and ONNX)."""
    from audet.data.meta import read_fold
    from audet.engine.evaluate import evaluate
    from audet.engine.task import AUTask
    from audet.inference.backends import TorchBackend
    from audet.inference.onnx_export import _meta

    model = create_model("resnet_tiny", num_aus=3, width=4)
    assert list(model.aus) == [1, 2, 4]
    root = make_prepared(tmp_path / "data", n_subjects=3, frames=2, n_parts=3)
    assert AUTask(tiny_config(root, tmp_path / "run"), model).aus == [1, 2, 4]
    assert TorchBackend(model).aus == [1, 2, 4]
    assert _meta(model)["aus"] == [1, 2, 4]
    w, _ = save_checkpoint(model, tmp_path / "m.safetensors")
    assert list(load_checkpoint(w).aus) == [1, 2, 4]
    result = evaluate(w, root, read_fold(root, 0)["test"])  # the data has AUs 1, 2, 4, 6
    assert result["aus"] == [1, 2, 4] and result["skipped_data_aus"] == [6]


def test_the_checkpoint_stores_the_au_list_once(tmp_path):
    from audet.models import DataInfo

    data = DataInfo(aus=[6, 1, 2], subjects=["A", "B"], train_subjects=["A"])
    m = create_model("cisnet_tiny", aus=[6, 1, 2], data=data, backbone_args={"width": 4}, img_size=64)
    w, j = save_checkpoint(m, tmp_path / "m")
    meta = read_checkpoint_meta(w)
    assert meta["aus"] == [6, 1, 2]
    assert "num_aus" not in meta and "aus" not in meta["model_config"] and "aus" not in meta["data_info"]
    assert json.dumps(meta).count("[6, 1, 2]") == 1
    back = load_checkpoint(w)
    assert list(back.aus) == [6, 1, 2] and back.data_info.aus == [6, 1, 2]
    assert back.data_info.subjects == ["A", "B"]


@pytest.mark.parametrize("name,aus", [("resnet_tiny_noaus", [1, 2, 4]), ("cisnet_tiny", [1, 2, 4]),
                                      ("escda", [1, 2, 4])])
def test_old_layout_checkpoints_still_load(tmp_path, name, aus):
    """tests/data/checkpoint_v0/*.json were written by audet before issue 21 (num_aus and the AU
    list in model_config, data_info and the top; escda's members recorded one by one; a model
    without AUs as `aus: []`). The weights do not depend on the layout: they come from a model
    built now with the same arguments, saved, and given the old sidecar."""
    from audet.models import DataInfo

    torch.manual_seed(0)
    if name == "resnet_tiny_noaus":
        m = create_model("resnet_tiny", num_aus=3, width=4)
    elif name == "cisnet_tiny":
        d = DataInfo(aus=aus, subjects=["A", "B", "C"], train_subjects=["A", "B"], dataset="BP4D")
        m = create_model("cisnet_tiny", aus=aus, data=d, backbone_args={"width": 4}, img_size=64)
    else:
        m = create_model("escda", aus=aus, width=0.125, depths=[1, 1, 1], input_size=64, crop_size=64,
                         lsc={"head_dim": 16})
    w, j = save_checkpoint(m.eval(), tmp_path / name)
    shutil.copyfile(OLD / f"{name}.json", j)
    old = json.loads(j.read_text())
    assert "num_aus" in old and ("num_aus" in old["model_config"] or "members" in old["model_config"])  # old layout
    back = load_checkpoint(w)
    assert type(back) is type(m) and list(back.aus) == aus
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back.forward_logits(x), m.forward_logits(x))
    if name == "cisnet_tiny":
        assert back.data_info.subjects == ["A", "B", "C"] and back.data_info.aus == aus


# ------------------------------------------------------------------------------------------------
# the clip
def test_parse_clip_and_offsets():
    assert parse_clip({"length": 8}) == {"length": 8, "stride": 1, "windows": "sliding", "pad": True}
    assert parse_clip({"offsets": [-10, 0, 10], "targets": "center"}) == {"offsets": [-10, 0, 10],
                                                                          "targets": "centre"}
    assert parse_clip(None) is None and parse_clip({}) is None
    assert clip_offsets({"length": 3, "stride": 2}) == ([-2, 0, 2], 1)
    with pytest.raises(ValueError, match="unknown keys"):
        parse_clip({"length": 3, "lenght": 4})


def test_an_even_clip_has_one_centre_in_training_scoring_and_inference(tmp_path):
    """A clip of an even length T has two middle frames; the dataset (``batch["centre"]``), the
    evaluator's fallback and inference (``clip_offsets``) all take position (T - 1) // 2."""
    from audet.data import AUDataset
    from audet.engine.scoring import AUEvaluator

    root = make_prepared(tmp_path / "prep", n_subjects=3, frames=8)
    prefix = sorted(p.name[: -len("_path.txt")] for p in (root / "list").glob("*_part1_path.txt"))[0]
    offsets, centre = clip_offsets({"length": 4})
    assert offsets == [-1, 0, 1, 2] and centre == 1
    ds = AUDataset(root, prefix, clip={"length": 4, "windows": "disjoint"})
    assert ds.centre == centre and int(ds[0]["centre"]) == centre
    # the evaluator, given clips without "centre", prefers the same position for a frame seen twice
    ev = AUEvaluator([1], [0])
    T = 4
    logits = torch.full((2, T, 1), -5.0)
    logits[0, centre] = 5.0  # clip 0 says "present" only at its centre position
    frames = torch.tensor([[1, 2, 3, 4], [0, 1, 2, 3]])  # frame 2: clip 0's position 1, clip 1's position 2
    batch = {"labels": torch.ones(2, T, 1), "mask": torch.ones(2, T, 1), "sequence": torch.zeros(2, dtype=torch.long),
             "frames": frames}
    ev.process(batch, logits)
    p = ev.arrays()[0][:, 0]
    k = ev.keys()
    assert p[(k[:, 1] == 2)].item() > 0.5  # frame 2: clip 0's centre (1) beats clip 1's position T // 2


def test_a_data_clip_that_disagrees_with_the_model_is_refused_naming_both():
    with pytest.raises(ClipMismatch) as exc:
        served_clip({"length": 16}, {"length": 8, "windows": "disjoint"}, model="model aar")
    msg = str(exc.value)
    assert "\n" not in msg and "data.clip {length: 8, windows: disjoint}" in msg
    assert "model aar's clip {length: 16, stride: 1}" in msg
    with pytest.raises(ClipMismatch, match="single frames"):
        served_clip(None, {"length": 3})
    with pytest.raises(ClipMismatch, match=r"offsets: \[-10, 0, 10\]"):
        served_clip({"offsets": [-10, 0, 10]}, {"offsets": [-5, 0, 5]})
    # windows/pad are the data's; repeating the model's values is allowed
    assert served_clip({"length": 8}, {"windows": "disjoint"}) == {"length": 8, "stride": 1,
                                                                   "windows": "disjoint", "pad": True}
    assert served_clip({"length": 8}, {"length": 8}) == parse_clip({"length": 8})
    assert served_clip({"length": 8}, None) == parse_clip({"length": 8})


def test_the_engine_refuses_a_disagreeing_data_clip_before_training(tmp_path):
    from audet.engine.fit import fit

    root = make_prepared(tmp_path / "data", n_subjects=3, frames=3, n_parts=3)
    cfg = tiny_config(root, tmp_path / "run", **{"data.clip": {"length": 3}})  # resnet_tiny takes frames
    with pytest.raises(ClipMismatch, match=r"data.clip \{length: 3\} disagrees with model resnet_tiny's clip none"):
        fit(cfg)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.ckpt"))


def test_the_datamodule_serves_the_models_clip_with_the_datas_windows(tmp_path):
    from audet.data import AUDataModule

    root = make_prepared(tmp_path / "data", n_subjects=3, frames=3, n_parts=3)
    dm = AUDataModule.from_fold(root, 0, clip={"windows": "disjoint"}, num_workers=0, val_fraction=0)
    dm.use_preprocess({"crop_size": 176, "clip": {"length": 2}}, model="aar")
    assert dm.clip == {"length": 2, "stride": 1, "windows": "disjoint", "pad": True}
    dm2 = AUDataModule.from_fold(root, 0, clip={"length": 3}, num_workers=0, val_fraction=0)
    with pytest.raises(ClipMismatch, match="model aar's clip"):
        dm2.use_preprocess({"crop_size": 176, "clip": {"length": 2}}, model="aar")


def test_packaged_aar_configs_leave_the_run_length_to_the_model():
    from audet.engine.config import load_config

    for name in ("aar_synth_quick", "aar_bp4d"):
        cfg = load_config(name)
        assert cfg["data"]["clip"] == {"windows": "disjoint"}, name
        clip = create_model("aar", **{**cfg["model"]["args"], "img_size": 32}).preprocess["clip"]
        assert served_clip(clip, cfg["data"]["clip"])["length"] == cfg["model"]["args"]["clip_length"]


def test_a_clip_override_through_the_model_is_recorded_and_used_by_inference(tmp_path):
    from audet.inference.backends import TorchBackend

    m = create_model("aar", aus=[1, 2], img_size=32, unit_dim=1, pool_dim=2, clip_length=3,
                     preprocess={"clip": {"length": 5, "stride": 2}})
    assert m.preprocess["clip"] == {"length": 5, "stride": 2}
    assert m.config["preprocess"] == {"clip": {"length": 5, "stride": 2}}
    w, _ = save_checkpoint(m, tmp_path / "m")
    back = load_checkpoint(w)
    assert back.preprocess["clip"] == {"length": 5, "stride": 2}
    assert TorchBackend(back).offsets == [-4, -2, 0, 2, 4]


# ------------------------------------------------------------------------------------------------
# the model arguments
def test_the_registry_records_bound_arguments_with_defaults(tmp_path):
    # AAR never stored `preprocess` by hand: a checkpoint rebuilt it without the opt-in resize
    m = create_model("aar", aus=[1, 2], img_size=32, unit_dim=1, pool_dim=2, clip_length=3,
                     preprocess={"resize": 40})
    assert m.config["preprocess"] == {"resize": 40} and m.config["lambda_a"] == 2.0  # a default, recorded
    assert "aus" not in m.config and "data" not in m.config and "num_aus" not in m.config
    w, _ = save_checkpoint(m, tmp_path / "m")
    assert read_checkpoint_meta(w)["model_config"]["preprocess"] == {"resize": 40}
    assert load_checkpoint(w).config == m.config
    # a variant's defaults are the recorded defaults
    assert create_model("ac2d_bnet", aus=[1], img_size=64, depths=[1, 1, 2], embed_dim=16,
                        causal_dim=32).config["attention_loss"] == "none"
    with pytest.raises(TypeError, match="'resnet_tiny'.*unexpected keyword argument 'widht'.*accepts"):
        create_model("resnet_tiny", widht=4)


def test_no_model_writes_its_config_by_hand():
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "audet" / "models"
    bad = []
    for p in sorted(src.rglob("*.py")):
        if p.name == "registry.py":
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"\.config(\.update\(| = )", line) and "from_checkpoints" not in line:
                bad.append(f"{p.relative_to(src)}:{i}: {line.strip()}")
    # Ensemble.from_checkpoints builds a model outside the registry and records what
    # create_model("ensemble", members=...) would
    assert [b for b in bad if not b.startswith("ensemble.py")] == []
    assert len([b for b in bad if b.startswith("ensemble.py")]) == 1


def test_a_factory_of_the_old_contract_is_refused_at_registration():
    from audet.models.registry import register_model

    with pytest.raises(TypeError, match="must take the AU list `aus`"):
        register_model(lambda num_aus=12, aus=None: None, name="old_contract")
    with pytest.raises(TypeError, match="must take the AU list `aus`"):
        register_model(lambda width=4: None, name="no_aus")
    assert "old_contract" not in list_models() and "no_aus" not in list_models()


def test_a_misspelt_method_module_fails_loudly():
    """The method modules are plain imports in models/__init__.py: a misspelling is an
    ImportError, not a silently missing method."""
    import audet.models

    text = Path(audet.models.__file__).read_text()
    assert "import ac2d, baseline, ensemble, cisnet, escda, aar, aunet" in text and "except" not in text
    bad = text.replace("import ac2d, baseline", "import ac2dd, baseline")
    with pytest.raises(ImportError, match="ac2dd"):
        exec(compile(bad, "models/__init__.py", "exec"), {"__name__": "audet.models", "__package__": "audet.models"})
    assert {"ac2d", "resnet18", "ensemble", "cisnet_r34", "escda", "aar", "aunet"} <= set(list_models())


def test_models_have_no_import_cycles_and_the_engine_no_private_registry():
    from test_imports import cycles, import_graph

    # (audet -> inference -> engine.checkpoint -> models.checkpoint -> audet for __version__ is
    # the package-wide import test's, issue 21 item 5)
    bad = [c for c in cycles(import_graph()) if all(m.startswith("audet.models") for m in c)]
    assert not bad, f"import cycles inside audet.models: {bad}"
    engine = Path(__file__).resolve().parents[1] / "src" / "audet" / "engine"
    assert not [p.name for p in engine.rglob("*.py") if "_REGISTRY" in p.read_text()]


def test_au_transfer_is_declared_not_overridden():
    """AC2D, AUNet and CISNet declared au_fresh_keys instead of re-implementing map_state_by_au."""
    from audet.models.aunet import AUNet, ResNet18A
    from audet.models.base import AUModel as Base
    from audet.models.checkpoint import map_state_by_au

    assert not hasattr(Base, "au_state_map")
    assert AUNet.au_fresh_keys == ResNet18A.au_fresh_keys == ("vae.*",)
    old = create_model("resnet_tiny", aus=[1, 2, 4], width=4)
    new = create_model("resnet_tiny", aus=[4, 9], width=4)
    new.au_fresh_keys = ("trunk.stem.*",)  # an instance declaration works like a class one
    fresh = {k: v.clone() for k, v in new.state_dict().items() if k.startswith("trunk.stem.")}
    state, report = map_state_by_au(new, old.state_dict(), [1, 2, 4])
    assert sorted(report["reset"]) == sorted(fresh) and all(torch.equal(state[k], v) for k, v in fresh.items())
    assert torch.equal(state["fc.weight"][0], old.state_dict()["fc.weight"][2])  # AU4 <- AU4
