"""``audet compare`` (issue 18, item 4): one table, subject-cluster bootstrap, figures."""
from __future__ import annotations

import pandas as pd
import torch

from audet.cli import main
from audet.data.toy import make_toy_prepared
from audet.models.checkpoint import save_checkpoint
from audet.models import create_model


def test_compare_run_folders_and_a_checkpoint_on_one_test_set(tmp_path, capsys):
    data = tmp_path / "prep"
    make_toy_prepared(data, aus=(1, 2, 4), n_subjects=6, n_sequences=2, n_frames=4, missing_rate=0.0, image_size=200)
    paths = []
    for i, (name, aus) in enumerate((("a", [1, 2, 4]), ("b", [4, 2, 1, 6]))):  # b: other order, an extra AU
        torch.manual_seed(i)
        model = create_model("resnet_tiny", num_aus=len(aus), aus=aus, width=4)
        save_checkpoint(model, tmp_path / name / "best.safetensors")
        paths.append(str(tmp_path / name))
    paths.append(str(tmp_path / "a" / "best.safetensors"))  # the same model again, as a file
    out = tmp_path / "cmp"
    assert main(["compare", *paths, "--data", str(data), "--n-boot", "50", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table.columns) == ["AU1", "AU2", "AU4", "Avg"]  # the AUs all share, in the data's order
    assert len(table) == 4 and table.index[0] == "prior (all present)"
    md = (out / "comparison.md").read_text()
    assert "over 2 test SUBJECTS" in md  # fold 0 of 6 subjects in 3 parts: 2 test subjects
    # the model against itself: difference exactly 0 with a zero-width interval
    last = [line for line in md.splitlines() if line.startswith("| ") and "+0.0 | [+0.0, +0.0]" in line]
    assert last, md
    assert (out / "per_au_ci.png").stat().st_size > 1000 and (out / "forest.png").stat().st_size > 1000
    assert "95% paired bootstrap over 2 subjects" in text


def test_compare_refuses_a_folder_without_a_checkpoint(tmp_path, capsys):
    data = tmp_path / "prep"
    make_toy_prepared(data, aus=(1, 2), n_subjects=3, n_sequences=1, n_frames=2, image_size=200)
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--data", str(data)]) == 2
    assert "without best.safetensors" in capsys.readouterr().err
