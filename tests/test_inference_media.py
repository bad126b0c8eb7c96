"""Bad input for `audet predict` / audet.Detector (issue 11, item 5): each case gets a clear message,
a batch goes on past it and ends with a summary and exit code 1, and nothing written is lost."""
import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inference_helpers import astronaut, make_checkpoint, make_variable_rate, use_blob_faces, write_video

import audet
from audet.cli import main
from audet.faces import DlibLandmarker
from audet.inference.media import MediaError, VideoSource, expand_inputs, read_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """The astronaut in every awkward encoding, plus broken files."""
    d = tmp_path_factory.mktemp("photos")
    a = astronaut()
    Image.fromarray(a).convert("L").save(d / "grey.png")
    rgba = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    cv2.imwrite(str(d / "grey16.png"), cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    cv2.imwrite(str(d / "rgb16.png"), a[..., ::-1].astype(np.uint16) * 257)
    Image.fromarray(a).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the pixels are stored turned left
    Image.fromarray(np.ascontiguousarray(np.rot90(a))).save(d / "exif_rotated.jpg", exif=exif, quality=95)
    full = (d / "cmyk.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (d / "notes.jpg").write_text("this is not a picture\n")
    return d


def test_awkward_encodings_decode_to_upright_rgb(photo_dir):
    a = astronaut().astype(np.float64)
    grey = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float64)
    for name, ref, tol in [("grey.png", grey, 1.0), ("grey16.png", grey, 1.0), ("rgb16.png", a, 0.5),
                           ("cmyk.jpg", a, 6.0), ("exif_rotated.jpg", a, 6.0), ("alpha.png", a, 1.0)]:
        img = read_image(photo_dir / name)
        assert img.dtype == np.uint8 and img.shape == (512, 512, 3), name
        got = img.astype(np.float64) if ref.ndim == 3 else img[..., 0].astype(np.float64)
        if name == "alpha.png":
            assert (img[:40, :40] == 255).all()  # transparent pixels composited over white
            got, ref = got[40:], ref[40:]
        assert np.abs(got - ref).mean() < tol, f"{name}: mean |diff| {np.abs(got - ref).mean():.2f}"


@pytest.mark.parametrize("name, message", [
    ("truncated.jpg", "truncated or corrupt image data"),
    ("notes.jpg", "not an image"),
    ("missing.png", "file not found"),
])
def test_broken_images_raise_a_clear_error(photo_dir, name, message):
    with pytest.raises(MediaError, match=message) as exc:
        read_image(photo_dir / name)
    assert name in str(exc.value)


def test_huge_image_is_refused_with_the_option_to_raise_the_limit(photo_dir):
    with pytest.raises(MediaError, match=r"512x512 .*above the limit.*--max-pixels"):
        read_image(photo_dir / "grey.png", max_pixels=100_000)
    assert read_image(photo_dir / "grey.png", max_pixels=None).shape == (512, 512, 3)


def test_large_image_is_detected_downscaled_and_landmarked_at_full_size(ckpt):
    big = cv2.resize(astronaut(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    det = audet.Detector(checkpoint=ckpt, detect_max_side=512)
    rows = det.detect_image(big)
    assert len(rows) == 1 and rows["success"].iloc[0] == 1
    assert 181 * 4 - 40 < rows["box_x1"].iloc[0] < 181 * 4 + 40  # boxes in full-size pixels


def test_batch_of_photos_continues_past_bad_files_and_fails_at_the_end(ckpt, photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(photo_dir), str(photo_dir / "absent.jpg"), "--checkpoint", str(ckpt), "--out", str(out),
               "--min-face-size", "40", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "truncated.jpg: truncated or corrupt" in err and "notes.jpg: not an image" in err
    assert "absent.jpg: file not found" in err
    table = pd.read_csv(out / f"{photo_dir.name}.csv")
    # every readable encoding gave the astronaut's face, upright (EXIF applied)
    names = sorted(p.split("/")[-1] for p in table["file"])
    assert names == sorted(["alpha.png", "cmyk.jpg", "exif_rotated.jpg", "grey.png", "grey16.png", "rgb16.png"])
    assert (table["face_id"] == 0).all() and (table["success"] == 1).all()
    rot = table[table["file"].str.endswith("exif_rotated.jpg")].iloc[0]
    assert abs(rot["box_x1"] - 181) < 15 and abs(rot["box_y1"] - 62) < 15


def test_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), astronaut())
    assert main(["predict", str(img), "--checkpoint", str(junk), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not an audet checkpoint" in err and "audet train" in err
    pt = tmp_path / "weights.pth"
    pt.write_bytes(b"x")
    assert main(["predict", str(img), "--checkpoint", str(pt), "--out", str(tmp_path / "o")]) == 2
    assert "pickled files are never loaded" in capsys.readouterr().err
    assert main(["predict", str(img), "--checkpoint", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_bad_videos(tmp_path, ckpt, capsys, monkeypatch):
    use_blob_faces(monkeypatch)  # the faces of the synthetic videos without MTCNN's cost
    good = write_video(tmp_path / "good.mp4", n=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # the index (moov) is lost
    with pytest.raises(MediaError, match="cannot open as a video"):
        VideoSource(cut)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        VideoSource(tmp_path / "empty.mp4")
    with pytest.raises(MediaError, match="camera 57 cannot be opened"):
        VideoSource(57)
    # an AVI cut short keeps its header's frame count: frames are read until the cut
    avi = write_video(tmp_path / "long.avi", n=20, fourcc="MJPG")
    data = avi.read_bytes()
    short = tmp_path / "short.avi"
    short.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    rc = main(["predict", str(short), str(cut), str(good), "--checkpoint", str(ckpt), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "short.avi: video ended after" in err and "of 20 frames" in err
    assert "cut.mp4: cannot open as a video" in err
    kept = pd.read_csv(out / "short.csv")
    assert 0 < kept["frame"].max() < 19  # the rows of the frames that could be read are kept
    assert len(pd.read_csv(out / "good.csv")) > 0  # the batch went on
    assert not (out / "cut.csv").exists()


def test_video_without_faces_says_so(tmp_path, ckpt, capsys, monkeypatch):
    use_blob_faces(monkeypatch)
    empty = write_video(tmp_path / "wall.mp4", n=6, schedule=lambda t: [])
    assert main(["predict", str(empty), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "wall: no face found in any of the frames" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "o" / "wall.csv")
    assert len(table) == 0 and "AU01_c" in table.columns


def test_variable_frame_rate_uses_the_container_times(tmp_path, ckpt, capsys, monkeypatch):
    use_blob_faces(monkeypatch)
    cfr = write_video(tmp_path / "cfr.mp4", n=10, schedule=lambda t: [(10 + t, 30, False)])
    vfr = make_variable_rate(cfr, tmp_path / "vfr.mp4", [256] * 5 + [768] * 5)  # 20 ms then 60 ms frames
    src = VideoSource(vfr)
    ts = [f.timestamp for f in src.frames()]
    np.testing.assert_allclose(ts, [0, .02, .04, .06, .08, .10, .16, .22, .28, .34], atol=1e-6)
    assert src.variable_rate and not src.truncated
    assert main(["predict", str(vfr), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "variable frame rate" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "o" / "vfr.csv")
    np.testing.assert_allclose(table["timestamp"], np.asarray(ts)[table["frame"]], atol=1e-4)


def test_frames_where_landmarks_or_detection_fail(ckpt):
    class FlakyLandmarks(DlibLandmarker):
        def landmarks(self, image, boxes):
            got = super().landmarks(image, boxes)
            return [None] + got[1:]  # the first (leftmost) face fails

    det = audet.Detector(checkpoint=ckpt, landmarker=FlakyLandmarks())
    a = astronaut()
    rows = det.detect_image(np.concatenate([a, a], axis=1))
    assert list(rows["success"]) == [0, 1]
    assert rows.loc[0, ["AU01_p", "x_0"]].isna().all() and pd.isna(rows.loc[0, "AU01_c"])
    assert np.isfinite(rows.loc[0, "box_x1"])  # the face is still reported

    class Crashes:
        def __init__(self):
            self.inner, self.n = audet.faces.MTCNNFaceDetector(), 0

        def detect(self, image):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("detector exploded")
            return self.inner.detect(image)

    from audet.inference.media import Frame

    det = audet.Detector(checkpoint=ckpt, face_detector=Crashes(), detect_every=1)  # the detector on every frame
    frames = [Frame(i, i / 25, a) for i in range(3)]
    chunks = list(det.iter_chunks(frames))
    rows = pd.concat([c.rows for c in chunks])
    assert sorted(rows["frame"]) == [0, 2]
    assert any("frame 1: face analysis failed (RuntimeError: detector exploded)" in p for c in chunks for p in c.problems)


def test_parquet_needs_pyarrow_or_writes_parquet(tmp_path, ckpt, capsys):
    from audet.inference.writers import parquet_available

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), astronaut())
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--format", "parquet",
               "--quiet"])
    if parquet_available():
        assert rc == 0 and len(pd.read_parquet(tmp_path / "o" / "a.parquet")) == 1
    else:
        assert rc == 2
        assert "Parquet output needs pyarrow: pip install pyarrow" in capsys.readouterr().err


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for p in ["d/b.jpg", "d/sub/a.png", "d/clip.mp4", "d/readme.txt", "x.weird"]:
        (tmp_path / p).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    items, problems = expand_inputs([tmp_path / "d", tmp_path / "x.weird", "3", tmp_path / "empty", tmp_path / "gone.jpg"])
    assert [(i.kind, i.name) for i in items] == [("images", "d"), ("video", "clip"), ("images", "x"), ("camera", "camera3")]
    assert items[0].source == [str(tmp_path / "d" / "b.jpg"), str(tmp_path / "d" / "sub" / "a.png")]
    assert len(problems) == 2 and "no image or video files" in problems[0] and "gone.jpg: file not found" in problems[1]
