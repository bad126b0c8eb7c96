"""audet.data.transforms: landmarks follow the pixels through crop and flip, sub-centres follow
the flip, colour jitter has torchvision's semantics, eval centre crop, normalisation, and every
frame of a clip gets the same draw."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from audet.data.toy import toy_landmarks
from audet.data.transforms import EvalTransform, TrainTransform
from audet.facs import MIRROR_49, au_subcenters

SIZE, CROP = 200, 176
NONE = {"brightness": 1.0, "contrast": 1.0}  # no colour change


def _face_landmarks(seed: int = 0) -> np.ndarray:
    """49 distinct integer points of a slightly asymmetric face (pixels under them are exact)."""
    rng = np.random.default_rng(seed)
    lm = np.floor(toy_landmarks()) + rng.integers(-2, 3, (49, 2))
    assert len({tuple(p) for p in lm.tolist()}) == 49
    return lm.astype(np.float32)


def _marked_image(lm: np.ndarray) -> np.ndarray:
    """Grey 200x200 image with a distinct colour at every landmark pixel: (10 + 4i, 250 - 4i, 77)."""
    img = np.full((SIZE, SIZE, 3), 128, np.uint8)
    for i, (x, y) in enumerate(lm.astype(int)):
        img[y, x] = (10 + 4 * i, 250 - 4 * i, 77)
    return img


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """Undo ToTensor + Normalize(0.5, 0.5): (..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8."""
    arr = ((x.numpy() * 0.5 + 0.5) * 255.0).round().astype(np.uint8)
    return np.moveaxis(arr, -3, -1)


def _pixel(img: np.ndarray, xy) -> tuple:
    x, y = np.asarray(xy).round().astype(int)
    return tuple(int(v) for v in img[y, x])


# ------------------------------------------------------------------ crop


@pytest.mark.parametrize("seed", range(4))
def test_random_crop_shifts_landmarks_exactly(seed):
    lm = _face_landmarks(seed)
    img = _marked_image(lm)
    t = TrainTransform(flip_p=0.0, brightness=0.0, contrast=0.0)
    p = t.draw(SIZE, SIZE, np.random.default_rng(seed))
    assert 0 <= p["top"] <= SIZE - CROP and 0 <= p["left"] <= SIZE - CROP and not p["flip"]
    x, out_lm = t.apply(img[None], lm[None], p)
    assert x.shape == (1, 3, CROP, CROP) and x.dtype == torch.float32
    np.testing.assert_array_equal(out_lm[0], lm - np.array([p["left"], p["top"]], np.float32))
    out = _to_uint8(x[0])
    np.testing.assert_array_equal(out, img[p["top"]:p["top"] + CROP, p["left"]:p["left"] + CROP])
    for i in range(49):  # the mark of landmark i is still under landmark i
        assert _pixel(out, out_lm[0, i]) == (10 + 4 * i, 250 - 4 * i, 77), i


def test_crop_offsets_cover_the_whole_range():
    t = TrainTransform()
    rng = np.random.default_rng(0)
    draws = [t.draw(SIZE, SIZE, rng) for _ in range(2000)]
    tops = {d["top"] for d in draws}
    assert tops == set(range(SIZE - CROP + 1))  # 0..24 inclusive, like random.randint(0, 24)
    assert {d["left"] for d in draws} == tops
    flips = np.mean([d["flip"] for d in draws])
    assert 0.45 < flips < 0.55
    b = np.array([d["brightness"] for d in draws])
    c = np.array([d["contrast"] for d in draws])
    assert 0.5 <= b.min() < 0.52 and 1.48 < b.max() <= 1.5  # ColorJitter(0.5): U[0.5, 1.5]
    assert 0.5 <= c.min() < 0.52 and 1.48 < c.max() <= 1.5


# ------------------------------------------------------------------ flip


def _apply(t, img, lm, **p):
    x, out_lm = t.apply(img[None], lm[None], {"top": 0, "left": 0, "flip": False, **NONE, **p})
    return _to_uint8(x[0]), out_lm[0]


@pytest.mark.parametrize("top, left", [(0, 0), (12, 12), (24, 3)])
def test_flip_pixel_under_landmark_i_is_the_mirrored_landmarks_pixel(top, left):
    lm = _face_landmarks(1)
    img = _marked_image(lm)
    t = TrainTransform()
    plain, lm0 = _apply(t, img, lm, top=top, left=left)
    flipped, lm1 = _apply(t, img, lm, top=top, left=left, flip=True)
    np.testing.assert_array_equal(flipped, plain[:, ::-1])  # a left-right mirror of the crop
    for i in range(49):
        j = int(MIRROR_49[i])
        assert _pixel(flipped, lm1[i]) == _pixel(plain, lm0[j]) == (10 + 4 * j, 250 - 4 * j, 77), i
        np.testing.assert_array_equal(lm1[i], [CROP - 1 - lm0[j, 0], lm0[j, 1]])
    # left stays left: point 22 (inner corner of the image-left eye) is left of 25 after the flip
    assert lm1[22, 0] < lm1[25, 0] and lm0[22, 0] < lm0[25, 0]


def test_flip_twice_is_identity():
    lm = _face_landmarks(2)
    img = _marked_image(lm)
    t = TrainTransform(crop=None)
    once, lm1 = _apply(t, img, lm, flip=True)
    assert not np.array_equal(once, img)
    twice, lm2 = _apply(t, once, lm1, flip=True)
    np.testing.assert_array_equal(twice, img)
    np.testing.assert_array_equal(lm2, lm)


MIDLINE_AUS = (23, 24, 25)  # sub-centres on midline points 34 and 40 (upper/lower lip centre)
PAIRED_AUS = (1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 26)


def test_subcenters_follow_the_flip():
    lm = _face_landmarks(3)
    aus = PAIRED_AUS + MIDLINE_AUS
    t = TrainTransform()
    _, lm0 = _apply(t, _marked_image(lm), lm, top=5, left=17)
    _, lm1 = _apply(t, _marked_image(lm), lm, top=5, left=17, flip=True)
    s0, s1 = au_subcenters(lm0, aus), au_subcenters(lm1, aus)

    def mirror(pt):
        return np.array([CROP - 1 - pt[0], pt[1]])

    for a, au in enumerate(aus):
        if au in MIDLINE_AUS:  # each sub-centre mirrors onto itself
            np.testing.assert_allclose(s1[a, 0], mirror(s0[a, 0]), atol=1e-4)
            np.testing.assert_allclose(s1[a, 1], mirror(s0[a, 1]), atol=1e-4)
        else:  # sub-centres 1 and 2 swap sides
            np.testing.assert_allclose(s1[a, 0], mirror(s0[a, 1]), atol=1e-4, err_msg=f"AU{au}")
            np.testing.assert_allclose(s1[a, 1], mirror(s0[a, 0]), atol=1e-4, err_msg=f"AU{au}")
            assert not np.allclose(s1[a, 0], mirror(s0[a, 0]), atol=0.5)  # the swap is not a no-op here


# ------------------------------------------------------------------ colour jitter

# a 2x2 RGB image: (200, 100, 50) (10, 20, 30) / white / black
IMG2 = np.array([[[200, 100, 50], [10, 20, 30]], [[255, 255, 255], [0, 0, 0]]], np.uint8)


def _jitter(b=1.0, c=1.0) -> np.ndarray:
    t = TrainTransform(crop=None)
    x, _ = t.apply(IMG2[None], np.zeros((1, 49, 2), np.float32),
                   {"top": 0, "left": 0, "flip": False, "brightness": b, "contrast": c})
    return (x[0].numpy() * 0.5 + 0.5).transpose(1, 2, 0)  # back to [0, 1], (H, W, 3)


def _tv(b=1.0, c=1.0) -> np.ndarray:
    x = torch.from_numpy(IMG2.transpose(2, 0, 1).astype(np.float32) / 255.0)
    x = TF.adjust_contrast(TF.adjust_brightness(x, b), c)
    return x.numpy().transpose(1, 2, 0)


def test_brightness_scales_and_clips():
    got = _jitter(b=1.5)
    # by hand: x * 1.5, clipped at 255
    want = np.array([[[255, 150, 75], [15, 30, 45]], [[255, 255, 255], [0, 0, 0]]]) / 255.0
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(_jitter(b=0.5), IMG2 / 255.0 * 0.5, atol=1e-6)
    np.testing.assert_allclose(got, _tv(b=1.5), atol=1e-6)


def test_contrast_blends_with_the_grey_mean():
    # grey (ITU-R 601-2): 0.299 R + 0.587 G + 0.114 B -> 124.2, 18.15, 255, 0; mean 99.3375
    m = 99.3375 / 255.0
    want = np.clip(m + 0.5 * (IMG2 / 255.0 - m), 0, 1)
    assert want[1, 0, 0] == pytest.approx((99.3375 + 0.5 * (255 - 99.3375)) / 255.0)
    got = _jitter(c=0.5)
    np.testing.assert_allclose(got, want, atol=2e-4)  # 2e-4: torchvision uses 0.2989 for R
    np.testing.assert_allclose(got, _tv(c=0.5), atol=2e-6)
    hi = _jitter(c=1.5)
    np.testing.assert_allclose(hi, np.clip(m + 1.5 * (IMG2 / 255.0 - m), 0, 1), atol=2e-4)
    assert hi[1, 0, 0] == 1.0 and hi[1, 1, 0] == 0.0  # clipped


def test_brightness_then_contrast_order():
    got = _jitter(b=1.4, c=0.6)
    np.testing.assert_allclose(got, _tv(b=1.4, c=0.6), atol=2e-6)
    x = torch.from_numpy(IMG2.transpose(2, 0, 1).astype(np.float32) / 255.0)
    other = TF.adjust_brightness(TF.adjust_contrast(x, 0.6), 1.4).numpy().transpose(1, 2, 0)
    assert np.abs(got - other).max() > 0.01  # the order matters on this image


# ------------------------------------------------------------------ eval, normalisation


def test_eval_centre_crop_offset_12():
    lm = _face_landmarks(4)
    img = _marked_image(lm)
    img[12, 12] = (1, 2, 3)
    img[12 + CROP - 1, 12 + CROP - 1] = (4, 5, 6)
    x, out_lm = EvalTransform()(img[None], lm[None])
    assert x.shape == (1, 3, CROP, CROP) and x.dtype == torch.float32
    out = _to_uint8(x[0])
    assert tuple(out[0, 0]) == (1, 2, 3) and tuple(out[-1, -1]) == (4, 5, 6)
    np.testing.assert_array_equal(out_lm[0], lm - 12)
    np.testing.assert_array_equal(out, img[12:12 + CROP, 12:12 + CROP])
    x2, lm2 = EvalTransform()(img[None], lm[None])  # deterministic
    assert torch.equal(x, x2) and np.array_equal(out_lm, lm2)


def test_normalisation_to_minus_one_one():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, 0, 0] = 255
    img[0, 1, 1] = (51, 102, 204)
    x, _ = EvalTransform(crop=None)(img, np.zeros((1, 49, 2), np.float32))
    assert x.shape == (1, 3, 4, 4)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(x[0, :, 0, 0], torch.ones(3))
    torch.testing.assert_close(x[0, :, 1, 1], torch.tensor([51, 102, 204]) / 255.0 * 2 - 1)
    # a model's own mean/std (e.g. ImageNet) are honoured
    t = EvalTransform.from_preprocess({"crop_size": 2, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
    y, _ = t(img, np.zeros((1, 49, 2), np.float32))
    assert y.shape == (1, 3, 2, 2)
    torch.testing.assert_close(y[0, :, 0, 0], (torch.tensor([51, 102, 204]) / 255.0 - torch.tensor([0.485, 0.456, 0.406]))
                               / torch.tensor([0.229, 0.224, 0.225]))


# ------------------------------------------------------------------ clips


def test_clip_frames_share_crop_flip_and_jitter():
    rng = np.random.default_rng(5)
    lms = np.stack([_face_landmarks(s) for s in (5, 6, 7)])
    frames = np.stack([_marked_image(m) for m in lms])
    frames = (frames.astype(int) + rng.integers(-40, 40, frames.shape)).clip(0, 255).astype(np.uint8)
    t = TrainTransform()
    for seed in range(20):  # find a draw with a flip and visible jitter
        torch.manual_seed(seed)
        p = t.draw(SIZE, SIZE)
        if p["flip"] and abs(p["brightness"] - 1) > 0.1 and abs(p["contrast"] - 1) > 0.1 and p["left"] > 0:
            break
    else:  # pragma: no cover
        pytest.fail("no suitable draw")
    torch.manual_seed(seed)
    x, out_lm = t(frames, lms)  # one draw for the whole clip
    assert x.shape == (3, 3, CROP, CROP) and out_lm.shape == (3, 49, 2)
    for k in range(3):  # ... identical to applying that draw to each frame on its own
        xk, lk = t.apply(frames[k:k + 1], lms[k:k + 1], p)
        torch.testing.assert_close(x[k], xk[0], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out_lm[k], lk[0])
    # three copies of one frame stay three identical frames
    same = np.repeat(frames[:1], 3, axis=0)
    y, ly = t(same, np.repeat(lms[:1], 3, axis=0))
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2]) and np.array_equal(ly[0], ly[2])


def test_augmentation_is_seeded_by_torch():
    lm = _face_landmarks(0)[None]
    img = _marked_image(lm[0])[None]
    t = TrainTransform()
    torch.manual_seed(11)
    a = t(img, lm)
    torch.manual_seed(11)
    b = t(img, lm)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    outs = set()
    for s in range(6):
        torch.manual_seed(s)
        outs.add(float(t(img, lm)[0].sum()))
    assert len(outs) > 1


# ------------------------------------------------------------------ resize (opt-in)


def test_resize_keeps_landmarks_on_their_pixels():
    """A 4x4 block at each of three points of a 200 image becomes a 2x2 block at the scaled point
    after resize 100 (INTER_AREA averages exact 2x2 cells), and the landmarks land on it."""
    lm = np.zeros((49, 2), np.float32) + 100.5
    img = np.full((SIZE, SIZE, 3), 100, np.uint8)
    for i, (x, y) in enumerate([(40, 60), (120, 80), (160, 164)]):
        img[y:y + 4, x:x + 4] = (200, 10 + 50 * i, 30)
        lm[i] = (x + 1.5, y + 1.5)  # centre of the 4x4 block
    x, out = EvalTransform(crop=None, resize=100)(img, lm)
    assert x.shape == (3, 100, 100)
    pix = _to_uint8(x)
    for i, (bx, by) in enumerate([(40, 60), (120, 80), (160, 164)]):
        cx, cy = out[i]
        # block pixels bx..bx+3 become bx/2..bx/2+1, whose centre is bx/2 + 0.5
        assert (cx, cy) == (pytest.approx(bx / 2 + 0.5), pytest.approx(by / 2 + 0.5))
        # the centre of the 2x2 block sits between pixels: all four neighbours carry the colour
        for dx in (-0.5, 0.5):
            for dy in (-0.5, 0.5):
                assert _pixel(pix, (cx + dx, cy + dy)) == (200, 10 + 50 * i, 30)


def test_resize_then_random_crop_draws_inside_the_resized_image():
    t = TrainTransform(crop=104, resize=120, flip_p=0.0, brightness=0, contrast=0)
    lm = _face_landmarks(1)
    img = _marked_image(lm)
    for seed in range(20):
        x, out = t(img, lm, rng=np.random.default_rng(seed))
        assert x.shape == (3, 104, 104)
        p = t.draw(120, 120, np.random.default_rng(seed))
        np.testing.assert_allclose(out, (lm + 0.5) * 0.6 - 0.5 - [p["left"], p["top"]], atol=1e-5)
    with pytest.raises(ValueError, match="larger than resize"):
        TrainTransform(crop=176, resize=120)


# ------------------------------------------------------------------ a model's declared augmentation


def test_train_transform_reads_the_models_declared_augmentation():
    pre = {"crop_size": 4, "augment": {"brightness": 0.0, "contrast": 0.0, "flip_p": 0.25}}
    t = TrainTransform.from_preprocess(pre)
    assert (t.brightness, t.contrast, t.flip_p) == (0.0, 0.0, 0.25)
    # no colour change at all: every draw keeps brightness and contrast 1, pixels pass unchanged
    img = np.random.default_rng(0).integers(0, 256, (1, 4, 4, 3)).astype(np.uint8)
    for seed in range(5):
        p = t.draw(4, 4, rng=np.random.default_rng(seed))
        assert p["brightness"] == 1.0 and p["contrast"] == 1.0
    x, _ = t(img, np.zeros((1, 49, 2), np.float32), rng=np.random.default_rng(1))
    plain, _ = EvalTransform.from_preprocess(pre)(img, np.zeros((1, 49, 2), np.float32))
    assert torch.equal(x, plain) or torch.equal(x, torch.flip(plain, dims=[-1]))
    # an explicit argument overrides the declaration; without one the defaults (0.5) hold
    assert TrainTransform.from_preprocess(pre, brightness=0.5).brightness == 0.5
    assert TrainTransform.from_preprocess({"crop_size": 4}).brightness == 0.5
    with pytest.raises(ValueError, match="unknown key.*'hue'"):
        TrainTransform.from_preprocess({"crop_size": 4, "augment": {"hue": 0.1}})
