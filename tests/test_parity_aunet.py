"""Parity with the AU-Net authors' outputs (shared/reference/golden/aunet_predictor_12au, aunet_vae_bp4d).

The golden files come from the authors' own ``AUFAN_TDN_(0.9, 0.1, 12)`` and ``VAE(12, 8)`` with
seeded random weights. We import ``fc_11.pth`` BY POSITION (as their test.py does) and
``vae_100.pth`` by name, and compare every stored output with atol 1e-5. Skipped when ../shared
is not beside the repo.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from helpers import GOLDEN, REFERENCE as REF, golden_io as _io, one_thread, parity_marks, reference_layout

PRED = GOLDEN / "aunet_predictor_12au"
VAE = GOLDEN / "aunet_vae_bp4d"
ATOL = 1e-5

pytestmark = parity_marks(PRED / "fc_11.pth", VAE / "vae_100.pth")


@pytest.fixture(scope="module")
def converted():
    from audet.models.convert.aunet import convert_aunet

    return convert_aunet(PRED / "fc_11.pth", "BP4D", vae=VAE / "vae_100.pth")


def _one_thread(fn):
    with one_thread(), torch.no_grad():
        return fn()


def test_predictor_logits(converted):
    io = _io(PRED)
    assert converted.model_name == "aunet" and converted.aus == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    assert converted.config["fusion"] == [0.9, 0.1]
    out = _one_thread(lambda: converted.predictor(io["feat_cur"], io["feat_former"], io["feat_later"]))
    assert out.shape == io["logits"].shape == (2, 12)
    assert (out - io["logits"]).abs().max().item() < ATOL
    # the temporal branch matters: without the neighbours the logits differ
    same = _one_thread(lambda: converted.predictor(io["feat_cur"], io["feat_cur"], io["feat_cur"]))
    assert (same - io["logits"]).abs().max().item() > 1e-3


def test_by_position_ignores_stored_names():
    """Released files may carry other names: only order and shapes count (test.py's zip)."""
    from audet.models.convert.aunet import convert_aunet, read_state_dict

    sd = read_state_dict(PRED / "fc_11.pth")
    renamed = OrderedDict((f"w{i}", v) for i, v in enumerate(sd.values()))
    model = convert_aunet(renamed, "BP4D")
    io = _io(PRED)
    out = _one_thread(lambda: model.predictor(io["feat_cur"], io["feat_former"], io["feat_later"]))
    assert (out - io["logits"]).abs().max().item() < ATOL
    assert len(model.conversion_report["renamed"]) == len(sd)


def test_predictor_layout_matches_reference_rows(converted):
    rows = reference_layout(REF / "aunet_tdn_12au.tsv")
    own = converted.predictor.state_dict()
    assert [r[0] for r in rows] == list(own)
    assert sum(p.numel() for p in converted.predictor.parameters()) == 2_657_036


def test_vae_outputs(converted):
    io = _io(VAE)
    vae_model = converted
    vae_model.vae_eval_sampling = True  # the published VAE samples in eval and returns std

    def run():
        return vae_model.vae_forward_eval(io["input"], eps=io["eps"])

    recon, mu, std = _one_thread(run)
    for got, want in ((recon, io["recon"]), (mu, io["mu"]), (std, io["std"])):
        assert (got - want).abs().max().item() < ATOL
    # the forward's own noise, re-seeded as the golden run was
    torch.manual_seed(3100)
    recon2, _, _ = _one_thread(lambda: vae_model.vae_forward_eval(io["input"]))
    assert (recon2 - io["recon"]).abs().max().item() < ATOL
    # paper default: no sampling in eval, logvar as third output
    vae_model.vae_eval_sampling = False
    recon3, _, logvar = _one_thread(lambda: vae_model.vae_forward_eval(io["input"]))
    assert (recon3 - io["recon_at_mu"]).abs().max().item() < ATOL
    assert (logvar - io["logvar"]).abs().max().item() < ATOL


def test_wrong_file_is_refused():
    from audet.models.convert.aunet import ConversionError, convert_aunet

    with pytest.raises(ConversionError, match="entries"):
        convert_aunet(VAE / "vae_100.pth", "BP4D")


def test_convert_command_with_vae_and_fan_weights(tmp_path, capsys):
    from audet.cli import main
    from audet.models.checkpoint import load_checkpoint
    from audet.models.layers.fan import FAN

    torch.manual_seed(0)
    fan = FAN(2).state_dict()
    torch.save(fan, tmp_path / "2dfan2.pth")
    out = tmp_path / "aunet_bp4d"
    assert main(["convert", "aunet", str(PRED / "fc_11.pth"), "--vae", str(VAE / "vae_100.pth"),
                 "--fan-weights", str(tmp_path / "2dfan2.pth"), "--out", str(out), "--aus", "BP4D"]) == 0
    model = load_checkpoint(out.with_suffix(".safetensors"))
    assert model.model_name == "aunet" and model.vae is not None
    assert model.pretrained_status["fan"].startswith("file ")
    assert torch.equal(model.fan.conv1.weight, fan["conv1.weight"])
    from audet.models.convert.aunet import convert_aunet

    ref = convert_aunet(PRED / "fc_11.pth", "BP4D", vae=VAE / "vae_100.pth")
    for k, v in ref.predictor.state_dict().items():
        assert torch.equal(model.predictor.state_dict()[k], v), k
    for k, v in ref.vae.state_dict().items():
        assert torch.equal(model.vae.state_dict()[k], v), k
    capsys.readouterr()
    # the AU-Net-only flags are refused for another method, a missing file is named
    assert main(["convert", "ac2d", str(PRED / "fc_11.pth"), "--vae", str(VAE / "vae_100.pth"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--vae is an option of `audet convert aunet`" in capsys.readouterr().err
    assert main(["convert", "aunet", str(PRED / "fc_11.pth"), "--fan-weights", str(tmp_path / "none.pth"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "none.pth: no such file" in capsys.readouterr().err
