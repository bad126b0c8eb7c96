"""AAR's two-stage recipe through the engine (tiny model, tiny prepared data, clips of 3 frames):
the stages' optimisers and schedule, a frozen attention network in stage 2, and a run killed in
stage 2 that resumes to the same weights as an uninterrupted one."""
from __future__ import annotations

import pytest
import torch

from helpers import make_prepared

from audet.engine.callbacks import StopAfterSteps, StopTraining
from audet.models.checkpoint import load_checkpoint
from audet.engine.config import load_config, resolve_config
from audet.engine.fit import fit
from audet.engine.optim import WarmupCosine, build_optimizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _config(root, out, **overrides):
    raw = {
        "name": "aar_tiny",
        "seed": 1,
        "model": {"name": "aar", "args": {"img_size": 32, "unit_dim": 1, "pool_dim": 2, "clip_length": 3,
                                          "preprocess": {"resize": 40}}},
        "data": {"root": str(root), "fold": 0, "batch_size": 2, "num_workers": 0, "val_fraction": 0.25,
                 "clip": {"length": 3, "windows": "disjoint"}},
        "optim": {"scale_lr": False, "warmup_epochs": 0, "weight_decay": 0.0},
        "stages": [
            {"name": "attention", "epochs": 2,
             "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                       "schedule": "step", "step_epochs": 1, "step_gamma": 0.3}},
            {"name": "relation", "epochs": 2, "frozen": ["region_learning.*", "branches.*"],
             "optim": {"name": "adam", "lr": 0.006, "schedule": "constant"}},
        ],
        "trainer": {"max_epochs": 4, "progress_bar": False, "log_every_n_steps": 1, "tensorboard": False,
                    "accelerator": "cpu", "gradient_clip_val": None},
        "selection": {"test_after_fit": False},
        "output": {"dir": str(out)},
    }
    return resolve_config(raw, overrides, "aar_tiny")


def test_paper_recipe_stage_optimisers():
    cfg = load_config("aar_bp4d")
    att, rel = cfg["stages"]
    assert (att["name"], rel["name"]) == ("attention", "relation")
    model = torch.nn.Linear(2, 2)
    opt, sched = build_optimizer(model, {**cfg["optim"], **att["optim"]}, batch_size=2, world_size=1,
                                 accumulate=1, steps_per_epoch=10, max_epochs=12)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert opt.defaults["lr"] == pytest.approx(0.006) and opt.defaults["weight_decay"] == pytest.approx(5e-4)
    fn = sched.lr_lambdas[0]
    assert isinstance(fn, WarmupCosine)
    # x 0.3 every 2 epochs (10 steps per epoch)
    assert [fn(s) for s in (0, 19, 20, 39, 40, 119)] == pytest.approx([1, 1, 0.3, 0.3, 0.09, 0.3 ** 5])
    opt, sched = build_optimizer(model, {**cfg["optim"], **rel["optim"]}, batch_size=2, world_size=1,
                                 accumulate=1, steps_per_epoch=10, max_epochs=12)
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == pytest.approx(0.006)
    assert opt.defaults["betas"] == (0.9, 0.999)
    assert [sched.lr_lambdas[0](s) for s in (0, 60, 119)] == [1.0, 1.0, 1.0]
    assert rel["frozen"] == ["region_learning.*", "branches.*"]
    assert cfg["data"]["clip"] == {"windows": "disjoint"} and cfg["model"]["args"]["clip_length"] == 48 and cfg["model"]["args"]["lambda_a"] == 2.0


def test_two_stages_freeze_the_attention_network_and_resume_after_a_kill_in_stage_two(tmp_path):
    root = make_prepared(tmp_path / "data", n_subjects=6, frames=6)
    res = fit(_config(root, tmp_path / "straight"), verbose=False)
    assert [s["name"] for s in res["stages"]] == ["attention", "relation"]
    s1 = load_checkpoint(tmp_path / "straight/stages/0_attention/last.safetensors").state_dict()
    s2 = load_checkpoint(tmp_path / "straight/last.safetensors").state_dict()
    frozen = [k for k in s1 if k.startswith(("region_learning.", "branches."))]
    assert frozen and all(torch.equal(s1[k], s2[k]) for k in frozen)  # weights AND BN statistics
    trained = [k for k in s1 if k.startswith(("relation.", "classifier."))]
    assert trained and any(not torch.equal(s1[k], s2[k]) for k in trained)

    # killed after 2 steps of stage 2, then restarted: stage 1 is skipped, stage 2 resumes
    killed = _config(root, tmp_path / "killed")
    with pytest.raises(StopTraining):
        fit(killed, callbacks=[_StopInStage("relation", 2)], verbose=False)
    assert (tmp_path / "killed/stages/0_attention/stage.json").is_file()
    assert not (tmp_path / "killed/stages/1_relation/stage.json").is_file()
    fit(killed, verbose=False)
    s3 = load_checkpoint(tmp_path / "killed/last.safetensors").state_dict()
    assert s3.keys() == s2.keys()
    diff = [k for k in s2 if not torch.equal(s2[k], s3[k])]
    assert not diff, diff[:5]


class _StopInStage(StopAfterSteps):
    """Simulated crash after ``steps`` optimiser steps of the stage named ``stage``."""

    def __init__(self, stage: str, steps: int):
        super().__init__(steps)
        self.stage = stage

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.model.stage == self.stage:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def test_frames_stage_trains_on_single_frames_then_the_relation_stage_on_clips(tmp_path):
    """``frames: true``: the attention stage's batches are single frames, batch_size x clip length of
    them, drawn across sequences; the next stage is back on clips; validation stays on clips."""
    import lightning as L

    root = make_prepared(tmp_path / "data", n_subjects=6, frames=6)
    cfg = _config(root, tmp_path / "run")
    cfg["stages"][0]["frames"] = True
    shapes = []

    class Shapes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            shapes.append((pl_module.model.stage, tuple(batch["image"].shape), tuple(batch["labels"].shape)))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            shapes.append(("val", tuple(batch["image"].shape), tuple(batch["labels"].shape)))

    res = fit(cfg, callbacks=[Shapes()], verbose=False)
    att = [s for s in shapes if s[0] == "attention"]
    rel = [s for s in shapes if s[0] == "relation"]
    assert att and rel and res["stages"][0]["epochs"] == 2
    assert att[0][1] == (6, 3, 32, 32) and att[0][2] == (6, 4)  # 2 clips x 3 frames = 6 single frames
    assert all(len(s[1]) == 4 for s in att)
    assert all(len(s[1]) == 5 and s[1][1] == 3 for s in rel)  # clips of 3 again
    assert all(len(s[1]) == 5 for s in shapes if s[0] == "val")


def test_frames_stage_excludes_labels_only_and_collect_only():
    from audet.engine.config import ConfigError, check_stages

    with pytest.raises(ConfigError, match="frames trains on images"):
        check_stages([{"name": "x", "epochs": 1, "frames": True, "labels_only": True}])
    assert check_stages([{"name": "x", "epochs": 1}])[0].frames is False


def test_frames_stage_on_a_data_module_without_single_frames_is_refused_by_name(tmp_path):
    from helpers import tensor_config, tensor_datamodule

    dm = tensor_datamodule()
    cfg = tensor_config(tmp_path / "r", stages=[{"name": "frames1", "epochs": 1, "frames": True}])
    with pytest.raises(ValueError, match="a frames stage needs a data module with train_frames_dataloader"):
        fit(cfg, datamodule=dm, verbose=False)
