"""``audet cv --repeats`` and ``--lodo`` (issue 18, items 1 and 2): the derived data, the tables,
the ranking statistics and resuming. Training is replaced by a stand-in that writes the results a
finished fold writes, so the orchestration is tested in seconds (real fits: tests/test_calibration.py)."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

import audet.engine.cv as cv
from audet.cli import main
from audet.data import AUDataset
from audet.data.toy import make_toy_prepared
from helpers import tiny_config


class FakeFit:
    """Writes ``results.json`` as a finished fold would; F1 from the config name and the test subjects."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[dict] = []
        self.fail_at = fail_at

    def __call__(self, cfg, verbose=True, callbacks=(), resume=None):
        if self.fail_at is not None and len(self.calls) + 1 == self.fail_at:
            raise KeyboardInterrupt("killed")
        from audet.data.meta import data_aus, read_fold
        from audet.utils.io import write_json_atomic

        root, k = cfg.data.root, cfg.data.fold
        test = read_fold(root, k)["test"]
        subjects = sorted({p.split("/")[1] for p in (Path(root) / "list" / f"{test}_path.txt").read_text().split()})
        aus = data_aus(root)
        base = 0.6 if "good" in cfg.name else 0.55
        noise = (zlib.crc32(" ".join(subjects).encode()) % 100) / 1000
        per_au = {a: base + noise + 0.01 * j for j, a in enumerate(aus)}
        res = {"name": cfg.name, "model": cfg.model.name, "aus": aus, "selection": {"on": "validation"},
               "test": {"best": {"f1": float(np.mean(list(per_au.values()))), "per_au": per_au, "epoch": 0}},
               "test_subjects": subjects, "data_root": root}
        Path(cfg.output.dir).mkdir(parents=True, exist_ok=True)
        # as fit does: the run directory records the config that made it before results are written
        from audet.engine.fit import run_inputs
        from audet.utils.manifest import write_manifest

        write_manifest(cfg.output.dir, run_inputs(cfg), command="train", paths={"run_dir": str(cfg.output.dir)})
        write_json_atomic(Path(cfg.output.dir) / "results.json", res)
        self.calls.append({"root": root, "fold": k, "name": cfg.name, "subjects": subjects})
        return res


def _data(tmp_path, name="SYNTH", prefix="S", aus=(1, 2, 4)):
    root = tmp_path / name.lower()
    make_toy_prepared(root, dataset=name, aus=aus, n_subjects=6, n_sequences=1, n_frames=3, image_size=64,
                      subject_prefix=prefix, missing_rate=0.0)
    return root


def test_ranking_summary_by_hand():
    avgs = {"a": {"official": 60.0, "repeats": [61.0, 55.0, 62.0]}, "b": {"official": 58.0, "repeats": [57.0, 58.0, 59.0]}}
    r = cv.ranking_summary(avgs)
    assert r["orders"] == [["a", "b"], ["b", "a"], ["a", "b"]] and r["official_order"] == ["a", "b"]
    assert r["flips_vs_official"] == 1 and r["tau_vs_official"] == pytest.approx([1.0, -1.0, 1.0])
    assert r["pairs"]["a vs b"] == {"repeats_i_ahead": 2, "repeats_j_ahead": 1, "flips_vs_official": 1}
    assert r["mean_tau_between_repeats"] == pytest.approx(-1 / 3)
    assert cv.ranking_summary({"a": avgs["a"]}) is None


def test_repeats_partition_subjects_resume_and_report(tmp_path, monkeypatch):
    root = _data(tmp_path)
    cfgs = [tiny_config(root, tmp_path / "x", name=n) for n in ("good", "bad")]
    fake = FakeFit()
    monkeypatch.setattr(cv, "fit", fake)
    out = tmp_path / "rep"
    res = cv.repeated_cv(cfgs, repeats=2, seed=7, out=out, verbose=False)
    assert len(fake.calls) == 2 * (1 + 2) * 3  # configs x (official + repeats) x folds
    all_subjects = {f"S{k:03d}" for k in range(1, 7)}
    parts = []
    for r in range(2):
        proot = out / "partitions" / f"repeat{r}"
        tests = [c["subjects"] for c in fake.calls if c["root"] == str(proot) and c["name"].startswith("good")]
        assert sorted(s for t in tests for s in t) == sorted(all_subjects)  # subject-exclusive, complete
        parts.append(sorted(map(tuple, tests)))
        # both configs ran on the very same partitions
        assert sorted(map(tuple, tests)) == sorted(tuple(c["subjects"]) for c in fake.calls
                                                   if c["root"] == str(proot) and c["name"].startswith("bad"))
        ds = AUDataset(proot, "rep_part1")  # images resolve through the link
        assert len(ds) == 3 * len(json.loads((proot / "dataset.json").read_text())["parts"]["part1"])
    assert len({tuple(p) for p in parts}) > 1  # the repeats differ
    text = (out / "repeats_report.md").read_text()
    assert "good: official folds" in text and "good: mean of 2 repeats" in text and "bad: sd" in text
    assert "Kendall's tau" in text and res["ranking"]["official_order"] == ["good", "bad"]
    assert (out / "repeats.png").stat().st_size > 1000
    # a second run trains nothing; a killed run keeps its finished folds and trains only the rest
    again = FakeFit()
    monkeypatch.setattr(cv, "fit", again)
    cv.repeated_cv(cfgs, repeats=2, seed=7, out=out, verbose=False)
    assert again.calls == []
    for d in (out / "bad" / "repeat1").glob("fold*"):
        (d / "results.json").unlink()
    killed = FakeFit(fail_at=2)
    monkeypatch.setattr(cv, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        cv.repeated_cv(cfgs, repeats=2, seed=7, out=out, verbose=False)
    resumed = FakeFit()
    monkeypatch.setattr(cv, "fit", resumed)
    cv.repeated_cv(cfgs, repeats=2, seed=7, out=out, verbose=False)
    assert len(killed.calls) == 1 and len(resumed.calls) == 2
    # another seed is another set of partitions: the folder is refused, not reused
    with pytest.raises(FileExistsError, match="made from other inputs"):
        cv.repeated_cv(cfgs, repeats=2, seed=8, out=out, verbose=False)


def test_cli_refuses_zero_repeats_and_several_configs_without_repeats(tmp_path, capsys):
    root = _data(tmp_path)
    assert main(["cv", "resnet_tiny_synth", f"data.root={root}", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert main(["cv", "resnet_tiny_synth", "escda_synth_quick", f"data.root={root}"]) == 2
    assert "only compared with --repeats" in capsys.readouterr().err


def test_lodo_on_shared_aus_one_table(tmp_path, monkeypatch):
    a = _data(tmp_path, "SYNTH", "S", aus=(1, 2, 4, 6))
    b = _data(tmp_path, "OTHER", "P", aus=(4, 2, 12))
    fake = FakeFit()
    monkeypatch.setattr(cv, "fit", fake)
    res = cv.lodo_cv(tiny_config(a, tmp_path / "x", name="good"), [a, b], out=tmp_path / "lodo", verbose=False)
    assert res["aus"] == [2, 4]
    assert len(fake.calls) == 2
    test_subjects = [set(c["subjects"]) for c in fake.calls]
    assert test_subjects[0] == {f"S{k:03d}" for k in range(1, 7)} and test_subjects[1] == {f"P{k:03d}" for k in range(1, 7)}
    merged = tmp_path / "lodo" / "lodo_data"
    ds = AUDataset(merged, "lodo_without_SYNTH")
    assert ds.aus == [2, 4] and set(ds.subjects) == test_subjects[1]
    text = (tmp_path / "lodo" / "lodo_report.md").read_text()
    assert "test SYNTH (train OTHER)" in text and "test OTHER (train SYNTH)" in text and "| Mean |" in text
    assert "prior (all present) on OTHER" in text


def test_lodo_errors(tmp_path, capsys):
    a = _data(tmp_path, "SYNTH", "S", aus=(1, 2))
    b = _data(tmp_path, "OTHER", "P", aus=(4, 6))
    c = _data(tmp_path, "THIRD", "S", aus=(1, 2))
    assert main(["cv", "resnet_tiny_synth", "--lodo", str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    assert "share no AU" in capsys.readouterr().err
    assert main(["cv", "resnet_tiny_synth", "--lodo", str(a), str(c), "--out", str(tmp_path / "o2")]) == 2
    assert "share subject names" in capsys.readouterr().err
