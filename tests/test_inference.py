"""audet.Detector and `audet predict`: alignment as in training, face ids in photos and videos,
clip models' frame order, the table's columns, the plug-in interface and the no-checkpoint message."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from inference_helpers import AUS, BlobFaces, astronaut, make_checkpoint, scene, use_blob_faces, write_video

import audet
from audet.cli import main
from audet.clip import clip_offsets
from audet.faces import DetectedFace, DlibLandmarker, MTCNNFaceDetector
from audet.inference.backends import CheckpointProblem
from audet.inference.tracking import IoUTracker, iou_matrix


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def detector(ckpt):
    """Real MTCNN + dlib (photos)."""
    return audet.Detector(checkpoint=ckpt, min_face_size=40)


@pytest.fixture(scope="module")
def blob_detector(ckpt):
    """BlobFaces (the synthetic videos): tracking, chunking and the table without the face models' cost."""
    faces = BlobFaces()
    return audet.Detector(checkpoint=ckpt, face_detector=faces, landmarker=faces)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "enter_leave.mp4")


@pytest.fixture(scope="module")
def video_rows(blob_detector, video):
    return blob_detector.detect_video(video)


class Recorder:
    """Stands in for the model backend and keeps every input it gets."""

    def __init__(self, backend):
        self.backend, self.inputs = backend, []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return self.backend(x)


def test_model_input_is_protocol_alignment_plus_checkpoint_transform(ckpt):
    from audet.data.transforms import EvalTransform
    from audet.models.checkpoint import load_checkpoint
    from audet.facs import landmarks68_to_49
    from audet.geometry import align_face

    det = audet.Detector(checkpoint=ckpt)
    det.model = rec = Recorder(det.model)
    img = astronaut()
    rows = det.detect_image(img)
    assert len(rows) == 1 and rows["success"].iloc[0] == 1
    lm68 = np.stack([rows[[f"x_{i}" for i in range(68)]].to_numpy()[0], rows[[f"y_{i}" for i in range(68)]].to_numpy()[0]], -1)
    # the same path by hand: 68 -> 49 points, protocol alignment to 200x200, the checkpoint's eval transform
    box = rows[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy()[0]
    lm_full = DlibLandmarker().landmarks(img, [box])[0]  # unrounded (the table keeps 2 decimals)
    np.testing.assert_allclose(lm_full, lm68, atol=0.01)
    warped, pts, _ = align_face(img, landmarks68_to_49(lm_full), size=200)
    model = load_checkpoint(ckpt)
    want, _ = EvalTransform.from_preprocess(model.preprocess)(warped, pts.astype(np.float32))
    got = rec.inputs[0][0]
    assert got.shape == (3, 176, 176)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    # and the probabilities are the model's sigmoid(logits) on it
    with torch.inference_mode():
        p = torch.sigmoid(model(want[None]).logits)[0].numpy()
    np.testing.assert_allclose(rows[[f"AU{a:02d}_p" for a in AUS]].to_numpy()[0], p, atol=1e-5)


def test_two_faces_in_one_photo_get_two_ids_left_to_right(detector):
    img = astronaut()
    rows = detector.detect_image(np.concatenate([img, img], axis=1))
    assert list(rows["face_id"]) == [0, 1]
    assert rows["box_x1"].iloc[0] < 512 <= rows["box_x1"].iloc[1]
    assert (rows["success"] == 1).all()
    # the same face gives the same AU probabilities wherever it is
    p = rows[[f"AU{a:02d}_p" for a in AUS]].to_numpy()
    np.testing.assert_allclose(p[0], p[1], atol=0.02)


def test_video_faces_entering_and_leaving_get_the_right_ids(video_rows):
    by_id = video_rows.groupby("face_id")["frame"].agg(["min", "max", "count"])
    # face A all along; face B in 8-17, then gone for 16 frames (> max_age 10) and back in 34-41: a new id
    assert list(by_id.index) == [0, 1, 2]
    assert by_id.loc[0].tolist() == [0, 43, 44]
    assert by_id.loc[1].tolist() == [8, 17, 10]
    assert by_id.loc[2].tolist() == [34, 41, 8]
    assert video_rows["frame"].is_monotonic_increasing
    np.testing.assert_allclose(video_rows["timestamp"], video_rows["frame"] / 25.0, atol=1e-6)


def test_table_has_openface_columns_and_presence_is_thresholded(video_rows, blob_detector):
    cols = list(video_rows.columns)
    for name in ["frame", "timestamp", "face_id", "confidence", "success", "box_x1", "box_y2", "x_0", "x_67", "y_0", "y_67"]:
        assert name in cols
    for a in AUS:
        p, c = video_rows[f"AU{a:02d}_p"], video_rows[f"AU{a:02d}_c"]
        assert ((p >= 0) & (p <= 1)).all()
        assert (c.astype(int) == (p >= blob_detector.threshold).astype(int)).all()


def test_stream_yields_the_rows_of_detect_video_in_chunks(blob_detector, video, video_rows):
    parts = list(blob_detector.stream(video))
    assert len(parts) > 1  # flushed as produced, not all at the end
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), video_rows)


def test_clip_offsets():
    assert clip_offsets(None) == ([0], 0)
    assert clip_offsets({"offsets": [-10, 0, 10], "targets": "centre"}) == ([-10, 0, 10], 1)
    assert clip_offsets({"length": 4, "stride": 2}) == ([-2, 0, 2, 4], 1)
    with pytest.raises(ValueError, match="centre"):  # the one clip parser (audet.clip.parse_clip)
        clip_offsets({"offsets": [-1, 1]})
    with pytest.raises(ValueError, match="unknown keys"):
        clip_offsets({"offsets": [-1, 0, 1], "target": "centre"})


def first_face_inputs(det, video) -> list:
    """The model input of the first face of every frame of ``video``, frame by frame (tracked)."""
    from audet.inference.media import VideoSource
    from audet.inference.tracking import IoUTracker

    out, tr = [], IoUTracker()
    with VideoSource(video) as src:
        for fr in src.frames():
            out.append(det.analyse_frame(fr.image, fr.index, fr.timestamp, tracker=tr).faces[0].x)
    return out


def test_clip_model_gets_the_same_face_at_the_trained_offsets_in_order(tmp_path):
    ck = make_checkpoint(tmp_path / "clip.safetensors", clip={"offsets": [-2, 0, 2], "targets": "centre"})
    # detect_every=1: compared below with each frame analysed on its own (first_face_inputs)
    det = audet.Detector(checkpoint=ck, batch_size=4, min_face_size=40, detect_every=1)
    det.model = rec = Recorder(det.model)
    n = 9
    vid = write_video(tmp_path / "v.mp4", n=n, schedule=lambda t: [(10 + 4 * t, 30, False)])
    rows = det.detect_video(vid)
    assert list(rows["frame"]) == list(range(n)) and (rows["face_id"] == 0).all()
    clips = torch.cat(rec.inputs)
    assert clips.shape[:2] == (n, 3)
    singles = first_face_inputs(det, vid)  # the single-frame inputs of each frame, computed independently
    for t in range(n):
        for k, o in enumerate([-2, 0, 2]):
            src_t = min(max(t + o, 0), n - 1)  # nearest frame of the face at the ends
            torch.testing.assert_close(clips[t, k], singles[src_t], atol=0, rtol=0)


def test_align_clip_model_gets_its_frames_aligned_to_the_centre_frame_as_in_training(tmp_path):
    # AUNet's TDN (preprocess align_clip = five_point): the clip frames of a face are aligned to
    # its centre frame by five points, then cropped, by the training transform itself
    from audet.data.transforms import EvalTransform

    ck = make_checkpoint(tmp_path / "clip.safetensors", clip={"offsets": [-2, 0, 2], "targets": "centre"},
                         align_clip="five_point")
    det = audet.Detector(checkpoint=ck, batch_size=4, min_face_size=40, detect_every=1)
    assert det.aligner.align_clip
    det.model = rec = Recorder(det.model)
    n = 7
    vid = write_video(tmp_path / "v.mp4", n=n, schedule=lambda t: [(10 + 6 * t, 30 + (t % 3), False)])
    rows = det.detect_video(vid)
    assert list(rows["frame"]) == list(range(n))
    clips = torch.cat(rec.inputs)
    assert clips.shape[:2] == (n, 3)
    faces = first_face_inputs(det, vid)
    assert isinstance(faces[0], tuple) and faces[0][0].dtype == np.uint8 and faces[0][1].shape == (49, 2)
    transform = EvalTransform.from_preprocess(det.preprocess)
    assert transform.align_reference == 1
    for t in range(n):
        idx = [min(max(t + o, 0), n - 1) for o in (-2, 0, 2)]
        want, _ = transform(np.stack([faces[i][0] for i in idx]), np.stack([faces[i][1] for i in idx]))
        torch.testing.assert_close(clips[t], want, atol=0, rtol=0)
        centre, _ = transform(faces[t][0], faces[t][1])  # the reference frame itself is not moved
        torch.testing.assert_close(clips[t, 1], centre, atol=1e-6, rtol=0)


def test_tracker_ids_and_state_round_trip():
    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]).tolist() == [[50 / 150, 0.0]]
    tr = IoUTracker(iou_threshold=0.3, max_age=2)
    assert tr.update(0, [[0, 0, 10, 10], [50, 50, 60, 60]]) == [0, 1]
    assert tr.update(1, [[51, 50, 61, 60], [1, 0, 11, 10]]) == [1, 0]  # order of boxes does not matter
    again = IoUTracker.from_state(tr.state())
    assert again.update(3, [[2, 0, 12, 10]]) == [0]  # unseen for 2 frames: kept
    assert again.update(7, [[52, 50, 62, 60]]) == [2]  # id 1 unseen for 5 > 2 frames: a new id
    assert again.update(8, [[100, 100, 110, 110]]) == [3]


def test_a_plugged_in_detector_is_used(ckpt):
    class OneBox:
        def detect(self, image):
            return [DetectedFace((181.0, 62.0, 268.0, 172.0), 0.75)]

    det = audet.Detector(checkpoint=ckpt, face_detector=OneBox())
    rows = det.detect_image(astronaut())
    assert len(rows) == 1 and rows["confidence"].iloc[0] == 0.75 and rows["success"].iloc[0] == 1
    with pytest.raises(ValueError, match="detect"):
        audet.Detector(checkpoint=ckpt, face_detector=object())


def test_mtcnn_finds_no_face_in_a_blank_image():
    assert MTCNNFaceDetector().detect(np.full((200, 300, 3), 128, np.uint8)) == []


def test_without_checkpoint_it_says_how_to_get_one(capsys, tmp_path):
    with pytest.raises(CheckpointProblem, match="audet convert.*audet train"):
        audet.Detector()
    assert main(["predict", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "audet convert" in err and "audet train" in err


def test_import_audet_stays_light():
    code = "import sys, audet; assert 'torch' not in sys.modules; print(audet.Detector.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Detector"


def test_predict_writes_tables_annotations_and_plots(ckpt, video, tmp_path, capsys, monkeypatch):
    import cv2

    use_blob_faces(monkeypatch)
    img = tmp_path / "two.png"
    cv2.imwrite(str(img), cv2.cvtColor(scene(0, [(205, 40, True), (10, 30, False)]), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    rc = main(["predict", str(img), str(video), "--checkpoint", str(ckpt), "--out", str(out), "--annotate", "--plot",
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    t_img = pd.read_csv(out / "two.csv")
    assert list(t_img["face_id"]) == [0, 1] and t_img["box_x1"].tolist() == [10, 205]  # left to right
    t_vid = pd.read_csv(out / "enter_leave.csv")
    assert t_vid["face_id"].nunique() == 3
    assert (out / "two" / "two.jpg").is_file()
    cap = cv2.VideoCapture(str(out / "enter_leave_annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 44
    cap.release()
    assert sorted(p.name for p in out.glob("*_aus.png")) == [f"enter_leave_face{i}_aus.png" for i in range(3)]
    assert not list(out.glob("*.part")) and not list(out.glob("*.progress.json"))
    # a second run skips the finished inputs
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(out), "--quiet"]) == 0
    assert "skipped" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["predict", "export"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: audet {cmd}")


def test_progress_bar_shows_frames_per_second_and_time_left(ckpt, tmp_path, capsys, monkeypatch):
    use_blob_faces(monkeypatch)
    vid = write_video(tmp_path / "short.mp4", n=6, schedule=lambda t: [(10 + t, 30, False)])
    assert main(["predict", str(vid), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "6/6" in err and "frame/s" in err and "<00:00" in err  # tqdm: done/total [elapsed<left, rate]
