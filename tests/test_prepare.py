"""audet prepare: each release layout end to end on tiny fake releases (audet.data.prepare.fake)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from audet.data.listfile import read_list
from audet.data.meta import read_dataset_meta
from audet.data.prepare import fake, prepare_dataset
from audet.data.prepare.types import LayoutError
from audet.facs import KEEP_68_TO_49, to_49
from audet.geometry import align_face


def _prep(dataset, raw, out, **kw):
    kw.setdefault("progress", False)
    return prepare_dataset(dataset, raw, out, **kw)


def _skips(out: Path) -> dict[str, str]:
    """frame tag -> reason, from the per-sequence manifests."""
    got = {}
    for m in sorted((out / ".prepare").rglob("*.npz")):
        with np.load(m) as z:
            got.update(zip(z["skip_names"].tolist(), z["skip_reasons"].tolist()))
    return got


def _info(out: Path) -> dict:
    """dataset.json as written, checked to pass audet's one reader (audet.data.meta)."""
    info = json.loads((out / "dataset.json").read_text())
    assert read_dataset_meta(out) == info
    return info


# ---------------------------------------------------------------------------------------------
# BP4D
# ---------------------------------------------------------------------------------------------


def test_bp4d_end_to_end_official_folds_and_skip_reasons(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    made = fake.make_bp4d(raw, n_frames=6, defects=True)
    summary = _prep("bp4d", raw, out)

    # every deliberately damaged frame is skipped with the right reason, nothing else is
    assert _skips(out) == made["expected_skips"]
    assert summary["frames_written"] == made["n_written"] == 36 - 5
    assert summary["skipped_by_reason"] == {r: 1 for r in made["expected_skips"].values()}
    saved = json.loads((out / "prepare_summary.json").read_text())
    assert saved["frames_skipped"] == 5 and saved["skipped_examples"]["nan_landmarks"] == ["F001/T1/0004"]

    info = _info(out)
    assert info["dataset"] == "BP4D" and info["fold_assignment"] == "official"
    assert info["aus"] == [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
    assert info["parts"] == {"part1": ["F001"], "part2": ["F003"], "part3": ["F004"]}
    assert info["folds"] == [
        {"train": "BP4D_combine_1_2", "test": "BP4D_part3"},
        {"train": "BP4D_combine_1_3", "test": "BP4D_part2"},
        {"train": "BP4D_combine_2_3", "test": "BP4D_part1"},
    ]
    sizes = {}
    for prefix in ["BP4D_part1", "BP4D_part2", "BP4D_part3", "BP4D_combine_1_2",
                   "BP4D_combine_1_3", "BP4D_combine_2_3", "BP4D_all"]:  # fmt: skip
        lf = read_list(out, prefix, aus=info["aus"])  # checks images exist, 98 floats, 0/1/9
        sizes[prefix] = len(lf)
        assert (lf.au_weight is not None) == ("part" not in prefix)
    assert sizes["BP4D_part1"] == 12 - 5 and sizes["BP4D_part2"] == sizes["BP4D_part3"] == 12
    assert sizes["BP4D_combine_1_2"] == sizes["BP4D_part1"] + sizes["BP4D_part2"]
    assert sizes["BP4D_all"] == 31

    # paths, crops and landmarks follow the protocol (1-based raw landmarks shifted by one)
    lf = read_list(out, "BP4D_part2")
    assert lf.paths[0] == "BP4D/F003/T1/0001.jpg"
    img = cv2.imread(str(out / "images" / lf.paths[0]))
    assert img.shape == (200, 200, 3)
    raw68 = fake.face_landmarks(160, 200, "F003", "T1", 1)
    _, expect, _ = align_face(np.zeros((200, 160, 3), np.uint8), to_49(raw68 + 1.0), one_based=True)
    np.testing.assert_allclose(lf.landmarks[0], expect, atol=1e-3)
    # the face fills the crop: eye centres level and inside the frame
    eyes = lf.landmarks[0][19:31]
    assert abs(eyes[:6, 1].mean() - eyes[6:, 1].mean()) < 0.5 and (eyes > 30).all() and (eyes < 170).all()

    # labels come from the AU_OCC columns of the 12 BP4D AUs, in that order
    csv_rows = np.loadtxt(raw / "AUCoding/AU_OCC/F003_T1.csv", delimiter=",", skiprows=1, dtype=int)
    header = [int(h) for h in (raw / "AUCoding/AU_OCC/F003_T1.csv").read_text().split("\n")[0].split(",")]
    cols = [header.index(a) for a in info["aus"]]
    np.testing.assert_array_equal(lf.labels[:6], csv_rows[:6][:, cols])


def test_bp4d_49_and_68_point_releases_give_identical_lists(tmp_path):
    fake.make_bp4d(tmp_path / "r68", subjects=("F001",), tasks=("T1",), n_points=68)
    fake.make_bp4d(tmp_path / "r49", subjects=("F001",), tasks=("T1",), n_points=49)
    for r in ("r68", "r49"):
        _prep("BP4D", tmp_path / r, tmp_path / ("o" + r[1:]))
    for suffix in ("path", "land", "AUoccur"):
        a = (tmp_path / "o68/list" / f"BP4D_part1_{suffix}.txt").read_bytes()
        b = (tmp_path / "o49/list" / f"BP4D_part1_{suffix}.txt").read_bytes()
        assert a == b


def test_bp4d_liberal_frame_names_and_au_subset(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    fake.make_bp4d(raw, subjects=("F001",), tasks=("T1",), n_frames=3)
    d = raw / "BP4D-training/F001/T1"
    # unpadded names and a PNG are accepted; output names are padded to 4 digits
    (d / "0001.jpg").rename(d / "1.jpg")
    img = cv2.imread(str(d / "0002.jpg"))
    (d / "0002.jpg").unlink()
    cv2.imwrite(str(d / "2.png"), img)
    _prep("BP4D", raw, out, aus=(12, 1))
    lf = read_list(out, "BP4D_part1", aus=(12, 1))
    assert lf.paths == ["BP4D/F001/T1/0001.jpg", "BP4D/F001/T1/0002.jpg", "BP4D/F001/T1/0003.jpg"]
    rows = np.loadtxt(raw / "AUCoding/AU_OCC/F001_T1.csv", delimiter=",", skiprows=1, dtype=int)
    header = [int(h) for h in (raw / "AUCoding/AU_OCC/F001_T1.csv").read_text().split("\n")[0].split(",")]
    np.testing.assert_array_equal(lf.labels, rows[:, [header.index(12), header.index(1)]])
    assert _info(out)["aus"] == [12, 1]


def test_synthetic_subjects_get_auto_parts_with_notice(tmp_path, caplog):
    from audet.data.folds import assign_parts

    caplog.set_level(logging.INFO, logger="audet.data.prepare")

    raw = tmp_path / "raw"
    subjects = ("S01", "S02", "S03", "S04")
    fake.make_bp4d(raw, subjects=subjects, tasks=("T1",), n_frames=2)
    _prep("BP4D", raw, tmp_path / "out", seed=3)
    assert "notice" in caplog.text
    info = _info(tmp_path / "out")
    assert info["fold_assignment"] == "auto" and info["seed"] == 3
    assert list(info["parts"].values()) == assign_parts(subjects, n_parts=3, seed=3)
    with pytest.raises(ValueError, match="not in the official"):
        _prep("BP4D", raw, tmp_path / "out2", folds="official")
    # --folds auto overrides official lists too
    raw2 = tmp_path / "raw2"
    fake.make_bp4d(raw2, tasks=("T1",), n_frames=2)
    _prep("BP4D", raw2, tmp_path / "out3", folds="auto")
    assert _info(tmp_path / "out3")["fold_assignment"] == "auto"
    # official subject names, but a synthetic release (audet synth writes synth_meta.json)
    (raw2 / "synth_meta.json").write_text("{}")
    caplog.clear()
    _prep("BP4D", raw2, tmp_path / "out4")
    assert "synthetic release" in caplog.text
    assert _info(tmp_path / "out4")["fold_assignment"] == "auto"
    _prep("BP4D", raw2, tmp_path / "out5", folds="official")
    assert _info(tmp_path / "out5")["fold_assignment"] == "official"
    # official names that would leave part 3 empty (F001, F002 in part 1, F003 in part 2)
    raw3 = tmp_path / "raw3"
    fake.make_bp4d(raw3, subjects=("F001", "F002", "F003"), tasks=("T1",), n_frames=2)
    _prep("BP4D", raw3, tmp_path / "out6")
    assert "without subjects" in caplog.text
    assert _info(tmp_path / "out6")["fold_assignment"] == "auto"


def test_wrong_root_is_a_clear_error(tmp_path, capsys):
    from audet.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match=r"BP4D-training.*AUCoding/AU_OCC"):
        _prep("BP4D", tmp_path / "empty", tmp_path / "out")
    for ds in ("DISFA", "GFT", "BP4D+", "Aff-Wild2"):
        with pytest.raises(LayoutError, match="expected"):
            _prep(ds, tmp_path / "empty", tmp_path / "out", detector="fake")
    assert main(["prepare", "disfa", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "ActionUnit_Labels" in err
    with pytest.raises(ValueError, match="unknown dataset"):
        _prep("CK+", tmp_path / "empty", tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# DISFA
# ---------------------------------------------------------------------------------------------


def test_disfa_left_camera_binarisation_and_66_to_49(tmp_path):
    from audet.data.prepare.fake import KEEP_68_TO_66

    raw, out = tmp_path / "raw", tmp_path / "out"
    made = fake.make_disfa(raw, n_frames=5, defects=True)
    summary = _prep("DISFA", raw, out)
    assert _skips(out) == made["expected_skips"] == {"SN001/1": "no_landmarks"}
    assert summary["frames_written"] == 14
    info = _info(out)
    assert info["aus"] == [1, 2, 4, 6, 9, 12, 25, 26]
    assert info["parts"] == {"part1": ["SN001"], "part2": ["SN006"], "part3": ["SN003"]}

    lf = read_list(out, "DISFA_all", aus=info["aus"])
    assert len(lf) == 14
    for i, p in enumerate(lf.paths):
        _, sn, name = p.split("/")
        idx = int(name.split(".")[0])  # 0-based video frame index; label frame idx + 1
        for j, au in enumerate(info["aus"]):
            assert lf.labels[i, j] == int(made["intensities"][(sn, au)][idx] >= 2), (p, au)
        # left camera: the fake draws it on a blue background, the right one on red
        b, g, r = cv2.imread(str(out / "images" / p))[3, 3].astype(int)
        assert b > r + 60, p
    # intensity 1 is absent, 2 present: both occur in the fake data
    assert {v for vals in made["intensities"].values() for v in vals} == set(range(6))

    # 66 -> 49 (66-point indices 17..65): same points as 68 -> 49 of the drawn face
    i = lf.paths.index("DISFA/SN006/2.jpg")
    lm68 = fake.face_landmarks(192, 144, "SN006", 2)
    pts66 = lm68[KEEP_68_TO_66] + 1.0
    np.testing.assert_allclose(to_49(pts66), lm68[KEEP_68_TO_49] + 1.0)
    _, expect, _ = align_face(np.zeros((144, 192, 3), np.uint8), to_49(pts66), one_based=True)
    np.testing.assert_allclose(lf.landmarks[i], expect, atol=1e-3)


def test_disfa_binarise_threshold():
    from audet.data.prepare.disfa import binarise

    np.testing.assert_array_equal(binarise(np.array([0, 1, 2, 3, 4, 5, -1, 7])), [0, 0, 1, 1, 1, 1, 9, 9])


def test_disfa_reads_extracted_left_frames(tmp_path):
    raw = tmp_path / "raw"
    fake.make_disfa(raw, subjects=("SN001",), n_frames=3)
    # replace the left video by extracted frames (1-based ffmpeg numbering)
    frames_dir = raw / "Videos_LeftCamera_frames" / "LeftVideoSN001_comp"
    frames_dir.mkdir(parents=True)
    cap = cv2.VideoCapture(str(raw / "Videos_LeftCamera/LeftVideoSN001_comp.avi"))
    k = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        k += 1
        cv2.imwrite(str(frames_dir / f"LeftVideoSN001_comp_{k:05d}.jpg"), f)
    (raw / "Videos_LeftCamera/LeftVideoSN001_comp.avi").unlink()
    (raw / "Videos_LeftCamera").rmdir()
    s = _prep("DISFA", raw, tmp_path / "out")
    assert s["frames_written"] == 3
    lf = read_list(tmp_path / "out", "DISFA_part1")
    assert lf.paths == ["DISFA/SN001/0.jpg", "DISFA/SN001/1.jpg", "DISFA/SN001/2.jpg"]


# ---------------------------------------------------------------------------------------------
# GFT, BP4D+, Aff-Wild2
# ---------------------------------------------------------------------------------------------


def test_gft_split_file_and_errors(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    made = fake.make_gft(raw, split_file=False)
    with pytest.raises(ValueError, match="--split"):
        _prep("GFT", raw, out)
    split = tmp_path / "split.txt"
    split.write_text("".join(f"train {s}\n" for s in made["train"]) + f"test {made['test'][0]}\n")
    s = _prep("GFT", raw, out, split_file=str(split))
    assert s["frames_written"] == made["n_written"]
    info = _info(out)
    assert info["parts"] == {"train": sorted(made["train"]), "test": made["test"]}
    assert info["folds"] == [{"train": "GFT_train", "test": "GFT_test"}]
    assert len(read_list(out, "GFT_train", aus=info["aus"])) == 9
    assert len(read_list(out, "GFT_test")) == 3
    auto = _prep("GFT", raw, tmp_path / "out_auto", folds="auto")
    assert auto["frames_written"] == made["n_written"]
    assert _info(tmp_path / "out_auto")["fold_assignment"] == "auto"


def test_bp4dplus_zip_release_and_cross_dataset_fold(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    made = fake.make_bp4dplus(raw, zipped=True)
    s = _prep("bp4d+", raw, out)
    assert s["frames_written"] == made["n_written"] == 12
    info = _info(out)
    assert info["parts"] == {"all": ["F001", "M002"]}
    assert info["folds"] == [{"train": "BP4D_all", "train_dataset": "BP4D", "test": "BP4D+_all"}]
    lf = read_list(out, "BP4D+_all")
    assert lf.paths[0] == "BP4D+/F001/T1/0001.jpg"
    # without 2DFeatures, landmarks come from a detector; without one, frames are reported
    raw2 = tmp_path / "raw2"
    fake.make_bp4dplus(raw2, zipped=False, with_landmarks=False)
    s = _prep("BP4D+", raw2, tmp_path / "o2")
    assert s["frames_written"] == 0 and s["skipped_by_reason"] == {"no_landmarks": 12}
    s = _prep("BP4D+", raw2, tmp_path / "o3", detector="fake")
    assert s["frames_written"] == 12


def test_affwild2_detector_required_and_reasons(tmp_path, capsys):
    from audet.cli import main

    raw, out = tmp_path / "raw", tmp_path / "out"
    made = fake.make_affwild2(raw)
    with pytest.raises(ValueError, match="--landmarker"):
        _prep("Aff-Wild2", raw, out)
    assert main(["prepare", "affwild2", "--root", str(raw), "--out", str(out)]) == 2
    assert "no landmark annotations" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown landmarker"):
        _prep("Aff-Wild2", raw, out, detector="no-such-detector")
    s = _prep("Aff-Wild2", raw, out, detector="fake")
    assert _skips(out) == made["expected_skips"]
    assert s["frames_written"] == made["n_written"] == 10
    info = _info(out)
    assert info["parts"] == {"train": sorted(made["train"]), "val": made["validation"]}
    assert info["folds"] == [{"train": "Aff-Wild2_train", "test": "Aff-Wild2_val"}]
    lf = read_list(out, "Aff-Wild2_train", aus=info["aus"])
    assert lf.paths[0] == "Aff-Wild2/1-30-1280x720/00001.jpg"
    assert len(read_list(out, "Aff-Wild2_val")) == 3


def test_landmarker_registry():
    from audet.data.prepare import landmarks
    from audet.data.prepare.landmarks import (FakeLandmarker, FrameLandmarker, NoLandmarkerError,
                                              create_landmarker, list_landmarkers, register_landmarker)  # fmt: skip

    with pytest.raises(NoLandmarkerError, match="--landmarker"):
        create_landmarker(None)
    assert list_landmarkers() == ["dlib", "fake", "mtcnn"]  # registered where they live, no plug-in search
    det = create_landmarker("fake")
    assert isinstance(det, FrameLandmarker) and isinstance(det, FakeLandmarker)
    assert det.detect(np.full((50, 60, 3), 7, np.uint8)) is None
    img = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    assert det.detect(img).shape == (68, 2)

    class Centre:
        def __init__(self, scale=1.0):
            self.scale = scale

        def detect(self, image):
            return np.zeros((49, 2)) + self.scale

    register_landmarker("unit-test-centre", Centre)
    try:
        assert create_landmarker("unit-test-centre", scale=2.0).detect(img)[0, 0] == 2.0
    finally:
        landmarks._REGISTRY.pop("unit-test-centre")
    with pytest.raises(NoLandmarkerError, match="unknown landmarker 'dlb'"):
        create_landmarker("dlb")
    # the names before 0.2 still work for one release
    assert landmarks.create_detector is create_landmarker and landmarks.LandmarkDetector is FrameLandmarker


def test_dlib_landmarker_finds_the_astronauts_face():
    """The registered dlib plug-in: 68 points inside the face of a real photo (BGR in), None on a blank frame."""
    from skimage import data

    from audet.data.prepare.landmarks import create_landmarker

    rgb = data.astronaut()
    det = create_landmarker("dlib")
    pts = det.detect(np.ascontiguousarray(rgb[..., ::-1]))
    assert pts.shape == (68, 2)
    # the astronaut's face lies in x 160-260, y 60-200 of the 512 x 512 photo
    assert 150 < pts[:, 0].min() and pts[:, 0].max() < 280 and 40 < pts[:, 1].min() and pts[:, 1].max() < 220
    assert det.detect(np.full((120, 120, 3), 128, np.uint8)) is None
