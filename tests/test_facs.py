import numpy as np
import pytest
import torch

from audet import facs
from audet.facs import (
    AU_INFO,
    DATASET_AUS,
    EMOTION_PROTOTYPES,
    KEEP_68_TO_49,
    MIRROR_49,
    MIRROR_68,
    au_subcenters,
    dataset_aus,
    flip_landmarks,
    inner_eye_scale,
    landmarks66_to_49,
    landmarks68_to_49,
    to_49,
)

ALL15 = (1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26)


def hand_face():
    """49 points with p_i = (2 i + 1, 3 i + 0.5): r = |x22 - x25| = |45 - 51| = 6."""
    i = np.arange(49, dtype=np.float64)
    return np.stack([2 * i + 1, 3 * i + 0.5], axis=1)


# hand-computed from the protocol table with p_i = (2i+1, 3i+0.5), r = 6
EXPECTED = {
    1: [(9, 9.5), (11, 12.5)],  # p4, p5, y - r/2
    2: [(3, 1.5), (17, 22.5)],  # p1, p8, y - r/3
    4: [(5, 8.5), (15, 23.5)],  # p2, p7, y + r/3
    6: [(49, 78.5), (59, 93.5)],  # p24, p29, y + r
    7: [(43, 63.5), (53, 78.5)],  # p21, p26 unchanged
    9: [(31, 42.5), (35, 48.5)],  # p15, p17, y - r/2
    10: [(87, 129.5), (91, 135.5)],  # p43, p45
    12: [(63, 93.5), (75, 111.5)],  # p31, p37
    14: [(63, 93.5), (75, 111.5)],
    15: [(63, 93.5), (75, 111.5)],
    17: [(79, 120.5), (83, 126.5)],  # p39, p41, y + r/2
    26: [(79, 120.5), (83, 126.5)],
    23: [(69, 102.5), (81, 120.5)],  # p34, p40
    24: [(69, 102.5), (81, 120.5)],
    25: [(69, 102.5), (81, 120.5)],
}


def test_au_info_table():
    assert tuple(sorted(AU_INFO)) == ALL15
    assert AU_INFO[12].name == "Lip corner puller"
    assert AU_INFO[12].muscle == "Zygomaticus major"
    assert AU_INFO[4].location == "1/3 scale below brow center"
    assert all(AU_INFO[a].number == a for a in AU_INFO)


def test_dataset_aus():
    assert DATASET_AUS["BP4D"] == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    assert DATASET_AUS["DISFA"] == (1, 2, 4, 6, 9, 12, 25, 26)
    assert DATASET_AUS["GFT"] == (1, 2, 4, 6, 10, 12, 14, 15, 23, 24)
    assert DATASET_AUS["BP4D+"] == DATASET_AUS["BP4D"]
    assert DATASET_AUS["Aff-Wild2"] == (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
    assert DATASET_AUS["SYNTH"] == ALL15
    assert dataset_aus("bp4d+") == DATASET_AUS["BP4D+"]
    assert dataset_aus("AFF-WILD2") == DATASET_AUS["Aff-Wild2"]
    assert dataset_aus(" disfa ") == DATASET_AUS["DISFA"]
    with pytest.raises(ValueError, match=r"unknown dataset 'CK\+'.*BP4D, DISFA, GFT"):
        dataset_aus("CK+")


def test_emotion_prototypes():
    assert EMOTION_PROTOTYPES["happiness"] == ((6, 12), (7, 12))
    assert EMOTION_PROTOTYPES["anger"] == ((4, 7), (17, 24), (23,))
    assert EMOTION_PROTOTYPES["surprise"] == ((1, 2, 26),)
    assert set(EMOTION_PROTOTYPES) == {"happiness", "anger", "fear", "sadness", "surprise", "disgust"}
    for alts in EMOTION_PROTOTYPES.values():
        for combo in alts:
            assert set(combo) <= set(AU_INFO)


def test_subcenters_hand_face_every_au():
    lm = hand_face()
    assert inner_eye_scale(lm) == 6.0
    out = au_subcenters(lm, ALL15)
    assert out.shape == (15, 2, 2)
    for a, au in enumerate(ALL15):
        np.testing.assert_allclose(out[a], np.array(EXPECTED[au]), rtol=0, atol=1e-12,
                                   err_msg=f"AU{au}")  # fmt: skip


def test_subcenters_order_follows_aus_and_r_is_absolute():
    lm = hand_face()
    lm[22, 0], lm[25, 0] = 51.0, 45.0  # swapped inner corners: r still 6
    out = au_subcenters(lm, [26, 1])
    np.testing.assert_allclose(out[0], EXPECTED[26])
    np.testing.assert_allclose(out[1], EXPECTED[1])


def test_subcenters_batched_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 200, size=(2, 3, 49, 2))
    aus = DATASET_AUS["BP4D"]
    out = au_subcenters(lm, aus)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 12, 2, 2)
    np.testing.assert_allclose(out[1, 2], au_subcenters(lm[1, 2], aus))
    t = au_subcenters(torch.tensor(lm, dtype=torch.float32), aus)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (2, 3, 12, 2, 2)
    np.testing.assert_allclose(t.numpy(), out, rtol=1e-5, atol=1e-4)
    # integer landmarks are promoted, not truncated
    li = (hand_face() * 2).astype(np.int64)  # p_i = (4i + 2, 6i + 1)
    li[25, 0] += 1  # r = |90 - 103| = 13
    np.testing.assert_allclose(au_subcenters(li, [1])[0, 0], (18, 25 - 6.5))
    np.testing.assert_allclose(au_subcenters(torch.tensor(li), [1])[0, 0].numpy(), (18, 18.5))
    assert au_subcenters(np.zeros((49, 2), dtype=np.int64), [1]).dtype == np.float64


def test_subcenters_errors():
    lm = hand_face()
    with pytest.raises(ValueError, match=r"AU 5, 43.*supported AUs: 1, 2, 4, 6, 7, 9, 10, 12"):
        au_subcenters(lm, [1, 5, 43])
    with pytest.raises(ValueError, match=r"\(\.\.\., 49, 2\)"):
        au_subcenters(lm[:48], [1])
    bad = lm.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[4\]"):
        au_subcenters(bad, [1, 12])
    with pytest.raises(ValueError, match=r"NaN.*\[4\]"):
        au_subcenters(torch.tensor(bad), [1])
    bad = lm.copy()
    bad[22, 0] = np.inf  # r is used by every AU
    with pytest.raises(ValueError, match=r"\[22\]"):
        au_subcenters(bad[None].repeat(3, 0), [12])
    # points not used by the requested AUs may be missing
    bad = lm.copy()
    bad[4] = np.nan
    np.testing.assert_allclose(au_subcenters(bad, [12])[0], EXPECTED[12])


def test_68_to_49_index_mapping():
    l68 = np.stack([np.arange(68.0), -np.arange(68.0)], axis=1)
    l49 = landmarks68_to_49(l68)
    assert l49.shape == (49, 2)
    expected = list(range(17, 60)) + [61, 62, 63, 65, 66, 67]
    assert l49[:, 0].tolist() == expected
    assert l49[:, 1].tolist() == [-e for e in expected]
    assert 60 not in expected and 64 not in expected and len(expected) == 49
    # 49-point anchors used by the protocol: inner eye corners 39/42, mouth corners 48/54
    assert l49[22, 0] == 39 and l49[25, 0] == 42 and l49[31, 0] == 48 and l49[37, 0] == 54
    assert l49[13, 0] == 30  # nose tip


def test_66_to_49_matches_68_layout():
    rng = np.random.default_rng(1)
    l68 = rng.normal(size=(4, 68, 2))
    l66 = np.delete(l68, [60, 64], axis=1)
    np.testing.assert_array_equal(landmarks66_to_49(l66), landmarks68_to_49(l68))
    np.testing.assert_array_equal(to_49(l66), landmarks68_to_49(l68))
    np.testing.assert_array_equal(to_49(l68), landmarks68_to_49(l68))
    l49 = landmarks68_to_49(l68)
    assert to_49(l49) is l49
    t = to_49(torch.tensor(l68))
    assert isinstance(t, torch.Tensor) and t.shape == (4, 49, 2)
    np.testing.assert_array_equal(t.numpy(), l49)


def test_layout_errors():
    with pytest.raises(ValueError, match=r"68-point landmarks must have shape \(\.\.\., 68, 2\), got \(66, 2\)"):
        landmarks68_to_49(np.zeros((66, 2)))
    with pytest.raises(ValueError, match=r"66-point.*got \(68, 2\)"):
        landmarks66_to_49(np.zeros((68, 2)))
    with pytest.raises(ValueError, match=r"49 or 66 or 68.*got \(5, 51, 2\)"):
        to_49(np.zeros((5, 51, 2)))
    with pytest.raises(ValueError, match=r"got \(68, 3\)"):
        to_49(np.zeros((68, 3)))


def test_mirror_permutations_are_involutions_and_consistent():
    for p, n in ((MIRROR_49, 49), (MIRROR_68, 68)):
        assert sorted(p.tolist()) == list(range(n))
        np.testing.assert_array_equal(p[p], np.arange(n))
    # MIRROR_49 is MIRROR_68 seen through the 68 -> 49 selection
    np.testing.assert_array_equal(KEEP_68_TO_49[MIRROR_49], MIRROR_68[KEEP_68_TO_49])
    # anatomical spot checks (49-point indices)
    pairs = {4: 5, 0: 9, 22: 25, 19: 28, 24: 29, 21: 26, 31: 37, 15: 17, 43: 45, 39: 41, 46: 48}
    for a, b in pairs.items():
        assert MIRROR_49[a] == b and MIRROR_49[b] == a
    for c in (10, 11, 12, 13, 16, 34, 40, 44, 47):  # midline points map to themselves
        assert MIRROR_49[c] == c
    assert MIRROR_68[36] == 45 and MIRROR_68[8] == 8 and MIRROR_68[60] == 64


def test_flip_matches_image_flip():
    W, H = 40, 30
    rng = np.random.default_rng(2)
    lm = np.stack([rng.integers(0, W, 49), rng.integers(0, H, 49)], axis=1).astype(float)
    flipped = flip_landmarks(lm, W)
    img = np.zeros((H, W), np.uint8)
    x, y = int(lm[22, 0]), int(lm[22, 1])
    img[y, x] = 255
    img_f = img[:, ::-1]
    # the pixel of original point 22 is, after flipping, where the flipped landmark 25 lies
    assert img_f[int(flipped[25, 1]), int(flipped[25, 0])] == 255
    np.testing.assert_array_equal(flip_landmarks(flipped, W), lm)
    t = flip_landmarks(torch.tensor(lm), W)
    np.testing.assert_array_equal(t.numpy(), flipped)
    assert flip_landmarks(landmarks68_to_49(np.zeros((68, 2))), W).shape == (49, 2)


MIDLINE_AUS = (23, 24, 25)  # sub-centres p34 and p40 both lie on the midline


def test_flip_subcenters_mirror_with_swap():
    W = 200
    rng = np.random.default_rng(3)
    lm = rng.uniform(20, 180, size=(5, 49, 2))
    sc = au_subcenters(lm, ALL15)
    sc_f = au_subcenters(flip_landmarks(lm, W), ALL15)
    mirrored = sc.copy()
    mirrored[..., 0] = W - 1 - mirrored[..., 0]
    for a, au in enumerate(ALL15):
        if au in MIDLINE_AUS:
            expected = mirrored[:, a]  # each sub-centre maps onto itself
        else:
            expected = mirrored[:, a, ::-1]  # the left/right sub-centres swap
        np.testing.assert_allclose(sc_f[:, a], expected, atol=1e-9, err_msg=f"AU{au}")


def test_swap_rule_is_not_vacuous():
    # for a random face, the symmetric AUs' sub-centres differ, so the swap above is a real check
    rng = np.random.default_rng(4)
    lm = rng.uniform(20, 180, size=(49, 2))
    sc = au_subcenters(lm, ALL15)
    for a, au in enumerate(ALL15):
        assert not np.allclose(sc[a, 0], sc[a, 1]), au
    assert facs.SUBCENTER_RULES[23] == ((34, 0.0), (40, 0.0))
