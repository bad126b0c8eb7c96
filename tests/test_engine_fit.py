"""Training loop mechanics on an in-memory dataset: outputs, logits reproduction, selection policy,
kill-and-resume equality, DDP on 2 CPU processes, initialisation by AU identity."""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch

from helpers import tensor_config, tensor_datamodule

from audet.engine.callbacks import StopAfterSteps, StopTraining
from audet.models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from audet.engine.fit import fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class _Capture(L.Callback):
    """Keeps a copy of the model state at the end of training (before test-time reloading)."""

    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.model = pl_module.model


def _metrics_rows(run_dir: Path) -> list[dict]:
    files = sorted(run_dir.glob("logs/csv/version_*/metrics.csv"))
    assert files, "no CSV log"
    with open(files[-1]) as fh:
        return list(csv.DictReader(fh))


def test_train_two_epochs_writes_checkpoints_logs_and_reports(tmp_path):
    cap = _Capture()
    res = fit(tensor_config(tmp_path / "run"), datamodule=tensor_datamodule(), callbacks=[cap], verbose=False)
    run = tmp_path / "run"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "checkpoints/last.ckpt",
                 "config.yaml", "results.json", "report.md", "report.csv"):
        assert (run / name).is_file(), name
    rows = _metrics_rows(run)
    assert any(r.get("val/f1") for r in rows) and any(r.get("train/loss_step") for r in rows)
    assert any(r.get("train/au_step") for r in rows)  # each loss term is logged
    assert any(v for r in rows for k, v in r.items() if k.startswith("lr-"))  # per-step learning rate
    assert res["epochs"] == 2 and len(res["history"]) == 2
    assert set(res["test"]) == {"best", "last"} and 0 <= res["test"]["last"]["f1"] <= 1
    last_meta = read_checkpoint_meta(run / "last.safetensors")
    assert last_meta["epoch"] == 1 and last_meta["aus"] == [1, 2, 4] and last_meta["config"]["name"] == "tensor"
    assert "val/f1" in last_meta["metrics"]
    # the loaded checkpoint reproduces the in-memory model's logits exactly
    loaded = load_checkpoint(run / "last.safetensors")
    cap.model.load_state_dict(cap.state)
    cap.model.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, cap.model(x).logits)
    md = (run / "report.md").read_text()
    assert "| AU1 | AU2 | AU4 | Avg |" in md and "validation subjects" in md


def test_selection_on_validation_by_default_and_on_test_when_asked(tmp_path):
    res = fit(tensor_config(tmp_path / "val", **{"trainer.max_epochs": 1}), datamodule=tensor_datamodule(),
              verbose=False)
    assert res["selection"]["monitor"] == "val/f1" and not res["selection"]["on_test"]
    assert res["val_subjects"] and not set(res["val_subjects"]) & set(res["test_subjects"])
    assert "test/f1" not in res["history"][0]  # the test fold is not looked at during training
    assert read_checkpoint_meta(tmp_path / "val/best.json")["selection"]["monitor"] == "val/f1"

    res = fit(tensor_config(tmp_path / "test", **{"trainer.max_epochs": 1, "selection.on_test": True}),
              datamodule=tensor_datamodule(), verbose=False)
    assert res["selection"]["monitor"] == "test/f1" and res["selection"]["on_test"]
    assert "test/f1" in res["history"][0]
    meta = read_checkpoint_meta(tmp_path / "test/best.json")
    assert meta["selection"]["monitor"] == "test/f1" and "test fold" in meta["selection"]["on"]
    assert "WARNING: test-set selection" in (tmp_path / "test/report.md").read_text()


def test_published_habit_every_subject_trains_and_every_table_says_test_set_selection(tmp_path):
    """data.val_fraction=0 + selection.on_test (AC2D's recipe=code): no validation split, the test
    fold is scored after every epoch, and each table printed or written is labelled."""
    from audet.engine.reports import summary_text

    dm = tensor_datamodule()
    dm.val_dataset, dm.val_subjects = torch.utils.data.TensorDataset(torch.zeros(0)), []  # no validation split
    res = fit(tensor_config(tmp_path / "t", **{"trainer.max_epochs": 2, "selection.on_test": True,
                                               "data.val_fraction": 0}), datamodule=dm, verbose=False)
    assert res["val_subjects"] == [] and res["selection"]["monitor"] == "test/f1"
    assert [h["epoch"] for h in res["history"]] == [0, 1] and all("test/f1_AU1" in h for h in res["history"])
    report, epochs = (tmp_path / "t/report.md").read_text(), (tmp_path / "t/report_epochs.md").read_text()
    assert "TEST-SET SELECTION" in report and "test-set selection" in report.split("\n\n")[1]  # table rows
    assert "TEST-SET SELECTION" in epochs and "| epoch 1 |" in epochs and "| epoch 2 |" in epochs
    text = summary_text(res)
    assert text.count("test-set selection") >= 2 and "per-epoch F1 on the test fold" in text


def test_kill_and_resume_reaches_the_same_weights(tmp_path):
    cfg = lambda d: tensor_config(tmp_path / d, **{"trainer.max_epochs": 3, "selection.test_after_fit": False})  # noqa: E731
    fit(cfg("straight"), datamodule=tensor_datamodule(), verbose=False)
    # 48 samples / batch 8 = 6 steps per epoch: crash in the middle of the second epoch
    with pytest.raises(StopTraining):
        fit(cfg("killed"), datamodule=tensor_datamodule(), callbacks=[StopAfterSteps(9)], verbose=False)
    assert (tmp_path / "killed/checkpoints/last.ckpt").is_file()
    assert read_checkpoint_meta(tmp_path / "killed/last.json")["epoch"] == 0
    res = fit(cfg("killed"), datamodule=tensor_datamodule(), verbose=False)  # resumes automatically
    a = load_checkpoint(tmp_path / "straight/last.safetensors").state_dict()
    b = load_checkpoint(tmp_path / "killed/last.safetensors").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    straight = json.loads((tmp_path / "straight/results.json").read_text())
    assert res["selection"]["best_epoch"] == straight["selection"]["best_epoch"]
    assert res["selection"]["best_score"] == pytest.approx(straight["selection"]["best_score"])
    # each (re)start logs into its own CSV version
    assert len(list((tmp_path / "killed").glob("logs/csv/version_*/metrics.csv"))) == 2
    # --no-resume starts afresh; --resume without a checkpoint is an error
    with pytest.raises(FileNotFoundError, match="no .*last.ckpt"):
        fit(cfg("absent"), datamodule=tensor_datamodule(), resume=True, verbose=False)


class _StopAtEpochStart(L.Callback):
    """Raise at the start of an epoch, i.e. right after the previous epoch's checkpoint was saved."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise StopTraining(f"stopped at the start of epoch {self.epoch} (simulated kill)")


def _weights(path):
    return load_checkpoint(path).state_dict()


def test_resume_with_workers_is_bit_identical_mid_epoch_and_at_an_epoch_boundary(tmp_path):
    """Two persistent DataLoader workers and random augmentation (the dataset draws noise from the
    global RNG): a kill in the middle of epoch 1 and one right after epoch 0's checkpoint both end
    with the weights of the uninterrupted run, which are also those of a run without workers."""
    cfg = lambda d: tensor_config(tmp_path / d, **{"trainer.max_epochs": 3, "selection.test_after_fit": False,  # noqa: E731
                                                   "data.num_workers": 2})
    data = lambda: tensor_datamodule(num_workers=2)  # noqa: E731
    fit(cfg("straight"), datamodule=data(), verbose=False)
    with pytest.raises(StopTraining):
        fit(cfg("mid"), datamodule=data(), callbacks=[StopAfterSteps(9)], verbose=False)  # epoch 1, batch 3 of 6
    fit(cfg("mid"), datamodule=data(), verbose=False)
    with pytest.raises(StopTraining):
        fit(cfg("boundary"), datamodule=data(), callbacks=[_StopAtEpochStart(2)], verbose=False)
    assert read_checkpoint_meta(tmp_path / "boundary/last.json")["epoch"] == 1
    fit(cfg("boundary"), datamodule=data(), verbose=False)
    a = _weights(tmp_path / "straight/last.safetensors")
    for run in ("mid", "boundary"):
        b = _weights(tmp_path / run / "last.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), (run, [k for k in a if not torch.equal(a[k], b[k])][:5])
    # the sampler's state is in the checkpoint
    ck = torch.load(tmp_path / "mid/checkpoints/last.ckpt", weights_only=False)
    assert ck["FitData"] == {"seed": 5, "epoch": 2, "sample_seeding": "sample_seed(seed, epoch, index)"}
    # a sample's augmentation does not depend on the worker count
    fit(tensor_config(tmp_path / "w0", **{"trainer.max_epochs": 3, "selection.test_after_fit": False}),
        datamodule=tensor_datamodule(num_workers=0), verbose=False)
    c = _weights(tmp_path / "w0/last.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_a_run_directory_of_another_config_is_refused_before_anything_is_written(tmp_path):
    from audet.utils.manifest import OutputMismatch

    fit(tensor_config(tmp_path / "t1", **{"trainer.max_epochs": 1}), datamodule=tensor_datamodule(), verbose=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "t1").rglob("*") if p.is_file()}
    other = tensor_config(tmp_path / "t1", **{"trainer.max_epochs": 1, "optim.lr": 0.01})
    with pytest.raises(OutputMismatch, match=r"config.optim.lr: 0.05 -> 0.01.*--overwrite"):
        fit(other, datamodule=tensor_datamodule(), verbose=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "t1").rglob("*") if p.is_file()} == before
    # the same config continues (nothing to do but test); resume=False (--overwrite) starts afresh
    res = fit(other, datamodule=tensor_datamodule(), resume=False, verbose=False)
    assert res["epochs"] == 1
    assert read_checkpoint_meta(tmp_path / "t1/last.json")["config"]["optim"]["lr"] == 0.01
    # a folder audet did not make is refused too
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(OutputMismatch, match="did not record making"):
        fit(tensor_config(tmp_path / "mine"), datamodule=tensor_datamodule(), verbose=False)


def test_init_from_checkpoint_maps_au_branches(tmp_path):
    from audet.models import create_model

    src = create_model("resnet_tiny", num_aus=4, aus=[1, 2, 6, 12], width=4)
    save_checkpoint(src, tmp_path / "src.safetensors")
    cfg = tensor_config(tmp_path / "run", **{"trainer.max_epochs": 1, "model.init_from": str(tmp_path / "src.safetensors"),
                                             "model.args.dropout": 0.0})
    res = fit(cfg, datamodule=tensor_datamodule(aus=(1, 2, 4)), verbose=False)
    m = json.loads((tmp_path / "run/init_map.json").read_text())
    assert m["mapped_aus"] == {"1": 1, "2": 2} and m["fresh_aus"] == [4] and m["dropped_aus"] == [6, 12]
    assert res["init_from"]["source_model"] == "resnet_tiny"


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, warnings
        warnings.filterwarnings("ignore")
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from helpers import tensor_config, tensor_datamodule
        from audet.engine.fit import fit
        cfg = tensor_config({str(tmp_path / "run")!r}, **{{"trainer.strategy": "ddp", "trainer.devices": 2,
                                                         "trainer.max_epochs": 2}})
        res = fit(cfg, datamodule=tensor_datamodule(n_test=13), verbose=True)
        print("RANK-DONE", res["test"]["last"]["n"])
    """))
    # the audet under test, also when PYTHONPATH is relative (the child runs in tmp_path)
    import audet

    path = os.pathsep.join([str(Path(audet.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("RANK-DONE 13") == 2, proc.stdout[-2000:]  # both ranks; 13 test frames, not padded 14
    run = tmp_path / "run"
    meta = read_checkpoint_meta(run / "best.safetensors")
    assert meta["config"]["trainer"]["strategy"] == "ddp"
    res = json.loads((run / "results.json").read_text())
    # global batch = 8 x 2 processes: 48 samples -> 3 steps per epoch
    assert read_checkpoint_meta(run / "last.json")["global_step"] == 6
    assert 0 <= res["test"]["best"]["f1"] <= 1 and len(res["history"]) == 2
    load_checkpoint(run / "best.safetensors")


def test_epoch_end_prototype_pass_for_models_that_ask(tmp_path, monkeypatch):
    """AC2D's C^e(s) variant asks (wants_data_pass) for a data pass before on_train_epoch_end;
    the engine runs it generically, and the prototypes (buffers) are in the checkpoint."""
    import audet.models.ac2d as ac2d

    calls = []
    orig = ac2d.AC2D.data_pass_end

    def spy(self, results):
        out = orig(self, results)
        calls.append(int(self.proto_count))
        return out

    monkeypatch.setattr(ac2d.AC2D, "data_pass_end", spy)
    cfg = tensor_config(tmp_path / "run", **{
        "model.name": "ac2d_avces", "trainer.max_epochs": 2, "selection.test_after_fit": False,
        "model.args": {"img_size": 32, "depths": [1, 1, 2], "embed_dim": 16, "causal_dim": 16, "drop_path_rate": 0.0}})
    fit(cfg, datamodule=tensor_datamodule(size=32), verbose=False)
    assert calls == [48, 48]  # one pass over the 48 training samples per epoch
    m = load_checkpoint(tmp_path / "run/last.safetensors")
    assert bool(m.proto_valid) and float(m.proto_count) == 48


def test_a_stage_initialised_from_a_checkpoint_path(tmp_path):
    # `init: PATH`: the stage starts from another run's weights (not the previous stage's); a
    # collect-only stage (no optimiser step; lr 0 is refused by the schema) keeps exactly those weights
    donor = fit(tensor_config(tmp_path / "donor", **{"seed": 11, "trainer.max_epochs": 1}),
                datamodule=tensor_datamodule(), verbose=False)
    donor_ckpt = Path(donor["run_dir"]) / "last.safetensors"
    stages = [{"name": "warm", "epochs": 1},
              {"name": "from_donor", "epochs": 1, "init": str(donor_ckpt), "collect_only": True}]
    cfg = tensor_config(tmp_path / "staged", stages=stages)
    fit(cfg, datamodule=tensor_datamodule(), verbose=False)
    want = load_checkpoint(donor_ckpt).state_dict()
    warm = load_checkpoint(tmp_path / "staged" / "stages" / "0_warm" / "last.safetensors").state_dict()
    got = load_checkpoint(tmp_path / "staged" / "last.safetensors").state_dict()
    params = [k for k in want if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(got[k], want[k]) for k in params)
    assert any(not torch.equal(got[k], warm[k]) for k in params)  # not the previous stage's weights


def test_lightning_advertisements_are_dropped_from_the_training_log(caplog):
    """Hand-made records on Lightning's rank-zero logger (no fit needed): the advert goes, the rest stays."""
    import logging

    from audet.engine.fit import _LIGHTNING_RANK_ZERO, _quiet_warnings

    _quiet_warnings()
    _quiet_warnings()  # installing twice adds one filter, not two
    lg = logging.getLogger(_LIGHTNING_RANK_ZERO)
    assert sum(type(f).__name__ == "_DropAdverts" for f in lg.filters) == 1
    with caplog.at_level(logging.INFO, logger=_LIGHTNING_RANK_ZERO):
        lg.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](...)")
        lg.info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records if r.name == _LIGHTNING_RANK_ZERO]
    assert messages == ["GPU available: False, used: False"]


def test_ac2d_code_recipe_in_lightning_epoch_zero_leaves_the_intervention_untouched(tmp_path):
    """Through Lightning (the hook must really run before AdamW's step): epoch_stale prototypes, so
    epoch 0 has no intervention; its layers are neither decayed nor moved in epoch 0 (grad None, as
    the authors' AdamW), prototypes exist after it, and epoch 1 trains them."""
    snaps = {}

    class Snap(L.Callback):
        def _take(self, pl_module):
            return {n: p.detach().clone() for n, p in pl_module.model.named_parameters() if ".intervention." in n}

        def on_train_start(self, trainer, pl_module):
            snaps["start"] = self._take(pl_module)

        def on_train_epoch_end(self, trainer, pl_module):
            snaps[trainer.current_epoch] = self._take(pl_module)
            snaps[f"valid{trainer.current_epoch}"] = bool(pl_module.model.proto_valid)

    cfg = tensor_config(tmp_path / "ac2d", **{
        "model.name": "ac2d", "model.args": {"img_size": 32, "depths": [1, 1, 2], "embed_dim": 16, "causal_dim": 32,
                                             "drop_path_rate": 0.0, "prototype": "epoch_stale",
                                             "confounder_scale": "code"},
        "optim.lr": 0.5, "optim.weight_decay": 0.05, "optim.warmup_formula": "linspace", "optim.min_lr": 1e-6,
        "selection.on_test": True, "selection.test_after_fit": False})
    fit(cfg, datamodule=tensor_datamodule(), callbacks=[Snap()], verbose=False)
    assert snaps["start"] and all(torch.equal(snaps["start"][n], v) for n, v in snaps[0].items())
    assert snaps["valid0"] and snaps["valid1"]
    assert any(not torch.equal(snaps[0][n], v) for n, v in snaps[1].items())
