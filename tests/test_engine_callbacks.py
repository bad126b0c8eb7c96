"""audet.engine.callbacks through a real (tiny) Lightning run: ExportCheckpoints selects and
exports best/last, StopAfterSteps simulates a crash."""
from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from audet.engine.callbacks import ExportCheckpoints, StopAfterSteps, StopTraining
from audet.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class _Task(L.LightningModule):
    """Trains a tiny registered model; validation reports a scripted ``val/f1`` per epoch."""

    def __init__(self, scores):
        super().__init__()
        self.model = create_model("resnet_tiny", num_aus=2, aus=[1, 2], width=4)
        self.scores = list(scores)

    def training_step(self, batch, _):
        return self.model(batch[0]).logits.square().mean()

    def validation_step(self, batch, _):
        self.log("val/f1", float(self.scores[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader():
    return DataLoader(TensorDataset(torch.randn(4, 3, 32, 32)), batch_size=2)


def _fit(tmp_path, task, callbacks, epochs):
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=2, limit_val_batches=1, callbacks=callbacks,
                        default_root_dir=str(tmp_path))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, _loader(), _loader())
    return trainer


def _meta(path):
    return json.loads(path.read_text())


def test_export_selects_the_best_epoch_and_writes_last(tmp_path):
    export = ExportCheckpoints(tmp_path, {"name": "t"}, monitor="val/f1")
    _fit(tmp_path, _Task([0.3, 0.5, 0.4]), [export], epochs=3)
    assert (export.best_epoch, export.best_score) == (1, 0.5)
    assert [h["epoch"] for h in export.history] == [0, 1, 2]
    assert [h["val/f1"] for h in export.history] == pytest.approx([0.3, 0.5, 0.4])
    best, last = _meta(tmp_path / "best.json"), _meta(tmp_path / "last.json")
    assert best["epoch"] == 1 and last["epoch"] == 2
    assert best["metrics"]["val/f1"] == pytest.approx(0.5)
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "last.safetensors").is_file()
    # the selection state travels in Lightning's checkpoint, so a resumed run keeps the true best
    again = ExportCheckpoints(tmp_path, {}, monitor="val/f1")
    again.load_state_dict(export.state_dict())
    assert (again.best_epoch, again.best_score, again.history) == (1, 0.5, export.history)


def test_export_minimising_and_without_monitor(tmp_path):
    low = ExportCheckpoints(tmp_path / "min", {"name": "t"}, monitor="val/f1", mode="min")
    _fit(tmp_path, _Task([0.3, 0.5, 0.2]), [low], epochs=3)
    assert low.best_epoch == 2 and low.best_score == pytest.approx(0.2)
    none = ExportCheckpoints(tmp_path / "none", {"name": "t"}, monitor=None)
    _fit(tmp_path, _Task([0.3, 0.5]), [none], epochs=2)
    assert none.best_epoch == 1 and none.best_score is None  # no selection: best = last
    assert _meta(tmp_path / "none" / "best.json")["epoch"] == 1 == _meta(tmp_path / "none" / "last.json")["epoch"]


def test_stop_after_steps_raises_after_that_many_optimizer_steps(tmp_path):
    with pytest.raises(StopTraining, match="after 3 steps"):
        _fit(tmp_path, _Task([0.1] * 5), [StopAfterSteps(3)], epochs=5)
