"""Video at frame rate: faces followed by their landmarks between detections, the reader thread,
the onnxruntime/PyTorch choice, and the thread policy."""
import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from inference_helpers import BlobFaces, enter_leave_schedule, make_checkpoint, scene

import audet
from audet.inference import backends, loading
from audet.inference.media import Frame, prefetch
from audet.utils import threads


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


class Counting(BlobFaces):
    """BlobFaces that records the frames the detector ran on, with a landmarker that looks at the
    image like a real one (the template fitted to the blob under the box it is given, none where
    there is no blob); ``bad_landmarks_at`` makes it return nothing on those frames."""

    def __init__(self, bad_landmarks_at=()):
        super().__init__()
        self.detected_at, self.frame, self.bad = [], -1, set(bad_landmarks_at)

    def detect(self, image):
        self.detected_at.append(self.frame)
        return super().detect(image)

    def landmarks(self, image, boxes):
        from audet.inference.tracking import iou_matrix

        if self.frame in self.bad or not len(boxes):
            return [None for _ in boxes]
        blobs = [f.box for f in BlobFaces.detect(self, image)]
        if not blobs:
            return [None for _ in boxes]
        iou = iou_matrix(np.asarray(boxes), np.asarray(blobs))
        return [super(Counting, self).landmarks(image, [blobs[int(np.argmax(row))]])[0] if row.max() > 0 else None
                for row in iou]


def frames_of(schedule, n, faces: Counting, change=None):
    for t in range(n):
        faces.frame = t
        img = scene(t, schedule(t))
        yield Frame(t, t / 25, change(t, img) if change else img)


def run(ckpt, schedule, n, faces, change=None, **kw):
    # prefetch=0: frames are made in this thread, so that faces.frame is the frame being analysed
    det = audet.Detector(checkpoint=ckpt, face_detector=faces, landmarker=faces, backend="torch", prefetch=0, **kw)
    rows = pd.concat([c.rows for c in det.iter_chunks(frames_of(schedule, n, faces, change))], ignore_index=True)
    return det, rows


def moving(t):  # one face moving 3 px right and 1 px down per frame
    return [(10 + 3 * t, 20 + t // 2, False)]


def test_followed_face_is_found_on_every_frame_with_one_id_and_few_detections(ckpt):
    faces = Counting()
    det, rows = run(ckpt, moving, 30, faces, detect_every=10)
    assert sorted(rows["frame"]) == list(range(30))
    assert rows["face_id"].nunique() == 1 and (rows["success"] == 1).all()
    # each row's box is on the face that frame (the patch is 95 x 120 at x = 10 + 3t, y = 20 + t//2)
    cx = (rows["box_x1"] + rows["box_x2"]) / 2
    assert np.allclose(cx, 10 + 3 * rows["frame"] + 95 / 2, atol=6)
    assert faces.detected_at == [0, 10, 20]  # on schedule only: nothing was lost, nothing entered
    assert det.counts["followed_frames"] == 27


def test_every_frame_and_followed_detection_give_the_same_faces_and_ids(ckpt):
    _, every = run(ckpt, enter_leave_schedule, 44, Counting(), detect_every=1)
    faces = Counting()
    det, followed = run(ckpt, enter_leave_schedule, 44, faces, detect_every=10)
    key = ["frame", "face_id"]
    assert every[key].values.tolist() == followed[key].values.tolist()
    assert len(faces.detected_at) < 44 / 2
    # face B enters at frames 8 and 34: found there (motion outside the followed face), and lost
    # (its box shows the background) at 18 and 42
    assert {8, 34} <= set(faces.detected_at)
    assert det.counts["detections: motion outside the faces"] >= 2


def test_a_lost_face_is_detected_again_on_the_same_frame(ckpt):
    faces = Counting(bad_landmarks_at={5})
    det, rows = run(ckpt, moving, 12, faces, detect_every=10)
    # 5: lost, detected again (still no landmarks there, so nothing to follow); 6: detected again
    assert faces.detected_at == [0, 5, 6]
    assert det.counts["detections: face lost (no landmarks)"] == 1
    assert rows["face_id"].nunique() == 1 and sorted(rows["frame"]) == list(range(12))


def test_a_face_that_changes_appearance_is_detected_again(ckpt):
    faces = Counting()

    def upside_down(t, img):  # from frame 4 on, the face is upside down (same place, same blob)
        if t >= 4:
            img[30:150, 40:135] = img[30:150, 40:135][::-1].copy()
        return img

    det, _ = run(ckpt, lambda t: [(40, 30, False)], 8, faces, change=upside_down, detect_every=10)
    assert faces.detected_at == [0, 4]
    assert det.counts["detections: face lost (appearance changed)"] == 1


def test_detect_every_must_be_positive(ckpt):
    with pytest.raises(ValueError, match="detect_every"):
        audet.Detector(checkpoint=ckpt, face_detector=BlobFaces(), landmarker=BlobFaces(), backend="torch",
                       detect_every=0)


# -- the reader thread ----------------------------------------------------------------------------
def readers():
    return [t for t in threading.enumerate() if t.name == "audet-reader"]


def test_reader_thread_keeps_order_and_hands_over_an_error_in_its_place():
    def source():
        yield from range(5)
        raise ValueError("corrupt frame 5")

    got = []
    with pytest.raises(ValueError, match="corrupt frame 5"):
        for x in prefetch(source(), size=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    assert not readers()


def test_reader_thread_stops_and_closes_its_source_on_ctrl_c():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = prefetch(endless(), size=3)
    with pytest.raises(KeyboardInterrupt):
        for x in it:
            if x == 10:
                time.sleep(0.05)  # the reader is blocked on the full queue
                raise KeyboardInterrupt
    it.close()
    assert closed.is_set() and not readers()


def test_detector_on_a_bad_video_file_leaves_no_reader_thread(ckpt, tmp_path):
    from audet.inference.media import MediaError

    bad = tmp_path / "cut.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    det = audet.Detector(checkpoint=ckpt, face_detector=BlobFaces(), landmarker=BlobFaces(), backend="torch")
    with pytest.raises(MediaError, match="cannot open as a video"):
        det.detect_video(bad)
    assert not readers()


# -- onnxruntime or PyTorch -------------------------------------------------------------------------
def test_auto_backend_falls_back_to_pytorch_when_onnxruntime_disagrees(ckpt, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    real = backends.OnnxBackend.__call__
    monkeypatch.setattr(backends.OnnxBackend, "__call__", lambda self, x: real(self, x) + 0.01)
    with caplog.at_level(logging.WARNING, logger="audet.inference.loading"):
        be = loading.load_backend(ckpt, "auto")
    assert be.name == "torch"
    assert "differ from PyTorch" in caplog.text


def test_auto_backend_takes_onnxruntime_when_it_agrees_and_is_faster(ckpt, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(loading, "_seconds", lambda be, x, repeats=2: 1.0 if be.name == "torch" else 0.5)
    be = loading.load_backend(ckpt, "auto")
    assert be.name == "onnxruntime"
    monkeypatch.setattr(loading, "_seconds", lambda be, x, repeats=2: 0.5 if be.name == "torch" else 1.0)
    assert loading.load_backend(ckpt, "auto").name == "torch"
    model = loading.load_model(ckpt)
    assert loading.load_backend(model, "auto").name == "torch"  # a loaded model: no file to export
    assert loading.load_backend(ckpt, "auto", precision="bf16").name == "torch"


# -- threads ---------------------------------------------------------------------------------------
def test_thread_choice_precedence(tmp_path):
    load = tmp_path / "loadavg"
    load.write_text("3.00 2.00 1.00 4/300 12345\n")
    assert threads.busy_cpus(samples=1, path=str(load), own=lambda: 1) == 3.0  # 4 running, one of them ours
    # this process's own running threads are not other programs' (torch's threads after its import)
    assert threads.busy_cpus(samples=1, path=str(load), own=lambda: 3) == 1.0
    tasks = tmp_path / "task"
    for tid, state in ((11, "R"), (12, "S"), (13, "R")):
        (tasks / str(tid)).mkdir(parents=True)
        (tasks / str(tid) / "stat").write_text(f"{tid} (python (x)) {state} 1 2 3\n")
    assert threads.own_running_threads(str(tasks)) == 2
    assert threads.own_running_threads(str(tmp_path / "none")) == 1
    assert threads.own_running_threads() >= 1
    assert threads.busy_cpus(samples=1, path=str(tmp_path / "missing")) == 0.0
    env = {"AUDET_THREADS": "3", "OMP_NUM_THREADS": "4"}
    assert threads.choose_threads(2, environ=env)[0] == 2
    assert threads.choose_threads(None, environ=env)[0] == 3
    assert threads.choose_threads(None, environ={"OMP_NUM_THREADS": "4"})[0] == 4
    n, _ = threads.choose_threads(None, environ={}, use_load=False)
    assert n == threads.available_cpus()
    with pytest.raises(ValueError, match="AUDET_THREADS must be a positive integer"):
        threads.choose_threads(None, environ={"AUDET_THREADS": "lots"})


def test_wait_policy_is_set_unless_the_user_chose_one():
    env = {}
    threads.prepare_environment(env, busy=1.0)  # another program holds a CPU: sleeping waits
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    threads.prepare_environment(env, busy=0.0)  # idle machine: a short spin (one CPU: nothing to wait for)
    assert env == ({"GOMP_SPINCOUNT": threads.SHORT_SPIN} if threads.available_cpus() > 1 else {"OMP_WAIT_POLICY": "PASSIVE"})
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}):
        env = dict(mine)
        threads.prepare_environment(env)
        assert env == mine


def test_the_command_sets_the_wait_policy_before_torch_and_threads_win():
    # main() runs prepare_environment before any command imports torch
    code = ("import os, sys\nfrom audet import cli\nimport audet.commands.predict as e\n"
            "e.run = lambda args: print(os.environ.get('OMP_WAIT_POLICY') or 'spin=' + os.environ.get('GOMP_SPINCOUNT', ''),"
            " __import__('torch').get_num_threads())\n"
            "cli.main(['predict', 'x', '--threads', '1'])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    policy, n = out.stdout.split()
    assert policy in ("PASSIVE", f"spin={threads.SHORT_SPIN}") and n == "1", out.stderr[-2000:]
