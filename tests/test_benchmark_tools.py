"""Helpers of the benchmark scripts: training curves joined across resumed runs, and the
linear feature probe (tiny model, toy data)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audet.data.toy import make_toy_prepared
from audet.models.checkpoint import save_checkpoint
from audet.models import create_model

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _csv(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("epoch,step,train/au_step,train/au_epoch,val/f1\n" + "\n".join(rows) + "\n")


def test_training_curves_join_resumed_versions_and_drop_partial_epochs(tmp_path):
    cm = _load("compare_models")
    run = tmp_path / "m"
    # version 0: epochs 0-1 complete, epoch 2 partial (killed); version 1 resumed at epoch 2
    _csv(run / "logs/csv/version_0/metrics.csv",
         ["0,9,1.1,,", "0,9,,1.05,0.30", "1,19,1.0,,", "1,19,,1.00,0.35", "2,24,0.9,,"])
    _csv(run / "logs/csv/version_1/metrics.csv", ["2,29,0.8,,", "2,29,,0.90,0.42"])
    _csv(run / "logs/csv/version_10/metrics.csv", ["3,39,,0.85,0.44"])  # numeric, not lexical, order
    c = cm.training_curves(run)
    assert list(c.index) == [0, 1, 2, 3]
    np.testing.assert_allclose(c["val/f1"], [0.30, 0.35, 0.42, 0.44])
    np.testing.assert_allclose(c["train/au_epoch"], [1.05, 1.00, 0.90, 0.85])
    cm.write_curves(tmp_path, ["m", "absent"])
    assert (tmp_path / "curves.csv").is_file() and (tmp_path / "curves.png").stat().st_size > 1000
    assert cm.training_curves(tmp_path / "absent") is None


def test_feature_probe_scores_the_aus_of_a_fold_and_rejects_a_missing_fold(tmp_path):
    fp = _load("feature_probe")
    data = tmp_path / "prep"
    make_toy_prepared(data, aus=(1, 2), n_subjects=6, n_sequences=2, n_frames=8, missing_rate=0.0, image_size=48)
    torch.manual_seed(0)
    model = create_model("ac2d_bnet", num_aus=2, aus=[1, 2], img_size=32, embed_dim=8, num_heads=[1, 1, 1],
                         depths=[1, 1, 1], drop_path_rate=0.0)
    ck, _ = save_checkpoint(model, tmp_path / "m.safetensors")
    r = fp.probe(ck, data, 0, n_train=64, n_test=64, C=1.0)
    assert set(r["head"]) == set(r["probe"]) <= {1, 2} and r["probe"]
    assert all(0.0 <= v <= 1.0 for v in [*r["head"].values(), *r["probe"].values()])
    with pytest.raises(ValueError, match=r"3 fold\(s\).*fold 7 does not exist"):
        fp.probe(ck, data, 7, n_train=8, n_test=8, C=1.0)


def test_compare_models_scores_existing_runs_frame_by_frame(tmp_path, capsys):
    # finished runs (results.json + best checkpoint) are only evaluated: the table, the prior row
    # and the paired bootstrap through the one evaluation path
    cm = _load("compare_models")
    data = tmp_path / "prep"
    make_toy_prepared(data, aus=(1, 2), n_subjects=6, n_sequences=2, n_frames=4, missing_rate=0.0, image_size=200)
    out = tmp_path / "cmp"
    for i, name in enumerate(("resnet_tiny", "resnet18")):
        torch.manual_seed(i)
        kw = {"width": 4} if name == "resnet_tiny" else {}
        model = create_model(name, num_aus=2, aus=[1, 2], **kw)
        (out / name).mkdir(parents=True)
        save_checkpoint(model, out / name / "best.safetensors")
        (out / name / "results.json").write_text('{"train_minutes": 0.5}')
    assert cm.main(["--data", str(data), "--out", str(out), "--config", "resnet_tiny_synth",
                    "--models", "resnet_tiny", "resnet18", "--n-boot", "20"]) == 0
    text = (out / "comparison.md").read_text()
    assert "prior (all present)" in text and "| resnet18 |" in text and "20 resamples" in text
    assert "test SUBJECTS" in text  # the package's comparison (audet compare), not a copy
    import pandas as pd

    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table.index) == ["prior (all present)", "resnet_tiny", "resnet18"]
    assert list(table.columns) == ["AU1", "AU2", "Avg"]


@pytest.mark.parametrize("readout", ["pool", "gt", "subcentre"])
def test_ac2d_readout_trains_each_readout_on_fresh_batches(tmp_path, capsys, readout):
    ro = _load("ac2d_readout")
    data = tmp_path / "prep"
    make_toy_prepared(data, aus=(1, 2), n_subjects=4, n_sequences=2, n_frames=8, missing_rate=0.0, image_size=48)
    args = {"img_size": 32, "embed_dim": 8, "num_heads": [1, 1, 1], "depths": [1, 1, 1], "drop_path_rate": 0.0,
            "intervention": "none", "attention_loss": "none"}
    assert ro.main(["--data", str(data), "--prefix", "SYNTH_part1", "--readout", readout, "--sigma", "1.0",
                    "--args", json.dumps(args), "--steps", "2", "--every", "1", "--threads", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("steps")]
    assert len(lines) == 2 and all(" au " in ln for ln in lines)
    with pytest.raises(SystemExit, match="at most"):
        ro.main(["--data", str(data), "--prefix", "SYNTH_part1", "--readout", readout,
                 "--args", json.dumps(args), "--steps", "10000"])
