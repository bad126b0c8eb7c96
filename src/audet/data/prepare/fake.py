"""Tiny fake releases in each raw layout, for tests and demos (a few frames, drawn with OpenCV).

Each ``make_*`` function writes a miniature release under ``root`` in the layout its reader
expects and returns a dict describing what it wrote (subjects, frames, deliberate defects and
the skip reason each defect must produce). Faces are drawn from
:func:`audet.data.prepare.landmarks.face_template_68` with a small per-frame pose jitter, so the
landmark annotations match the drawing. Everything is deterministic.
"""
from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from audet.data.prepare.landmarks import face_template_68
from audet.facs import KEEP_68_TO_49

__all__ = [
    "face_landmarks",
    "draw_face",
    "make_bp4d",
    "make_bp4dplus",
    "make_disfa",
    "make_gft",
    "make_affwild2",
]

#: 66-point layout = 68 without the inner-mouth corners (68-point indices 60 and 64).
KEEP_68_TO_66 = np.array([i for i in range(68) if i not in (60, 64)])


def _rng(*key) -> np.random.Generator:
    import hashlib

    h = hashlib.sha1("/".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def face_landmarks(width: int, height: int, *key, jitter: float = 1.0) -> np.ndarray:
    """68 points (0-based pixels) of a face filling ~60% of the frame, jittered by ``key``."""
    rng = _rng(*key)
    t = face_template_68() - 0.5
    side = 0.6 * min(width, height) * (1 + 0.05 * jitter * rng.uniform(-1, 1))
    ang = np.deg2rad(8 * jitter * rng.uniform(-1, 1))
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    centre = np.array([width / 2, height / 2]) + jitter * rng.uniform(-0.05, 0.05, 2) * [width, height]
    return (t * side) @ rot.T + centre


def draw_face(landmarks68: np.ndarray, width: int, height: int,
              background=(90, 120, 60), skin=(150, 180, 215)) -> np.ndarray:  # fmt: skip
    """A BGR uint8 frame with a cartoon face drawn at ``landmarks68``."""
    import cv2

    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    # a gentle gradient so the frame is not flat (and JPEG has something to encode)
    img[:] = np.clip(img.astype(np.int16) + np.linspace(-20, 20, width, dtype=np.int16)[None, :, None],
                     0, 255).astype(np.uint8)  # fmt: skip
    p = np.round(landmarks68).astype(np.int32)
    hull = cv2.convexHull(np.concatenate([p[:17], p[17:27] - [0, int(0.1 * height)]]))
    cv2.fillConvexPoly(img, hull, skin, lineType=cv2.LINE_AA)
    for a, b in ((17, 22), (22, 27)):
        cv2.polylines(img, [p[a:b]], False, (40, 50, 70), 2, cv2.LINE_AA)
    for a, b in ((36, 42), (42, 48)):
        cv2.fillPoly(img, [p[a:b]], (255, 255, 255), cv2.LINE_AA)
        c = p[a:b].mean(axis=0).astype(int)
        cv2.circle(img, tuple(int(v) for v in c), max(1, int(0.012 * width)), (60, 40, 20), -1)
    cv2.polylines(img, [p[27:31]], False, (90, 110, 160), 2, cv2.LINE_AA)
    cv2.polylines(img, [p[31:36]], False, (90, 110, 160), 2, cv2.LINE_AA)
    cv2.fillPoly(img, [p[48:60]], (80, 80, 180), cv2.LINE_AA)
    cv2.fillPoly(img, [p[60:68]], (40, 30, 90), cv2.LINE_AA)
    return img


def _write_jpg(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())


def _fit_mat(path: Path, preds: Sequence[np.ndarray | None]) -> None:
    """A 2DFeatures-style .mat: ``fit`` 1 x n struct array with field ``pred``."""
    from scipy.io import savemat

    fit = np.empty((1, len(preds)), dtype=[("pred", "O")])
    for k, p in enumerate(preds):
        fit["pred"][0, k] = np.zeros((0, 0)) if p is None else np.asarray(p, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"fit": fit})


def _labels(rng: np.random.Generator, aus: Sequence[int], p: float = 0.35) -> list[int]:
    return [int(v) for v in (rng.random(len(aus)) < p)]


# ---------------------------------------------------------------------------------------------
# BP4D / BP4D+
# ---------------------------------------------------------------------------------------------

BP4D_CSV_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27, 28)


def _bp4d_like(root: Path, image_dir: str, subjects, tasks, n_frames, n_points, defects,
               first_frame, width, height, zipped: bool, with_landmarks: bool) -> dict:  # fmt: skip
    expected: dict[str, str] = {}
    frames_info = {}
    for si, subj in enumerate(subjects):
        zf = None
        if zipped:
            (root / image_dir).mkdir(parents=True, exist_ok=True)
            zf = zipfile.ZipFile(root / image_dir / f"{subj}.zip", "w")
        for ti, task in enumerate(tasks):
            start = first_frame + 17 * ti
            numbers = list(range(start, start + n_frames))
            preds = []
            rows = []
            for k, n in enumerate(numbers):
                lm = face_landmarks(width, height, subj, task, n)
                img = draw_face(lm, width, height)
                rel = f"{subj}/{task}/{n:04d}.jpg"
                import cv2

                data = cv2.imencode(".jpg", img)[1].tobytes()
                tag = f"{subj}/{task}/{n:04d}"
                # deliberate defects in the first sequence of the first subject
                first = defects and si == 0 and ti == 0
                if first and k == 1:
                    data = b"not a jpeg"
                    expected[tag] = "unreadable_image"
                if zf is not None:
                    zf.writestr(rel, data)
                else:
                    p = root / image_dir / rel
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(data)
                pts = lm[KEEP_68_TO_49] if n_points == 49 else lm
                pts = pts + 1.0  # 1-based, as in the release
                if first and k == 2:
                    pts = None
                    expected[tag] = "no_landmarks"
                elif first and k == 3:
                    pts = pts.copy()
                    pts[5, 0] = np.nan
                    expected[tag] = "nan_landmarks"
                preds.append(pts)
                lab = _labels(_rng("lab", subj, task, n), BP4D_CSV_AUS)
                if first and k == 4:
                    lab = [9] * len(BP4D_CSV_AUS)
                    expected[tag] = "labels_missing_all"
                if first and k == 5:
                    expected[tag] = "not_annotated"
                    continue  # no label row for this image
                rows.append([n, *lab])
            frames_info[f"{subj}/{task}"] = numbers
            if with_landmarks:
                _fit_mat(root / "2DFeatures" / f"{subj}_{task}.mat", preds)
            csv_path = root / "AUCoding" / "AU_OCC" / f"{subj}_{task}.csv"
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(csv_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow([0, *BP4D_CSV_AUS])
                w.writerows(rows)
        if zf is not None:
            zf.close()
    n_total = len(subjects) * len(tasks) * n_frames
    return {"subjects": list(subjects), "tasks": list(tasks), "frames": frames_info,
            "expected_skips": expected, "n_frames": n_total,
            "n_written": n_total - len(expected)}  # fmt: skip


def make_bp4d(root, subjects=("F001", "F003", "F004"), tasks=("T1", "T2"), n_frames: int = 4,
              n_points: int = 68, defects: bool = False, width: int = 160, height: int = 200) -> dict:  # fmt: skip
    """A BP4D-layout release (``BP4D-training``, ``AUCoding/AU_OCC``, ``2DFeatures``).

    The default subjects lie in the three official parts (one each). ``n_points`` is 68 (as the
    synthetic generator writes) or 49 (as the real release).

    ``defects=True`` (needs ``n_frames >= 6``) damages frames 1-5 of the first sequence: an
    unreadable jpeg, an empty ``pred``, a NaN landmark, a row of 9s and a missing label row.
    """
    if defects and n_frames < 6:
        raise ValueError("defects need n_frames >= 6")
    return _bp4d_like(Path(root), "BP4D-training", subjects, tasks, n_frames, n_points, defects,
                      first_frame=1, width=width, height=height, zipped=False, with_landmarks=True)  # fmt: skip


def make_bp4dplus(root, subjects=("F001", "M002"), tasks=("T1", "T6"), n_frames: int = 3,
                  zipped: bool = True, with_landmarks: bool = True, width: int = 160,
                  height: int = 200) -> dict:  # fmt: skip
    """A BP4D+-layout release: ``2D+3D/<subject>.zip`` (or folders), ``AUCoding/AU_OCC``,
    ``2DFeatures`` (49 points) unless ``with_landmarks=False``."""
    return _bp4d_like(Path(root), "2D+3D", subjects, tasks, n_frames, 49, False, first_frame=1,
                      width=width, height=height, zipped=zipped, with_landmarks=with_landmarks)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# DISFA
# ---------------------------------------------------------------------------------------------

DISFA_FILE_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


def _write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 20.0) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not vw.isOpened():  # pragma: no cover - codec missing
        raise RuntimeError("cv2.VideoWriter(MJPG) unavailable")
    for f in frames:
        vw.write(f)
    vw.release()


def make_disfa(root, subjects=("SN001", "SN006", "SN003"), n_frames: int = 5,
               width: int = 192, height: int = 144, defects: bool = False) -> dict:  # fmt: skip
    """A DISFA-layout release: left and right videos, 66-point ``Landmark_Points`` mats
    (1-based), ``ActionUnit_Labels/SNxxx/SNxxx_auN.txt`` intensities 0-5.

    The left camera is drawn on a BLUE background and the right one on a RED one, so a test can
    tell which camera was used. Intensities cycle 0..5 per frame, so binarisation at >= 2 is
    visible. ``defects=True`` removes the landmark file of frame 1 of the first subject.
    """
    from scipy.io import savemat

    root = Path(root)
    expected = {}
    intens = {}
    for si, sn in enumerate(subjects):
        left, right = [], []
        for i in range(n_frames):
            lm = face_landmarks(width, height, sn, i)
            left.append(draw_face(lm, width, height, background=(200, 60, 40)))   # blue (BGR)
            right.append(draw_face(lm, width, height, background=(40, 60, 200)))  # red
            pts66 = lm[KEEP_68_TO_66] + 1.0
            if defects and si == 0 and i == 1:
                expected[f"{sn}/{i}"] = "no_landmarks"
                continue
            p = root / "Landmark_Points" / sn / "tmp_frame_lm" / f"{sn}_{i:04d}_lm.mat"
            p.parent.mkdir(parents=True, exist_ok=True)
            savemat(str(p), {"pts": pts66})
        _write_video(root / "Videos_LeftCamera" / f"LeftVideo{sn}_comp.avi", left)
        _write_video(root / "Video_RightCamera" / f"RightVideo{sn}_Comp.avi", right)
        lab_dir = root / "ActionUnit_Labels" / sn
        lab_dir.mkdir(parents=True, exist_ok=True)
        for j, au in enumerate(DISFA_FILE_AUS):
            vals = [(i + j + si) % 6 for i in range(n_frames)]
            intens[(sn, au)] = vals
            (lab_dir / f"{sn}_au{au}.txt").write_text(
                "".join(f"{i + 1},{v}\n" for i, v in enumerate(vals)))
    n_total = len(subjects) * n_frames
    return {"subjects": list(subjects), "intensities": intens, "expected_skips": expected,
            "n_frames": n_total, "n_written": n_total - len(expected)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# GFT (assumed layout, see docs/datasets.md)
# ---------------------------------------------------------------------------------------------

GFT_FILE_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)


def make_gft(root, train=("001A", "001B", "002A"), test=("003C",), n_frames: int = 3,
             width: int = 160, height: int = 160, split_file: bool = True) -> dict:  # fmt: skip
    """A GFT release in the layout documented in docs/datasets.md (an assumption)."""
    root = Path(root)
    for subj in (*train, *test):
        rows, lrows = [], []
        for n in range(1, n_frames + 1):
            lm = face_landmarks(width, height, subj, n)
            _write_jpg(root / "images" / subj / f"{n:05d}.jpg", draw_face(lm, width, height))
            rows.append([n, *_labels(_rng("gft", subj, n), GFT_FILE_AUS)])
            lrows.append([n, *np.round(lm[KEEP_68_TO_49], 3).reshape(-1).tolist()])
        (root / "AU_OCC").mkdir(parents=True, exist_ok=True)
        with open(root / "AU_OCC" / f"{subj}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["frame", *(f"AU{a:02d}" for a in GFT_FILE_AUS)])
            w.writerows(rows)
        (root / "landmarks").mkdir(parents=True, exist_ok=True)
        with open(root / "landmarks" / f"{subj}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["frame", *(f"{c}{i}" for i in range(1, 50) for c in "xy")])
            w.writerows(lrows)
    if split_file:
        (root / "split.json").write_text(json.dumps({"train": list(train), "test": list(test)}))
    n_total = (len(train) + len(test)) * n_frames
    return {"train": list(train), "test": list(test), "n_frames": n_total, "n_written": n_total,
            "expected_skips": {}}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Aff-Wild2
# ---------------------------------------------------------------------------------------------

AFFWILD2_AUS = (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)


def make_affwild2(root, train=("1-30-1280x720", "video2_left"), validation=("video5",),
                  n_frames: int = 4, size: int = 112) -> dict:  # fmt: skip
    """An Aff-Wild2 release: ``cropped_aligned/<video>/<frame:05d>.jpg`` and
    ``annotations/AU_Detection_Challenge/{Train_Set,Validation_Set}/<video>.txt``.

    Frames are drawn from the template the fake detector returns. Defects: row 2 of the first
    training video is all -1 (``labels_missing_all``); frame 3 of the first validation video is
    blank (``no_face_detected`` with the fake detector); the annotation of the second training
    video has one row more than there are frames (``missing_image``).
    """
    from audet.data.prepare.landmarks import FakeLandmarker

    root = Path(root)
    expected = {}
    det = FakeLandmarker()
    written = 0
    for set_name, videos in (("Train_Set", train), ("Validation_Set", validation)):
        ann_dir = root / "annotations" / "AU_Detection_Challenge" / set_name
        ann_dir.mkdir(parents=True, exist_ok=True)
        for vi, video in enumerate(videos):
            lines = [",".join(f"AU{a}" for a in AFFWILD2_AUS)]
            for n in range(1, n_frames + 1):
                lm = det.fit(size, size)
                img = draw_face(lm, size, size)
                lab = _labels(_rng("aw", video, n), AFFWILD2_AUS)
                tag = f"{video}/{n:05d}"
                if set_name == "Train_Set" and vi == 0 and n == 2:
                    lab = [-1] * len(AFFWILD2_AUS)
                    expected[tag] = "labels_missing_all"
                elif set_name == "Validation_Set" and vi == 0 and n == 3:
                    img = np.full((size, size, 3), 128, np.uint8)
                    expected[tag] = "no_face_detected"
                else:
                    written += 1
                _write_jpg(root / "cropped_aligned" / video / f"{n:05d}.jpg", img)
                lines.append(",".join(map(str, lab)))
            if set_name == "Train_Set" and vi == 1:
                lines.append(",".join(["1"] * len(AFFWILD2_AUS)))
                expected[f"{video}/{n_frames + 1:05d}"] = "missing_image"
            (ann_dir / f"{video}.txt").write_text("\n".join(lines) + "\n")
    return {"train": list(train), "validation": list(validation), "expected_skips": expected,
            "n_written": written}  # fmt: skip
