"""A ``labels_only`` training stage (AUNet's label-VAE stage): batches of labels built without
reading an image, no forward, no validation pass, the last epoch kept."""
import json

import pytest
import torch
from helpers import tensor_config, tensor_datamodule

from audet.engine.config import ConfigError, check_stages
from audet.engine.fit import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

VAE_STAGE = {"name": "vae", "epochs": 2, "labels_only": True, "trainable": ["vae.*"],
             "optim": {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "warmup_epochs": 0, "schedule": "constant"}}


def _no_images(dm):
    """Every image read of every split raises: the stage must not touch the image datasets."""
    reads = []

    def boom(self, i):
        reads.append(i)
        raise AssertionError("an image was read in a labels-only stage")

    for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        type(ds).__getitem__ = boom
    return reads


def test_labels_only_stage_reads_no_image_and_keeps_the_last_epoch(tmp_path):
    dm = tensor_datamodule()
    reads = _no_images(dm)
    cfg = tensor_config(tmp_path / "run", **{
        "model.name": "aunet_vae", "model.args": {"img_size": 64, "allow_random_pretrained": True},
        "stages": [VAE_STAGE], "selection.test_after_fit": False, "trainer.max_epochs": 2})
    captured = {}

    import lightning as L

    class Capture(L.Callback):
        def on_train_start(self, trainer, pl_module):
            captured["before"] = {k: v.detach().clone() for k, v in pl_module.model.vae.state_dict().items()}
            captured["pred"] = {k: v.detach().clone() for k, v in pl_module.model.predictor.state_dict().items()}
            captured["model"] = pl_module.model

    res = fit(cfg, datamodule=dm, callbacks=[Capture()], verbose=False)
    assert reads == []
    st = res["stages"][0]
    assert st["labels_only"] and st["epochs"] == 2 and st["best_epoch"] == 1  # the last epoch kept
    assert st["history"] == []  # no validation pass
    meta = json.loads((tmp_path / "run/best.json").read_text())
    assert meta["epoch"] == 1 and "labels-only" in meta["selection"]["on"]
    after = captured["model"].vae.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in captured["before"].items())  # the VAE learned
    # no forward ran: the predictor (not trainable here) is untouched, BatchNorm statistics included
    pred = captured["model"].predictor.state_dict()
    assert all(torch.equal(pred[k], v) for k, v in captured["pred"].items())
    from audet.engine.reports import summary_text

    assert "labels only, optim adam" in summary_text(res)


def test_labels_only_stage_needs_a_model_that_declares_its_batch_keys(tmp_path):
    dm = tensor_datamodule()
    cfg = tensor_config(tmp_path / "r", stages=[{"name": "labels", "epochs": 1, "labels_only": True}])
    with pytest.raises(ValueError, match="does not declare which batch keys"):
        fit(cfg, datamodule=dm, verbose=False)


def test_labels_only_excludes_collect_only():
    with pytest.raises(ConfigError, match="exclude each other"):
        check_stages([{"name": "x", "epochs": 1, "labels_only": True, "collect_only": True}])
    assert check_stages([{"name": "x", "epochs": 1}])[0].labels_only is False


def test_labels_only_stage_resumes_to_the_same_weights(tmp_path):
    """A kill in the middle of the labels-only stage's second epoch, then a restart: the same VAE as
    an uninterrupted run (the labels loader is ordered by (seed, epoch) like the image loader)."""
    from safetensors.torch import load_file

    from audet.engine.callbacks import StopAfterSteps, StopTraining

    stage = {**VAE_STAGE, "epochs": 3}

    def cfg(d):
        return tensor_config(tmp_path / d, **{
            "model.name": "aunet_vae", "model.args": {"img_size": 64, "allow_random_pretrained": True},
            "stages": [stage], "selection.test_after_fit": False})

    fit(cfg("straight"), datamodule=tensor_datamodule(), verbose=False)
    with pytest.raises(StopTraining):  # 48 labels / batch 8 = 6 steps per epoch
        fit(cfg("killed"), datamodule=tensor_datamodule(), callbacks=[StopAfterSteps(9)], verbose=False)
    fit(cfg("killed"), datamodule=tensor_datamodule(), verbose=False)
    a, b = load_file(str(tmp_path / "straight/last.safetensors")), load_file(str(tmp_path / "killed/last.safetensors"))
    vae = [k for k in a if k.startswith("vae.")]
    assert vae and all(torch.equal(a[k], b[k]) for k in vae)
