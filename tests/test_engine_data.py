"""End to end on a tiny prepared dataset (JPEGs + list files): `audet train`, `audet evaluate`
(cross-dataset on shared AUs), `audet cv`."""
import json

import pytest

from helpers import make_prepared

from audet.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

TINY = ["model.args.width=4", "data.batch_size=4", "data.num_workers=0", "data.val_fraction=0.25",
        "trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.tensorboard=false", "trainer.accelerator=cpu",
        "optim.lr=0.05"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_prepared(root / "synth", n_subjects=6, frames=4, aus=(1, 2, 4, 6))


def test_cli_train_then_evaluate_cross_dataset(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "resnet_tiny_synth", f"data.root={prepared}", "data.fold=0", *TINY, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["aus"] == [1, 2, 4, 6] and res["selection"]["monitor"] == "val/f1"
    val, test = set(res["val_subjects"]), set(res["test_subjects"])
    assert val and test and not val & test  # selection never sees the test fold
    assert (out / "best.safetensors").is_file() and list(out.glob("logs/csv/version_*/metrics.csv"))
    # another "dataset" sharing AU2 and AU6 only
    other = make_prepared(tmp_path / "other", n_subjects=3, frames=3, aus=(2, 6, 9), n_parts=3, dataset="OTHER")
    capsys.readouterr()
    assert main(["evaluate", "-c", str(out / "best.safetensors"), "--data", str(other), "--prefix", "OTHER_part1",
                 "--out", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    assert "| AU2 | AU6 | Avg |" in text and "AU9" in text and "AU1 AU4" in text
    assert (tmp_path / "ev.md").is_file() and (tmp_path / "ev.csv").is_file()


def test_cli_cv_over_folds_is_resumable(prepared, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["cv", "resnet_tiny_synth", f"data.root={prepared}", *TINY, "trainer.max_epochs=1", "--out", str(out)]
    assert main([*args, "--folds", "0", "1"]) == 0
    first = (out / "fold0" / "results.json").stat().st_mtime_ns
    assert main(args) == 0  # folds 0 and 1 are not retrained
    assert (out / "fold0" / "results.json").stat().st_mtime_ns == first
    table = (out / "cv_report.md").read_text()
    assert "fold 0" in table and "fold 2" in table and "Mean" in table
    assert set(json.loads((out / "cv_results.json").read_text())["per_fold"]) == {"0", "1", "2"}
