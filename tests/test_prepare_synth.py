"""Integration: ``audet synth --preset test`` -> ``audet prepare BP4D`` -> ``read_list``."""
from __future__ import annotations

import json

import numpy as np

from audet.cli import main
from audet.data.listfile import read_list


def test_synth_test_preset_prepares_and_reads_back(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert main(["synth", "--preset", "test", "--out", str(raw)]) == 0
    assert main(["prepare", "BP4D", "--raw", str(raw), "--out", str(out), "--num-workers", "2", "--quiet"]) == 0
    assert "synthetic release" in capsys.readouterr().out  # folds from assign_parts, with a notice (a log record)

    info = json.loads((out / "dataset.json").read_text())
    summary = json.loads((out / "prepare_summary.json").read_text())
    meta = json.loads((raw / "synth_meta.json").read_text())
    n_raw = sum(1 for _ in (raw / "BP4D-training").rglob("*.jpg"))
    assert summary["frames_written"] + summary["frames_skipped"] == n_raw
    assert summary["frames_written"] >= 0.9 * n_raw
    assert info["fold_assignment"] == "auto" and len(info["folds"]) == 3
    assert sorted(s for p in info["parts"].values() for s in p) == sorted(
        {p.parent.name for p in (raw / "BP4D-training").glob("*/*")})
    assert meta  # the generator's ground truth is there

    for fold in info["folds"]:
        train = read_list(out, fold["train"], aus=info["aus"])
        test = read_list(out, fold["test"], aus=info["aus"])
        assert {i.subject for i in train.info}.isdisjoint({i.subject for i in test.info})
        assert train.au_weight is not None and test.au_weight is None
    lf = read_list(out, "BP4D_all", aus=info["aus"])
    assert len(lf) == summary["frames_written"]
    assert np.isfinite(lf.landmarks).all() and (lf.landmarks > 0).all() and (lf.landmarks < 200).all()


def test_synth_in_disfa_layout_prepares_with_the_same_labels(tmp_path, capsys):
    """``--layout DISFA``: the same frames and labels as the BP4D layout of the same seed, read
    back by ``audet prepare DISFA`` (a present AU -> intensity 3 -> 1 at DISFA's >= 2)."""
    raw_b, raw_d, out = tmp_path / "b", tmp_path / "d", tmp_path / "out"
    assert main(["synth", "--preset", "test", "--out", str(raw_b), "--quiet"]) == 0
    assert main(["synth", "--preset", "test", "--out", str(raw_d), "--layout", "DISFA", "--quiet"]) == 0
    assert not (raw_d / ".bp4d_layout").exists()
    meta = json.loads((raw_d / "synth_meta.json").read_text())
    mapping = meta["layout"]["subjects"]
    assert sorted(mapping.values()) == sorted(p.name for p in (raw_b / "BP4D-training").iterdir())
    assert main(["prepare", "DISFA", "--raw", str(raw_d), "--out", str(out), "--quiet"]) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["dataset"] == "DISFA" and info["fold_assignment"] == "auto"
    lf = read_list(out, "DISFA_all", aus=info["aus"])
    # compare the labels of SN001's first sequence with the BP4D-layout CSV of the same subject
    from audet.data.prepare.bp4d import read_au_occ

    subject = mapping["SN001"]
    first = sorted(p.name for p in (raw_b / "BP4D-training" / subject).iterdir())[0]
    occ, _ = read_au_occ(raw_b / "AUCoding" / "AU_OCC" / f"{subject}_{first}.csv", info["aus"])
    frames = sorted(occ)
    rows = {i.frame: k for k, i in enumerate(lf.info) if i.subject == "SN001"}
    checked = 0
    for k, fr in enumerate(frames):
        if k in rows and not (occ[fr] == 9).any():
            assert lf.labels[rows[k]].tolist() == occ[fr].tolist()
            checked += 1
    assert checked >= len(frames) // 2
