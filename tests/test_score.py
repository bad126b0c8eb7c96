"""``audet score`` and ``audet evaluate --save-predictions`` (issue 18, item 5)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from audet.cli import main
from audet.data.toy import make_toy_prepared
from audet.models.checkpoint import save_checkpoint
from audet.engine.predictions import read_predictions, score_predictions, split_frames
from audet.models import create_model


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("score") / "prep"
    make_toy_prepared(root, aus=(1, 2, 4), n_subjects=6, n_sequences=2, n_frames=5, missing_rate=0.1,
                      image_size=200)
    return root


def _table_rows(text: str) -> list[list[str]]:
    """The value cells of the markdown table rows printed (without the row name)."""
    return [line.split("|")[2:] for line in text.splitlines() if line.startswith("| ") and "AU1" not in line]


def test_score_of_save_predictions_reproduces_evaluate_exactly(prepared, tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("resnet_tiny", num_aus=3, aus=[1, 2, 4], width=4)
    ck, _ = save_checkpoint(model, tmp_path / "m.safetensors")
    preds = tmp_path / "preds.csv"
    assert main(["evaluate", "-c", str(ck), "--data", str(prepared), "--save-predictions", str(preds),
                 "--out", str(tmp_path / "ev")]) == 0
    printed_eval = capsys.readouterr().out
    assert main(["score", str(preds), "--data", str(prepared)]) == 0
    printed_score = capsys.readouterr().out
    assert _table_rows(printed_eval)[0] == _table_rows(printed_score)[0]  # the printed F1, cell by cell
    # and unrounded: the same per-AU values from the library calls
    from audet.engine.evaluate import evaluate

    ev = evaluate(ck, prepared, _test_prefix(prepared))
    data = split_frames(prepared, _test_prefix(prepared))
    sc = score_predictions(read_predictions([preds], sorted(data["sequence"].unique())), data)
    assert sc["per_au"] == pytest.approx(ev["per_au"], abs=0) and sc["f1"] == ev["f1"]
    assert sc["n_scored"] == ev["n"] and sc["unmatched_rows"] == 0 and sc["data_without_row"] == 0


def _test_prefix(root):
    from audet.data.meta import read_fold

    return read_fold(root, 0)["test"]


def _hand_f1(data: pd.DataFrame, au: int, pred: np.ndarray) -> float:
    y = data[f"AU{au}"].to_numpy()
    k = y != 9
    return f1_score(y[k], pred[k], zero_division=0)


def test_openface_csv_per_sequence_missing_au_and_intensity_threshold(prepared, tmp_path, capsys):
    data = split_frames(prepared, _test_prefix(prepared))
    rng = np.random.default_rng(0)
    out = tmp_path / "of"
    out.mkdir()
    r1 = {}
    for seq, g in data.groupby("sequence"):
        r = rng.uniform(0, 5, size=len(g))
        r1[seq] = r
        # OpenFace writes a space after each comma and 1-based frames; no AU4 here; one extra frame
        df = pd.DataFrame({"frame": np.r_[g["frame"].to_numpy() + 1, 999], "face_id": 0,
                           "confidence": 0.98, "success": 1,
                           "AU01_r": np.r_[r, 0.0], "AU02_r": np.r_[r[::-1], 0.0],
                           "AU01_c": np.r_[(r >= 2.5).astype(int), 0], "AU02_c": np.r_[(r[::-1] >= 2.5).astype(int), 0]})
        df.to_csv(out / f"{seq.replace('/', '_')}.csv", index=False, sep=",")
        text = (out / f"{seq.replace('/', '_')}.csv").read_text().replace(",", ", ")
        (out / f"{seq.replace('/', '_')}.csv").write_text(text)
    seqs = sorted(data["sequence"].unique())
    p = read_predictions([out], seqs, frame_offset=-1)
    res = score_predictions(p, data)
    assert res["missing_aus"] == [4] and np.isnan(res["table"]["AU4"].iloc[0])
    assert res["unmatched_rows"] == len(seqs)  # the extra frame 999 of every file
    r_all = np.concatenate([r1[s] for s in data["sequence"].drop_duplicates()])
    assert res["per_au"][1] == pytest.approx(_hand_f1(data, 1, (r_all >= 2.5).astype(int)))
    # intensities with a stated threshold replace the _c columns
    res_r = score_predictions(read_predictions([out], seqs, threshold=1.0, frame_offset=-1), data)
    assert res_r["per_au"][1] == pytest.approx(_hand_f1(data, 1, (r_all >= 1.0).astype(int)))
    assert set(res_r["auc"]) == {1, 2}
    # through the command: one table and the counts, the missing AU named
    assert main(["score", str(out), "--data", str(prepared), "--frame-offset", "-1"]) == 0
    text = capsys.readouterr().out
    assert "missing (the tool does not predict them; not scored, not zero): AU4" in text
    assert f"{len(seqs)} prediction rows match no labelled frame" in text


def test_pyfeat_csv_with_image_paths(prepared, tmp_path):
    data = split_frames(prepared, _test_prefix(prepared))
    rng = np.random.default_rng(1)
    probs = rng.random((len(data), 3))
    inputs = [f"/somewhere/images/TOY/{s}/{f:04d}.jpg" for s, f in zip(data["sequence"], data["frame"])]
    df = pd.DataFrame({"input": inputs, "frame": 0, "FaceScore": 0.99, "AU01": probs[:, 0], "AU02": probs[:, 1],
                       "AU04": probs[:, 2]})
    df.to_csv(tmp_path / "feat.csv", index=False)
    res = score_predictions(read_predictions([tmp_path / "feat.csv"], sorted(data["sequence"].unique())), data)
    assert res["n_scored"] == len(data) and res["missing_aus"] == []
    assert res["per_au"][4] == pytest.approx(_hand_f1(data, 4, (probs[:, 2] >= 0.5).astype(int)))


def test_bad_prediction_files_get_one_line_errors(prepared, tmp_path, capsys):
    data = split_frames(prepared, _test_prefix(prepared))
    base = pd.DataFrame({"sequence": data["sequence"], "frame": data["frame"], "AU01_p": 0.7, "AU02_p": 0.2})
    cases = {
        "dup.csv": (pd.concat([base, base.iloc[:1]]), "duplicate frames"),
        "nan.csv": (base.assign(AU01_p=[np.nan] + [0.5] * (len(base) - 1)), "NaN value"),
        "off.csv": (base.assign(frame=base["frame"] + 10_000), "none of its"),
        "intensity.csv": (pd.DataFrame({"frame": [1], "AU01_r": [2.0]}), "--threshold"),
    }
    for name, (df, msg) in cases.items():
        df.to_csv(tmp_path / name, index=False)
        assert main(["score", str(tmp_path / name), "--data", str(prepared)]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
