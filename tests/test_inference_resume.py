"""Long videos: an interrupted `audet predict` (Ctrl-C, or a kill at any moment) resumes where it
stopped, with no row lost or duplicated and the same face ids, for frame and clip models."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference_helpers import make_checkpoint, write_video

import audet
from audet.cli import main
from audet.inference.media import VideoSource
from audet.inference.writers import TableWriter


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "talk.mp4")


@pytest.fixture(scope="module", params=["frames", "clip"])
def setup(request, tmp_path_factory, video):
    """(checkpoint, reference table of an uninterrupted run)."""
    d = tmp_path_factory.mktemp(request.param)
    clip = {"offsets": [-3, 0, 3], "targets": "centre"} if request.param == "clip" else None
    ck = make_checkpoint(d / "m.safetensors", clip=clip)
    assert main(["predict", str(video), "--checkpoint", str(ck), "--out", str(d / "ref"), "--batch-size", "4", "--min-face-size", "40",
                 "--no-progress"]) == 0
    return ck, pd.read_csv(d / "ref" / "talk.csv")


def test_ctrl_c_then_a_half_written_batch_then_resume(setup, video, tmp_path, monkeypatch, capsys):
    ck, ref = setup
    out = tmp_path / "out"
    real = VideoSource.frames

    def interrupted(self, start=0):
        for fr in real(self, start):
            if fr.index == 23:
                raise KeyboardInterrupt
            yield fr

    monkeypatch.setattr(VideoSource, "frames", interrupted)
    args = ["predict", str(video), "--checkpoint", str(ck), "--out", str(out), "--batch-size", "4", "--min-face-size", "40", "--no-progress"]
    assert main(args) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    part = out / "talk.csv.part"
    kept = pd.read_csv(part)
    assert 0 < kept["frame"].max() < 23 and not (out / "talk.csv").exists()
    # a kill between writing rows and recording them: the rows must not appear twice
    with open(part, "a") as f:
        f.write(",".join(["x"] * len(ref.columns)) + "\n" + "half a ro")
    monkeypatch.setattr(VideoSource, "frames", real)
    assert main(args) == 0
    assert "resuming at frame" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out / "talk.csv"), ref)
    assert not part.exists() and not (out / "talk.csv.progress.json").exists()


@pytest.mark.slow
def test_kill_mid_video_and_resume(setup, video, tmp_path):
    ck, ref = setup
    out = tmp_path / "out"
    args = ["predict", str(video), "--checkpoint", str(ck), "--out", str(out), "--batch-size", "4", "--min-face-size", "40", "--no-progress"]
    src = str(Path(audet.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "audet.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    progress = out / "talk.csv.progress.json"
    deadline = time.time() + 120
    import json

    try:
        while time.time() < deadline:
            if progress.is_file():
                try:
                    if json.loads(progress.read_text())["rows"] >= 8:
                        break
                except (json.JSONDecodeError, KeyError):
                    pass
            if proc.poll() is not None:
                pytest.fail(f"finished before it could be killed: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "talk.csv").exists() and (out / "talk.csv.part").exists()
    assert main(args) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "talk.csv"), ref)


def test_table_writer_drops_unrecorded_rows_and_restarts_on_changed_input(tmp_path):
    sig = {"input": "a"}
    rows = pd.DataFrame({"frame": [0, 1], "v": [0.5, 0.25]})
    w = TableWriter(tmp_path, "t", sig)
    assert w.begin() is None
    w.append(rows, {"start": 2})
    with open(w.part, "a") as f:
        f.write("2,0.125\n")  # written, never recorded
    w2 = TableWriter(tmp_path, "t", sig)
    assert w2.begin() == {"start": 2}
    w2.append(pd.DataFrame({"frame": [2], "v": [1.0]}), {"start": 3})
    assert w2.finish() == tmp_path / "t.csv"
    assert pd.read_csv(tmp_path / "t.csv")["frame"].tolist() == [0, 1, 2]
    assert w2.done
    w3 = TableWriter(tmp_path, "t", sig)
    w3.begin()
    w3.append(rows, {"start": 2})
    assert TableWriter(tmp_path, "t", {"input": "b"}).begin() is None  # another input: a fresh start


class ScheduleFaces:
    """A fast stand-in detector + landmarker: boxes from the video's schedule and the astronaut's
    landmarks (found once by dlib on the face patch) moved with them."""

    def __init__(self, schedule):
        from inference_helpers import face_patch

        from audet.inference.faces import DlibLandmarker, MTCNNDetector

        patch = face_patch()
        canvas = np.full((200, 200, 3), 95, np.uint8)
        canvas[40:160, 50:145] = patch
        box = MTCNNDetector().detect(canvas)[0].box
        self.rel_box = np.asarray(box) - [50, 40, 50, 40]
        self.rel_lm = DlibLandmarker().landmarks(canvas, [box])[0] - [50, 40]
        self.rel_lm_m = self.rel_lm.copy()
        self.rel_lm_m[:, 0] = patch.shape[1] - 1 - self.rel_lm_m[:, 0]
        self.schedule, self.t = schedule, 0

    def detect(self, image):
        from audet.inference.faces import DetectedFace

        t = int(image[0, 0, 0])  # the frame number is written into the top-left pixel
        return [DetectedFace(tuple(self.rel_box + [x, y, x, y]), 0.99 - 0.01 * m) for x, y, m in self.schedule(t)]

    def landmarks(self, image, boxes):
        t = int(image[0, 0, 0])
        return [(self.rel_lm_m if m else self.rel_lm) + [x, y] for x, y, m in self.schedule(t)]


@pytest.mark.parametrize("clip", [None, {"offsets": [-3, 0, 3], "targets": "centre"}])
def test_resume_from_any_chunk_and_again_inside_the_warm_up(clip, tmp_path):
    from inference_helpers import enter_leave_schedule, scene

    from audet.inference.media import Frame

    ck = make_checkpoint(tmp_path / "m.safetensors", clip=clip)
    faces = ScheduleFaces(enter_leave_schedule)
    det = audet.Detector(checkpoint=ck, face_detector=faces, landmarker=faces, batch_size=3)
    frames = []
    for t in range(44):
        img = scene(t, enter_leave_schedule(t))
        img[0, 0, 0] = t
        frames.append(Frame(t, t / 25, img))

    def rows(chunks):
        return pd.concat([c.rows for c in chunks], ignore_index=True)

    def resumed(r):
        return list(det.iter_chunks(frames[r["start"]:], tracker_state=r["tracker"], skip_before=r["skip_before"]))

    chunks = list(det.iter_chunks(frames))
    full = rows(chunks)
    assert full["face_id"].nunique() == 3 and len(chunks) > 5
    for k, c in enumerate(chunks[:-1]):
        before = chunks[: k + 1]
        again = resumed(c.resume)
        pd.testing.assert_frame_equal(rows(before + again), full)
        # interrupted again right after the first chunk of the resumed run (often inside its warm-up)
        twice = resumed(again[0].resume)
        pd.testing.assert_frame_equal(rows(before + again[:1] + twice), full)
