"""CISNet through the training engine (contract): a collect-only first stage fills the subject
dictionary from the data pass (no training step), the next stage trains with it and refreshes it
at every epoch end, and the checkpoint rebuilds the model with its dictionary (no training data)."""
import json

import pytest
import torch

from helpers import make_prepared, tiny_config

from audet.models.checkpoint import load_checkpoint
from audet.engine.fit import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_collect_only_stage_then_training(tmp_path):
    root = make_prepared(tmp_path / "data", n_subjects=6, frames=6, size=64)
    cfg = tiny_config(root, tmp_path / "run", **{
        "model.name": "cisnet_tiny",
        "model.args": {"backbone_args": {"width": 4}, "img_size": 32},
        "optim.name": "sgd", "optim.lr": 0.01, "optim.scale_lr": False, "optim.warmup_epochs": 0,
        "stages": [{"name": "collect", "collect_only": True}, {"name": "train", "epochs": 1}],
        "selection.test_after_fit": False,
    })
    fit(cfg, verbose=False)
    collected = load_checkpoint(tmp_path / "run/stages/0_collect/last.safetensors")
    final = load_checkpoint(tmp_path / "run/last.safetensors")
    info = final.data_info
    assert info.train_subjects and final.dictionary_subjects == [s for s in info.subjects if s in info.train_subjects]
    per_subject = info.label_stats["train_frames_per_subject"]
    for m in (collected, final):
        assert m.cis.valid
        # every training frame once per pass; priors n_s / N
        assert m.cis.dict_counts.tolist() == [float(per_subject[s]) for s in m.dictionary_subjects]
        n = torch.tensor([per_subject[s] for s in m.dictionary_subjects], dtype=torch.float32)
        assert torch.allclose(m.cis.dict_priors, n / n.sum())
    # the collect-only stage trained nothing (eval-mode pass: even BatchNorm statistics are at their
    # init), the training stage then did; the dictionary was refreshed with the trained weights
    bn = [mod for mod in collected.encoder.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bn and all(int(b.num_batches_tracked) == 0 and not b.running_mean.any() for b in bn)
    assert any(int(b.num_batches_tracked) > 0 for b in final.encoder.modules() if isinstance(b, torch.nn.BatchNorm2d))
    assert not torch.equal(collected.projector.weight, final.projector.weight)
    assert not torch.allclose(collected.cis.dict_keys, final.cis.dict_keys)
    stages = [json.loads((tmp_path / f"run/stages/{d}/stage.json").read_text()) for d in ("0_collect", "1_train")]
    assert stages[0]["collect_only"] and not stages[1]["collect_only"]
