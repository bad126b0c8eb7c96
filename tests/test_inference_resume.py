"""Long videos: an interrupted `audet predict` (Ctrl-C, or a kill at any moment) resumes where it
stopped, with no row lost or duplicated and the same face ids, for frame and clip models."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from inference_helpers import BLOB_CLI, make_checkpoint, use_blob_faces, write_video

import audet
from audet.cli import main
from audet.inference.media import VideoSource
from audet.inference.writers import TableWriter


N = 16  # frames of the test video


def short_schedule(t: int) -> list[tuple[int, int, bool]]:
    """Face A all along; face B in frames 3-6 and again in 10-13 (a new id with max_age=2)."""
    faces = [(10 + t, 30, False)]
    if 3 <= t <= 6 or 10 <= t <= 13:
        faces.append((205, 40, True))
    return faces


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "talk.mp4", n=N, schedule=short_schedule)


@pytest.fixture(scope="module", params=["frames", "clip"])
def setup(request, tmp_path_factory, video):
    """(checkpoint, reference table of an uninterrupted run); faces found by BlobFaces."""
    d = tmp_path_factory.mktemp(request.param)
    clip = {"offsets": [-3, 0, 3], "targets": "centre"} if request.param == "clip" else None
    ck = make_checkpoint(d / "m.safetensors", clip=clip)
    with pytest.MonkeyPatch.context() as mp:
        use_blob_faces(mp)
        assert main(["predict", str(video), "--checkpoint", str(ck), "--out", str(d / "ref"), "--batch-size", "4",
                     "--quiet"]) == 0
    ref = pd.read_csv(d / "ref" / "talk.csv")
    assert sorted(ref["frame"]) == sorted(t for t in range(N) for _ in short_schedule(t))
    return ck, ref


def interrupt_at(monkeypatch, index: int):
    """Make videos raise KeyboardInterrupt (Ctrl+C) when frame ``index`` is read; returns the real
    ``VideoSource.frames`` to put back."""
    real = VideoSource.frames

    def interrupted(self, start=0):
        for fr in real(self, start):
            if fr.index == index:
                raise KeyboardInterrupt
            yield fr

    monkeypatch.setattr(VideoSource, "frames", interrupted)
    return real


def test_ctrl_c_then_a_half_written_batch_then_resume(setup, video, tmp_path, monkeypatch, capsys):
    ck, ref = setup
    use_blob_faces(monkeypatch)
    out = tmp_path / "out"
    real = interrupt_at(monkeypatch, 11)
    args = ["predict", str(video), "--checkpoint", str(ck), "--out", str(out), "--batch-size", "4", "--quiet"]
    assert main(args) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    part = out / "talk.csv.part"
    kept = pd.read_csv(part)
    assert 0 < kept["frame"].max() < 11 and not (out / "talk.csv").exists()
    # a kill between writing rows and recording them: the rows must not appear twice
    with open(part, "a") as f:
        f.write(",".join(["x"] * len(ref.columns)) + "\n" + "half a ro")
    monkeypatch.setattr(VideoSource, "frames", real)
    assert main(args) == 0
    assert "resuming at frame" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out / "talk.csv"), ref)
    assert not part.exists() and not (out / "talk.csv.progress.json").exists()


@pytest.mark.slow
def test_kill_mid_video_and_resume(setup, video, tmp_path, monkeypatch):
    ck, ref = setup
    out = tmp_path / "out"
    args = ["predict", str(video), "--checkpoint", str(ck), "--out", str(out), "--batch-size", "4", "--quiet"]
    src = str(Path(audet.__file__).resolve().parents[1])
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, here, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
           "AUDET_TEST_FACE_DELAY": "0.15"}  # BlobFaces, slowed down so that the kill lands mid-video
    proc = subprocess.Popen([sys.executable, "-c", BLOB_CLI, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    progress = out / "talk.csv.progress.json"
    deadline = time.time() + 120
    import json

    try:
        while time.time() < deadline:
            if progress.is_file():
                try:
                    if json.loads(progress.read_text())["rows"] >= 4:
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
    use_blob_faces(monkeypatch)
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


@pytest.mark.parametrize("clip", [None, {"offsets": [-3, 0, 3], "targets": "centre"}])
def test_resume_from_any_chunk_and_again_inside_the_warm_up(clip, tmp_path):
    """Resumed at the first, a middle and the last chunk boundary, and each time interrupted again
    right after the first chunk of the resumed run (often inside its warm-up)."""
    from inference_helpers import BlobFaces, scene

    from audet.inference.media import Frame

    ck = make_checkpoint(tmp_path / "m.safetensors", clip=clip)
    faces = BlobFaces()
    det = audet.Detector(checkpoint=ck, face_detector=faces, landmarker=faces, batch_size=3, max_age=2)
    frames = [Frame(t, t / 25, scene(t, short_schedule(t))) for t in range(16)]

    def rows(chunks):
        return pd.concat([c.rows for c in chunks], ignore_index=True)

    def resumed(r):
        return list(det.iter_chunks(frames[r["start"]:], tracker_state=r["tracker"], skip_before=r["skip_before"]))

    chunks = list(det.iter_chunks(frames))
    full = rows(chunks)
    assert full["face_id"].nunique() == 3 and len(chunks) > 4
    assert sorted(full["frame"]) == sorted(t for t in range(16) for _ in short_schedule(t))
    for k in sorted({0, (len(chunks) - 1) // 2, len(chunks) - 2}):
        before = chunks[: k + 1]
        again = resumed(chunks[k].resume)
        pd.testing.assert_frame_equal(rows(before + again), full)
        if clip:  # the first chunk of the resumed run ends inside its warm-up: it resumes where that run did
            assert again[0].resume["start"] == chunks[k].resume["start"]
        twice = resumed(again[0].resume)
        pd.testing.assert_frame_equal(rows(before + again[:1] + twice), full)


def test_parquet_output_after_an_interrupt_equals_the_csv_run(setup, video, tmp_path, monkeypatch, capsys):
    ck, ref = setup
    use_blob_faces(monkeypatch)
    out = tmp_path / "pq"
    real = interrupt_at(monkeypatch, 9)
    args = ["predict", str(video), "--checkpoint", str(ck), "--out", str(out), "--batch-size", "4", "--quiet",
            "--format", "parquet"]
    assert main(args) == 130
    assert not (out / "talk.parquet").exists()  # the part file is CSV until the input is done
    monkeypatch.setattr(VideoSource, "frames", real)
    assert main(args) == 0
    got = pd.read_parquet(out / "talk.parquet")
    assert list(got.columns) == list(ref.columns)
    assert str(got["frame"].dtype) == "Int64" and str(got["AU01_c"].dtype) == "Int8"
    pd.testing.assert_frame_equal(got.astype("float64", errors="ignore").reset_index(drop=True),
                                  ref.astype("float64", errors="ignore"), check_dtype=False)
    assert not list(out.glob("talk.csv*")) and not (out / "talk.parquet.progress.json").exists()
