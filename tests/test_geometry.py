import math

import numpy as np
import pytest
import torch

from audet.facs import au_subcenters
from audet.geometry import (
    aar_attention_maps,
    ac2d_attention_maps,
    align_face,
    alignment_matrix,
    gaussian_au_maps,
    lsc_attention_maps,
    transform_points,
)

G1 = math.exp(-1 / 18)  # one cell away with sigma = 3 (AC2D Eq. 3)
G2 = math.exp(-2 / 18)  # one cell diagonally


def level_face():
    """49 points of a level face: left-eye mean (70, 90), right-eye mean (130, 90), nose tip p13
    (100, 125), mouth corners p31 (80, 150) and p37 (120, 150); the rest are arbitrary."""
    rng = np.random.default_rng(0)
    lm = rng.uniform(60, 160, size=(49, 2))
    offs = np.array([[-8, 1], [-4, -3], [0, -4], [4, -3], [8, 1], [0, 8]], float)
    offs -= offs.mean(axis=0)
    lm[19:25] = np.array([70, 90]) + offs
    lm[25:31] = np.array([130, 90]) + offs[::-1] * [-1, 1]
    lm[13] = (100, 125)
    lm[31] = (80, 150)
    lm[37] = (120, 150)
    return lm


def similarity(pts, angle_deg, scale, shift):
    a = math.radians(angle_deg)
    R = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ R.T + np.asarray(shift, float)


def eye_means(lm):
    return lm[..., 19:25, :].mean(axis=-2), lm[..., 25:31, :].mean(axis=-2)


def five_bbox(lm):
    le, re = eye_means(lm)
    five = np.stack([le, re, lm[13], lm[31], lm[37]])
    return five.min(axis=0), five.max(axis=0)


# ------------------------------------------------------------------ alignment


def test_alignment_matrix_level_face_hand_computed():
    # level eyes -> no rotation; box x 70..130, y 90..150: w = h = 60, centre (100, 120)
    # half = 0.5 * 2.9 * 60 = 87, s = 99.5 / 87
    s = 99.5 / 87
    expected = np.array([[s, 0, s * (87 - 100)], [0, s, s * (87 - 120)]])
    M = alignment_matrix(level_face())
    assert M.dtype == np.float64 and M.shape == (2, 3)
    np.testing.assert_allclose(M, expected, atol=1e-12)


def test_align_rotated_face_is_level_and_scaled():
    base = level_face()
    lm = similarity(base, 25.0, 1.3, (150.0, 40.0))
    img = np.full((400, 400, 3), 7, np.uint8)
    warped, out, M = align_face(img, lm)
    assert warped.shape == (200, 200, 3) and warped.dtype == np.uint8
    le, re = eye_means(out)
    assert abs(le[1] - re[1]) < 1e-6
    assert re[0] > le[0]  # not flipped
    lo, hi = five_bbox(out)
    # step 5: max(w, h) * s == 2 * 99.5 / 2.9, and the box centre goes to (99.5, 99.5)
    assert max(hi - lo) == pytest.approx(2 * 99.5 / 2.9, abs=1e-9)
    np.testing.assert_allclose((lo + hi) / 2, (99.5, 99.5), atol=1e-9)
    # invariance: a similarity of the input does not change the aligned landmarks
    _, out_base, M_base = align_face(img, base)
    np.testing.assert_allclose(out, out_base, atol=1e-9)
    np.testing.assert_allclose(transform_points(lm, M), out, atol=1e-12)


def test_align_warp_convention_and_grey_border():
    lm = similarity(level_face(), -25.0, 0.8, (60.0, 90.0))
    H, W = 220, 240
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([xx, 2 * yy, xx + yy], axis=-1)  # linear in (x, y): exact under bilinear
    warped, _, M = align_face(img, lm)
    assert warped.dtype == np.float32 and warped.shape == (200, 200, 3)
    Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
    inside = 0
    for u, v in [(0, 0), (199, 0), (0, 199), (199, 199), (100, 100), (60, 120), (150, 40)]:
        x, y = transform_points(np.array([u, v], float), Minv)
        if 0 <= x <= W - 1 and 0 <= y <= H - 1:
            inside += 1
            np.testing.assert_allclose(warped[v, u], (x, 2 * y, x + y), atol=0.25)
        elif x < -1 or y < -1 or x > W or y > H:
            np.testing.assert_array_equal(warped[v, u], (128, 128, 128))
    assert inside >= 3
    # the canvas is larger than the source here: some corner must be border
    corners = warped[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 128).all(axis=1).any()
    # uint8 image: border grey 128 exactly, custom border value honoured
    w8, _, _ = align_face(np.zeros((H, W, 3), np.uint8), lm)
    assert (w8 == 128).all(axis=2).any() and (w8 == 0).all(axis=2).any()
    w8b, _, _ = align_face(np.zeros((H, W), np.uint8), lm, border=255)
    assert w8b.shape == (200, 200) and set(np.unique(w8b)) <= set(range(256))
    assert w8b[(w8 == 128).all(axis=2)].min() == 255


def test_align_sequence_equals_frame_by_frame():
    base = level_face()
    lms = np.stack([similarity(base, a, s, (120 + 5 * a, 80)) for a, s in ((10, 1.0), (-30, 1.2), (0, 0.9))])
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, size=(3, 300, 320, 3), dtype=np.uint8)
    w, p, M = align_face(frames, lms, size=120)
    assert w.shape == (3, 120, 120, 3) and p.shape == (3, 49, 2) and M.shape == (3, 2, 3)
    w_list, p_list, M_list = align_face(list(frames), lms, size=120)
    np.testing.assert_array_equal(w_list, w)
    for t in range(3):
        wt, pt, Mt = align_face(frames[t], lms[t], size=120)
        np.testing.assert_array_equal(w[t], wt)
        np.testing.assert_allclose(p[t], pt)
        np.testing.assert_allclose(M[t], Mt)
    np.testing.assert_allclose(transform_points(lms, M), p, atol=1e-12)
    # size scales the canvas: centre (size - 1) / 2
    lo, hi = five_bbox(p[1])
    np.testing.assert_allclose((lo + hi) / 2, (59.5, 59.5), atol=1e-9)


def test_one_based_shift():
    lm = similarity(level_face(), 12.0, 1.1, (30, 20))
    img = np.random.default_rng(6).integers(0, 256, size=(260, 260, 3), dtype=np.uint8)
    w0, p0, M0 = align_face(img, lm)
    w1, p1, M1 = align_face(img, lm + 1.0, one_based=True)
    np.testing.assert_array_equal(w0, w1)
    np.testing.assert_allclose(p0, p1, atol=1e-9)
    np.testing.assert_allclose(M0, M1, atol=1e-9)
    np.testing.assert_allclose(alignment_matrix(lm + 1.0, one_based=True), M0, atol=1e-9)
    # without the flag the +1 moves the face by one source pixel
    assert not np.allclose(align_face(img, lm + 1.0)[2], M0)


def test_alignment_errors():
    img = np.zeros((50, 50, 3), np.uint8)
    lm = level_face()
    bad = lm.copy()
    bad[31, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf at 49-point indices \[31\]"):
        align_face(img, bad)
    with pytest.raises(ValueError, match="eye centres coincide"):
        alignment_matrix(np.full((49, 2), 5.0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 49, 2\)"):
        alignment_matrix(np.zeros((68, 2)))
    seq = np.stack([lm, bad])
    with pytest.raises(ValueError, match=r"frame 1: .*NaN"):
        align_face(np.stack([img, img]), seq)
    with pytest.raises(ValueError, match="3 frames but 2 landmark sets"):
        align_face([img] * 3, seq)


def test_transform_points_torch_and_batched():
    M = np.array([[2.0, 0.5, 3.0], [-0.5, 1.0, -1.0]])
    p = np.array([[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(transform_points(p, M), [[6.0, 0.5], [3.0, -1.0]])
    t = transform_points(torch.tensor(p, dtype=torch.float32), M)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), [[6.0, 0.5], [3.0, -1.0]])
    Ms = np.stack([M, np.array([[1.0, 0, 0], [0, 1.0, 0]])])
    out = transform_points(np.stack([p, p]), Ms)
    np.testing.assert_allclose(out[1], p)
    np.testing.assert_allclose(out[0], [[6.0, 0.5], [3.0, -1.0]])


# ------------------------------------------------------------------ attention maps


def one_au(x1, y1, x2, y2):
    return np.array([[[x1, y1], [x2, y2]]], float)  # (A=1, 2, 2)


def test_gaussian_cells_rows_are_y():
    # (x=88, y=40) in a 176 image -> column floor(11 + 0.5) = 11, row floor(5 + 0.5) = 5
    m = gaussian_au_maps(one_au(88, 40, 88, 40), 22, 176)[0]
    assert m.shape == (22, 22)
    assert m[5, 11] == 1.0 and m.max() == 1.0
    assert m[11, 5] == pytest.approx(math.exp(-72 / 18))  # transposed cell: 6 rows, 6 columns away
    assert m[5, 12] == pytest.approx(G1) and m[4, 11] == pytest.approx(G1)
    assert m[6, 12] == pytest.approx(G2)
    assert m[5, 14] == pytest.approx(math.exp(-9 / 18))


def test_gaussian_rounding_rule():
    # cell = floor(coord * 22 / 176 + 0.5): 3.99 px -> 0, 4.0 px -> 1, -4.01 px -> -1 (off map)
    assert gaussian_au_maps(one_au(3.99, 0, 3.99, 0), 22, 176)[0, 0, 0] == 1.0
    assert gaussian_au_maps(one_au(4.0, 0, 4.0, 0), 22, 176)[0, 0, 1] == 1.0
    m = gaussian_au_maps(one_au(-4.01, 0, -4.01, 0), 22, 176)[0]
    assert m.max() == pytest.approx(G1) and m[0, 0] == pytest.approx(G1)


def test_gaussian_max_of_two_subcenters():
    # sub-centres at cells (row 5, col 2) and (row 5, col 8)
    m = gaussian_au_maps(one_au(16, 40, 64, 40), 22, 176)[0]
    assert m[5, 2] == 1.0 and m[5, 8] == 1.0
    assert m[5, 5] == pytest.approx(math.exp(-9 / 18))  # 3 cells from both: max, not sum
    assert m[5, 4] == pytest.approx(math.exp(-4 / 18))
    assert m[5, 21] == pytest.approx(math.exp(-169 / 18))


def test_ac2d_and_aar_maps():
    sc = np.array([[[88, 40], [30, 150]], [[0, 0], [175, 175]]], float)
    a = ac2d_attention_maps(sc)
    assert a.shape == (2, 22, 22)
    np.testing.assert_allclose(a.sum(axis=(-2, -1)), 1.0, rtol=1e-12)
    g = gaussian_au_maps(sc, 22, 176)
    np.testing.assert_allclose(a, g / g.sum(axis=(-2, -1), keepdims=True))
    assert a[0, 5, 12] / a[0, 5, 11] == pytest.approx(G1)
    r = aar_attention_maps(sc)
    assert r.shape == (2, 44, 44) and r.max() == 1.0
    # 88 px -> column floor(22 + 0.5) = 22, 40 px -> row 10 at l/4
    assert r[0, 10, 22] == 1.0 and r[0, 10, 23] == pytest.approx(G1)
    assert r.sum() > 2  # not normalised
    assert ac2d_attention_maps(sc, image_size=224).shape == (2, 28, 28)


def test_maps_vectorised_and_torch():
    rng = np.random.default_rng(7)
    sc = rng.uniform(0, 176, size=(2, 3, 4, 2, 2))
    a = ac2d_attention_maps(sc)
    assert a.shape == (2, 3, 4, 22, 22)
    np.testing.assert_allclose(a[1, 2, 3], ac2d_attention_maps(sc[1, 2, 3:4])[0])
    t = ac2d_attention_maps(torch.tensor(sc, dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), a, atol=1e-6)
    t = aar_attention_maps(torch.tensor(sc))
    np.testing.assert_allclose(t.numpy(), aar_attention_maps(sc), atol=1e-12)


def test_maps_from_subcenters_pipeline():
    lm = np.stack([np.linspace(40, 136, 49), np.linspace(30, 150, 49)], axis=1)
    sc = au_subcenters(lm, (1, 12))
    m = ac2d_attention_maps(torch.tensor(sc))
    assert m.shape == (2, 22, 22)
    cell = np.floor(sc[0, 0] * 22 / 176 + 0.5).astype(int)  # (col, row)
    assert m[0, cell[1], cell[0]] == m[0].max()


def test_lsc_eps_formula_and_gradient():
    sc = np.concatenate([one_au(56, 56, 56, 56)] * 2)  # 112 image -> 14x14 map, cell (7, 7)
    eps = torch.tensor([0.0, 1.0], requires_grad=True)
    m = lsc_attention_maps(torch.tensor(sc), eps, image_size=112)
    assert m.shape == (2, 14, 14)
    g = gaussian_au_maps(sc, 14, 112)
    np.testing.assert_allclose(m[0].detach().numpy(), g[0], atol=1e-6)
    np.testing.assert_allclose(m[1].detach().numpy(), (g[1] + 1) / 2, atol=1e-6)
    assert float(m[1, 7, 7].detach()) == pytest.approx(1.0) and float(m[1, 0, 0].detach()) > 0.5
    m.sum().backward()
    # d/de (g + e) / (1 + e) = (1 - g) / (1 + e)^2
    expected = [(1 - g[0]).sum(), (1 - g[1]).sum() / 4]
    np.testing.assert_allclose(eps.grad.numpy(), expected, rtol=1e-5)
    # numpy and scalar eps, explicit map size
    mn = lsc_attention_maps(sc, 0.25, image_size=112, map_size=28)
    assert isinstance(mn, np.ndarray) and mn.shape == (2, 28, 28)
    np.testing.assert_allclose(mn, (gaussian_au_maps(sc, 28, 112) + 0.25) / 1.25)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        lsc_attention_maps(sc, [0.1, -0.5], image_size=112)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        lsc_attention_maps(torch.tensor(sc), torch.tensor([0.1, -0.5]), image_size=112)


def test_map_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., A, 2, 2\), got \(2, 2\)"):
        gaussian_au_maps(np.zeros((2, 2)), 22, 176)
    with pytest.raises(ValueError, match=r"\(\.\.\., A, 2, 2\), got \(1, 3, 2\)"):
        ac2d_attention_maps(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="NaN/inf"):
        ac2d_attention_maps(one_au(np.nan, 0, 0, 0))
    with pytest.raises(ValueError, match="NaN/inf"):
        aar_attention_maps(torch.tensor(one_au(0, 0, np.inf, 0)))
    with pytest.raises(ValueError, match="sigma > 0"):
        gaussian_au_maps(one_au(0, 0, 0, 0), 22, 176, sigma=0)


def test_docs_example_runs():
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
    if not doc.exists():
        pytest.skip("docs/protocol.md not found")
    code = re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1)
    ns = {}
    exec(compile(code.replace("print(", "(lambda *a: None)("), str(doc), "exec"), ns)
    assert ns["warped"].shape == (200, 200, 3) and ns["maps"].shape == (12, 22, 22)
    np.testing.assert_allclose(ns["maps"].sum(axis=(1, 2)), 1.0)
