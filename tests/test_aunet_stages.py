"""AUNet's two stages through the engine (one config): the VAE first, then the detector against the
frozen VAE encoder; a run killed in stage two resumes there and ends with the same weights.
Tiny: 64 x 64 frames, 16 training samples, random frozen FAN (allow_random_pretrained)."""
import json

import pytest
import torch

from helpers import tensor_config, tensor_datamodule

from audet.engine.callbacks import StopAfterSteps, StopTraining
from audet.models.checkpoint import load_checkpoint, read_checkpoint_meta
from audet.engine.fit import fit

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")]


def _cfg(out):
    return tensor_config(out, **{
        "model.name": "aunet_vae",
        "model.args": {"img_size": 64, "allow_random_pretrained": True, "vae_latent": 3},
        "optim.scale_lr": False, "optim.lr": 1e-3, "optim.warmup_epochs": 0,
        "selection.test_after_fit": False,
        "stages": [
            {"name": "vae", "epochs": 1, "optim": {"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
             "trainable": ["vae.*"]},
            {"name": "detector", "epochs": 2, "frozen": ["vae.*"]},
        ],
    })


def _data():
    return tensor_datamodule(n_train=16, n_val=8, n_test=8, size=64)


def test_two_stages_killed_in_stage_two_resume(tmp_path):
    fit(_cfg(tmp_path / "straight"), datamodule=_data(), verbose=False)
    run = tmp_path / "straight"
    vae = load_checkpoint(run / "stages/0_vae/last.safetensors")
    final = load_checkpoint(run / "last.safetensors")
    for k, v in vae.state_dict().items():
        if k.startswith("vae."):
            assert torch.equal(v, final.state_dict()[k]), k  # frozen in the detector stage
    assert any(not torch.equal(v, final.state_dict()[k]) for k, v in vae.state_dict().items()
               if k.startswith("predictor.") and v.is_floating_point())  # the detector learned
    meta = read_checkpoint_meta(run / "last.safetensors")
    assert meta["pretrained"]["fan"]["status"].startswith("random 2-stack FAN")
    stages = json.loads((run / "results.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["vae", "detector"]

    # 16 samples / batch 8 = 2 steps per epoch: crash in the second epoch of stage two
    with pytest.raises(StopTraining):
        fit(_cfg(tmp_path / "killed"), datamodule=_data(), callbacks=[StopAfterSteps(3)], verbose=False)
    assert (tmp_path / "killed/stages/0_vae/stage.json").is_file()
    assert not (tmp_path / "killed/stages/1_detector/stage.json").exists()
    fit(_cfg(tmp_path / "killed"), datamodule=_data(), verbose=False)  # resumes inside stage two
    a = load_checkpoint(run / "last.safetensors").state_dict()
    b = load_checkpoint(tmp_path / "killed/last.safetensors").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
