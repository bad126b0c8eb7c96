"""AC2D converter: authors' checkpoint layout <-> audet, by rule; errors; safe loading; CLI.

Fake authors' checkpoints are generated from our own model through the inverse name mapping, so
these tests run without ../shared; when shared/ is there, fakes are also built from the authors'
state_dict listings (original-checkpoints/ac2d_*.tsv) with random values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pickle

import pytest
import torch

from audet.models import create_model
from audet.models.convert.ac2d import (
    ConversionError,
    audet_to_authors_name,
    convert_ac2d,
    load_authors_checkpoint,
    save_converted,
    to_authors_checkpoint,
)

from helpers import REFERENCE as TSV_DIR, randomize as _randomize

BP4D = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
DISFA = (1, 2, 4, 6, 9, 12, 25, 26)


def randomize(model, seed=0):
    return _randomize(model, seed, skip=("proto_",))


@pytest.fixture(scope="module")
def authors12():
    """A fake authors' checkpoint dict (12 AUs) made from a random audet model, and that model."""
    m = randomize(create_model("ac2d", aus=BP4D, confounder_scale="code", prototype="epoch_stale"))
    k = torch.randn(12, 64)
    m.set_prototypes(k, 1000.0)  # code scale: V = K / 1000
    return to_authors_checkpoint(m), m


def test_name_rule_examples():
    r = audet_to_authors_name
    assert r("stem.pa.conv.weight") == "stem.pos.pa_conv.weight"
    assert r("stem.proj.4.running_var") == "stem.proj.4.running_var"
    assert r("embed2.pa.conv.bias") == "patch_2.pos.pa_conv.bias"
    assert r("stage2.5.attn.up_conv.weight") == "stage2.5.attn.up.0.weight"
    assert r("branches.3.embed.proj.weight") == "aus_patch_3.3.proj.weight"
    assert r("branches.3.blocks.0.attn.q.bias") == "aus_stage3_start.3.0.attn.q.bias"
    assert r("branches.3.blocks.1.norm1.weight") == "aus_stage3_interm.3.norm1.weight"
    assert r("branches.11.blocks.2.mlp.fc2.weight") == "aus_stage3_end.11.mlp.fc2.weight"
    assert r("branches.0.intervention.w_z.bias") == "aus_data_attention.0.smap.bias"
    assert r("branches.0.intervention.w_q.weight") == "aus_data_attention.0.qmap.weight"
    assert r("branches.7.head.weight") == "aus_head.7.weight"
    assert r("proto_k") is None


def test_round_trip_state_and_prototypes(authors12, tmp_path):
    ck, ref = authors12
    assert len(ck["model"]) == 1042  # the authors' entry count
    assert ck["P_data"] == pytest.approx(1e-3)
    path = tmp_path / "net_20.pth"
    torch.save(ck, path)
    m = convert_ac2d(path, "BP4D")
    assert m.model_name == "ac2d" and m.aus == BP4D and not m.training
    assert m.config["confounder_scale"] == "code" and m.config["prototype"] == "epoch_stale"
    own, want = m.state_dict(), ref.state_dict()
    assert set(own) == set(want)
    for k in want:
        assert torch.equal(own[k], want[k]), k
    assert m.conversion_report["V_minus_PK_max_abs"] < 1e-6
    # and back again
    back = to_authors_checkpoint(m)
    assert set(back["model"]) == set(ck["model"])
    assert all(torch.equal(back["model"][k], ck["model"][k]) for k in ck["model"])


def test_numpy_prototypes_load_with_restricted_unpickler(authors12, tmp_path):
    ck, ref = authors12
    path = tmp_path / "np.pth"
    torch.save({"model": ck["model"], "K_data": ck["K_data"].numpy(), "V_data": ck["V_data"].numpy(),
                "P_data": np.float64(ck["P_data"])}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # numpy needs the allow-list
    m = convert_ac2d(path, "BP4D")
    assert torch.equal(m.proto_k, ref.proto_k) and torch.allclose(m.proto_v, ref.proto_v)


def test_refuses_non_numpy_globals(authors12, tmp_path):
    ck, _ = authors12
    path = tmp_path / "evil.pth"
    torch.save({"model": ck["model"], "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(ConversionError, match="argparse.Namespace"):
        convert_ac2d(path)


def test_wrong_shape_is_named(authors12):
    ck, _ = authors12
    sd = dict(ck["model"])
    sd["aus_stage3_interm.4.attn.kv.weight"] = torch.zeros(64, 64)
    with pytest.raises(ConversionError, match=r"aus_stage3_interm\.4\.attn\.kv\.weight: checkpoint \(64, 64\) vs model \(128, 64\)"):
        convert_ac2d({"model": sd})


def test_missing_and_unexpected_keys_are_named(authors12):
    ck, _ = authors12
    sd = dict(ck["model"])
    del sd["aus_head.3.bias"]
    del sd["stage2.4.attn.sr_norm.weight"]
    sd["aus_extra.0.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError) as e:
        convert_ac2d({"model": sd})
    msg = str(e.value)
    assert "missing from the checkpoint: " in msg
    assert "aus_head.3.bias" in msg and "stage2.4.attn.sr_norm.weight" in msg
    assert "unexpected in the checkpoint: aus_extra.0.weight" in msg


def test_wrong_au_list_and_wrong_model(authors12):
    ck, _ = authors12
    with pytest.raises(ConversionError, match="12 AU branches but 8 AUs"):
        convert_ac2d(ck, "DISFA")
    with pytest.raises(ConversionError, match="not an AC2D checkpoint"):
        convert_ac2d({"conv1.weight": torch.zeros(3), "fc.weight": torch.zeros(2)})
    with pytest.raises(ConversionError, match="K_data has shape"):
        convert_ac2d({**ck, "K_data": torch.zeros(8, 64)})


def test_disfa_8_aus_and_bare_state_dict_with_module_prefix(tmp_path):
    m8 = randomize(create_model("ac2d", aus=DISFA), seed=1)
    sd = {"module." + k: v for k, v in to_authors_checkpoint(m8)["model"].items()}  # DataParallel-style, bare
    path = tmp_path / "net_0.pth"
    torch.save(sd, path)
    m = convert_ac2d(path, "DISFA")
    assert m.aus == DISFA and m.num_aus == 8
    assert sum(p.numel() for p in m.parameters()) == 2_565_096
    assert not bool(m.proto_valid) and m.conversion_report["prototypes"] is False
    assert torch.equal(m.branches[7].head.weight, m8.branches[7].head.weight)


def test_checkpoint_without_causal_layers_becomes_av(authors12):
    ck, _ = authors12
    sd = {k: v for k, v in ck["model"].items() if not k.startswith("aus_data_attention.")}
    m = convert_ac2d({"model": sd}, "BP4D")
    assert m.model_name == "ac2d_av" and not m.has_intervention


def test_converted_forward_matches_source_model(tmp_path):
    """Same outputs through the conversion (tiny config, so a forward is cheap)."""
    cfg = dict(img_size=64, depths=(1, 1, 3), drop_path_rate=0.0)
    src = randomize(create_model("ac2d", num_aus=2, prototype="epoch_stale", confounder_scale="code", **cfg), seed=2)
    src.set_prototypes(torch.randn(2, 64), 50.0)
    ck = to_authors_checkpoint(src)
    m = convert_ac2d(ck, "1,2", **cfg)
    x = torch.randn(2, 3, 64, 64)
    src.eval()
    with torch.no_grad():
        a, b = src(x), m(x)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert m.aus == (1, 2)


def test_save_converted_and_cli(authors12, tmp_path):
    from audet.cli import main

    ck, ref = authors12
    src = tmp_path / "net_20.pth"
    torch.save(ck, src)
    out = tmp_path / "out" / "ac2d_bp4d"
    assert main(["convert", "ac2d", str(src), "--out", str(out), "--aus", "BP4D"]) == 0
    weights, meta = out.with_name("ac2d_bp4d.safetensors"), out.with_name("ac2d_bp4d.json")
    assert weights.is_file() and meta.is_file()
    info = json.loads(meta.read_text())
    assert info["model"] == "ac2d" and info["aus"] == list(BP4D)
    assert info["model_config"]["confounder_scale"] == "code"
    assert info["preprocess"]["crop_size"] == 176
    from safetensors.torch import load_file

    tensors = load_file(str(weights))
    assert torch.equal(tensors["proto_k"], ref.proto_k) and bool(tensors["proto_valid"])
    rebuilt = create_model(info["model"], **info["model_config"])
    rebuilt.load_state_dict(tensors, strict=True)
    # wrong AU count through the CLI: a one-line error, exit code 2
    assert main(["convert", "ac2d", str(src), "--out", str(tmp_path / "x"), "--aus", "DISFA"]) == 2


def test_save_converted_writes_an_audet_checkpoint(authors12, tmp_path):
    ck, _ = authors12
    m = convert_ac2d(ck, "BP4D")
    w, j = save_converted(m, tmp_path / "fb")
    meta = json.loads(j.read_text())
    assert {"format", "model", "model_config", "aus", "preprocess"} <= set(meta)
    from safetensors import safe_open

    with safe_open(str(w), "pt") as f:
        assert json.loads(f.metadata()["audet"])["model"] == "ac2d"
        assert "branches.11.head.bias" in f.keys()


# ---------------------------------------------------------------------------------------------
# fakes from the authors' state_dict listings (needs ../shared)
def read_tsv(path: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("name\t") or not line.strip():
            continue
        name, shape, _numel, _kind = line.split("\t")
        shape = json.loads(shape)
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(1000, dtype=torch.int64)
        else:
            sd[name] = torch.randn(shape, generator=g)
    return sd


@pytest.mark.parametrize("tsv,aus,n", [("ac2d_bp4d_12au.tsv", "BP4D", 3_625_196), ("ac2d_disfa_8au.tsv", "DISFA", 2_565_096)])
def test_fake_from_authors_listing(tsv, aus, n):
    path = TSV_DIR / tsv
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared absent)")
    sd = read_tsv(path)
    n_aus = 12 if aus == "BP4D" else 8
    m = convert_ac2d({"model": sd, "K_data": torch.randn(n_aus, 64), "V_data": None, "P_data": 0.5}, aus)
    assert sum(p.numel() for p in m.parameters()) == n
    own = m.state_dict()
    assert torch.equal(own["branches.2.blocks.1.attn.up_conv.weight"], sd["aus_stage3_interm.2.attn.up.0.weight"])
    assert torch.equal(own["stem.proj.1.num_batches_tracked"], sd["stem.proj.1.num_batches_tracked"])
    assert torch.allclose(m.proto_v, m.proto_k * 0.5)  # V = P * K when only P_data is given
    # the rule maps onto exactly the authors' names
    assert set(to_authors_checkpoint(m)["model"]) == set(sd)


def test_load_authors_checkpoint_shapes():
    ck = load_authors_checkpoint({"model": {"a": torch.zeros(1)}, "K_data": np.ones((2, 3)), "V_data": None, "P_data": 0.25})
    assert ck["K_data"].dtype == torch.float32 and ck["P_data"] == 0.25 and ck["V_data"] is None
    with pytest.raises(ConversionError):
        load_authors_checkpoint([1, 2, 3])
