"""audet.data.images.read_image on a real photo (scikit-image's astronaut, public domain).

scikit-image supplies the photo and Pillow writes the EXIF-tagged JPEG (both are test
dependencies, see docs/dependencies.md); decoding itself is OpenCV's.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from audet.data.images import ImageReadError, read_image


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 512 x 384 RGB crop of the astronaut photo (not square, so a rotation changes the shape)."""
    return np.ascontiguousarray(skdata.astronaut()[:, 64:448])


def test_png_round_trip_is_exact_and_rgb(photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.dtype == np.uint8 and got.shape == (512, 384, 3)
    np.testing.assert_array_equal(got, photo)  # RGB order (OpenCV's BGR is converted)


def test_jpeg_exif_orientation_is_applied(photo, tmp_path):
    # EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to be displayed
    stored = np.ascontiguousarray(np.rot90(photo, k=1))  # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "side.jpg", quality=95, exif=exif.tobytes())
    got = read_image(tmp_path / "side.jpg")
    assert got.shape == photo.shape
    err = np.abs(got.astype(np.float64) - photo).mean()
    assert err < 4.0, f"mean abs error {err:.1f} grey levels: orientation not applied"


def test_greyscale_is_expanded_and_bad_files_name_the_path(photo, tmp_path):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    Image.fromarray(grey).save(tmp_path / "g.png")
    got = read_image(tmp_path / "g.png")
    assert got.shape == (512, 384, 3)
    np.testing.assert_array_equal(got[..., 0], grey)
    np.testing.assert_array_equal(got[..., 2], grey)
    with pytest.raises(ImageReadError, match="not found.*nope.jpg"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ImageReadError, match="cannot decode.*bad.jpg"):
        read_image(tmp_path / "bad.jpg")
