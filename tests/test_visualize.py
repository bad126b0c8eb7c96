"""`audet visualize`: attention overlays from a checkpoint, and clear errors for bad images."""
import numpy as np
import pytest
import torch

from audet.cli import main
from audet.models.checkpoint import save_checkpoint
from audet.models import create_model
from audet.viz import upsample_map

TINY = dict(img_size=176, embed_dim=8, num_heads=[1, 1, 1], depths=[1, 1, 2], causal_dim=8, drop_path_rate=0.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ac2d", num_aus=2, aus=[1, 12], **TINY).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture()
def face(tmp_path):
    import cv2

    img = np.full((200, 200, 3), 128, np.uint8)
    cv2.circle(img, (100, 100), 60, (90, 120, 200), -1)
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), img)
    return path


def test_writes_a_png_grid(checkpoint, face, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["visualize", "-c", str(checkpoint), str(face), str(face), "--out", str(out), "--channels", "2"]) == 0
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    # 2 images x (1 average + 2 channel rows) = 6 rows, 2 AUs = 2 columns: taller than wide
    assert img.shape[0] > 2 * img.shape[1]
    assert "wrote" in capsys.readouterr().out


def test_corrupt_or_small_image_is_a_clear_error(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["visualize", "-c", str(checkpoint), str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "bad.jpg: not a readable image" in capsys.readouterr().err
    import cv2

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 120, 3), np.uint8))
    assert main(["visualize", "-c", str(checkpoint), str(small), "--out", str(tmp_path / "x.png")]) == 2
    assert "120x100, smaller than the model's 176x176" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_upsample_map_keeps_the_peak_where_it_was():
    att = np.zeros((22, 22), np.float32)
    att[5, 17] = 1.0
    up = upsample_map(att, 176)
    y, x = np.unravel_index(np.argmax(up), up.shape)
    assert up.min() == 0.0 and up.max() == 1.0
    assert abs(y / 8 - 5) <= 1 and abs(x / 8 - 17) <= 1


def test_load_aligned_applies_the_checkpoints_resize_like_the_eval_transform(face):
    """A model trained with preprocess resize=120, crop 104 must be shown the same pixels as
    evaluation gives it: load_aligned equals EvalTransform(resize=120, crop=104) undone."""
    import cv2

    from audet.viz import load_aligned
    from audet.data.transforms import EvalTransform

    got = load_aligned(str(face), 104, 120)
    assert got.shape == (104, 104, 3) and got.dtype == np.uint8
    rgb = cv2.cvtColor(cv2.imread(str(face)), cv2.COLOR_BGR2RGB)
    x, _ = EvalTransform(crop=104, resize=120)(rgb, np.zeros((49, 2), np.float32))
    ref = ((x.numpy() * 0.5 + 0.5) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    # without the resize the same crop size shows a different (larger-scale) window
    assert np.abs(load_aligned(str(face), 104).astype(int) - ref.astype(int)).max() > 20


def test_an_unaligned_photo_is_aligned_by_its_landmarks_and_says_so(checkpoint, tmp_path, capsys):
    """A 512x512 photo is not centre-cropped silently: its face is aligned as `audet predict` does."""
    import cv2
    from skimage.data import astronaut

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    assert main(["visualize", str(checkpoint), str(photo), "--out", str(tmp_path / "att.png")]) == 0
    out = capsys.readouterr().out
    assert "astronaut.png: not an aligned face; aligned by its landmarks" in out and (tmp_path / "att.png").is_file()
    # a photo without a face is refused in one line, nothing written
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((300, 400, 3), 90, np.uint8))
    assert main(["visualize", str(checkpoint), str(wall), "--out", str(tmp_path / "w.png")]) == 2
    assert "no face was found" in capsys.readouterr().err and not (tmp_path / "w.png").exists()
