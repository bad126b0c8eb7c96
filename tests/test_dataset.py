"""audet.data.dataset.AUDataset on a hand-made prepared directory whose content identifies every
frame: each sequence has its own grey level, landmark 0 of list row k is (100 + k, 50), and the
list rows are shuffled (samples must not depend on the list order)."""
import json

import cv2
import numpy as np
import pytest
import torch

from audet.data.dataset import AUDataset
from audet.data.images import ImageReadError
from audet.data.listfile import write_list
from audet.data.toy import toy_landmarks
from audet.data.transforms import TrainTransform
from audet.facs import au_subcenters

PREFIX = "TOY_all"
AUS = [1, 2, 4, 6]
# sequence -> (grey level, listed frame numbers)
SEQS = {
    "S001/T1": (40, [1, 2, 3, 4, 5, 6]),
    "S001/T2": (90, [3, 4, 5, 6, 7, 8]),  # same subject, frame numbers overlap T1's
    "S002/T1": (140, [10, 13, 14, 20]),  # gaps
    "S003/T1": (190, [1, 3, 7, 9]),  # gaps with ties for offsets +-4
}
SIZE, CROP, OFF = 200, 176, 12  # EvalTransform: centre crop offset 12


def _build(root, seqs=SEQS, aus=AUS, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(q, f) for q, (_, frames) in seqs.items() for f in frames]
    rows = [rows[i] for i in rng.permutation(len(rows))]  # list order != frame order
    paths, lms = [], []
    labels = rng.integers(0, 2, (len(rows), len(aus)))
    labels[rng.random(labels.shape) < 0.15] = 9
    labels[0] = [1, 0, 9, 1][: len(aus)]
    tmpl = toy_landmarks()
    for k, (q, f) in enumerate(rows):
        rel = f"TOY/{q}/{f:04d}.jpg"
        out = root / "images" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), np.full((SIZE, SIZE, 3), seqs[q][0], np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
        lm = tmpl + rng.normal(0, 1.0, tmpl.shape)
        lm[0] = (100 + k, 50)
        paths.append(rel)
        lms.append(lm)
    write_list(root, PREFIX, paths, np.stack(lms), labels, write_weights=False)
    (root / "dataset.json").write_text(json.dumps({"dataset": "TOY", "aus": list(aus), "folds": []}))
    return {"rows": rows, "labels": labels, "landmarks": np.stack(lms).astype(np.float32)}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return root, _build(root)


def _row_of(lm0_x: float, off: int = OFF) -> int:
    """List row encoded in landmark 0 (x = 100 + row, before the crop)."""
    k = float(lm0_x) + off - 100
    assert abs(k - round(k)) < 1e-3
    return int(round(k))


def _grey(image: torch.Tensor) -> float:
    return float((image.mean() * 0.5 + 0.5) * 255)


# ------------------------------------------------------------------ frames


def test_sample_keys_dtypes_shapes(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX)
    assert len(ds) == len(truth["rows"]) and ds.aus == AUS
    want = {
        "image": (torch.float32, (3, CROP, CROP)),
        "labels": (torch.float32, (4,)),
        "mask": (torch.float32, (4,)),
        "landmarks": (torch.float32, (49, 2)),
        "subcenters": (torch.float32, (4, 2, 2)),
        "subject": (torch.int64, ()),
        "sequence": (torch.int64, ()),
        "frame": (torch.int64, ()),
        "index": (torch.int64, ()),
    }
    for i in (0, 7, len(ds) - 1):
        s = ds[i]
        assert set(s) == set(want)
        for key, (dtype, shape) in want.items():
            assert s[key].dtype == dtype and tuple(s[key].shape) == shape, key
        k = int(s["index"])
        q, f = truth["rows"][k]
        assert _row_of(s["landmarks"][0, 0]) == k  # landmarks of that row, in crop pixels
        np.testing.assert_allclose(s["landmarks"].numpy(), truth["landmarks"][k] - OFF, atol=2e-4)
        assert ds.sequences[int(s["sequence"])] == q and ds.subjects[int(s["subject"])] == q.split("/")[0]
        assert int(s["frame"]) == f
        assert abs(_grey(s["image"]) - SEQS[q][0]) < 2  # the pixels of that row's image
        assert s["image"].min() >= -1 and s["image"].max() <= 1
        torch.testing.assert_close(s["subcenters"], au_subcenters(s["landmarks"], AUS))


def test_subcenters_of_augmented_samples_follow_the_landmarks(toy):
    root, _ = toy
    ds = AUDataset(root, PREFIX, transform=TrainTransform(flip_p=1.0))
    torch.manual_seed(0)
    s = ds[3]
    torch.testing.assert_close(s["subcenters"], au_subcenters(s["landmarks"], AUS))
    # flipped: the image-left eye's inner corner (22) is still left of the other one (25)
    assert s["landmarks"][22, 0] < s["landmarks"][25, 0]


def test_missing_label_is_mask_zero_and_label_zero(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX)
    (i,) = np.flatnonzero(ds.rows == 0)
    s = ds[int(i)]
    assert s["labels"].tolist() == [1.0, 0.0, 0.0, 1.0]  # list row 0 is "1 0 9 1"
    assert s["mask"].tolist() == [1.0, 1.0, 0.0, 1.0]
    for i in range(len(ds)):  # every row
        raw = truth["labels"][int(ds.rows[i])]
        np.testing.assert_array_equal(ds.labels[i], raw)
    s = ds[5]
    raw = truth["labels"][int(s["index"])]
    assert s["mask"].tolist() == (raw != 9).astype(float).tolist()
    assert s["labels"].tolist() == (raw == 1).astype(float).tolist()


def test_aus_subset_and_reordering(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX, aus=[6, 1])
    assert ds.aus == [6, 1]
    for i in (0, 4, 9):
        s = ds[i]
        raw = truth["labels"][int(s["index"])][[3, 0]]  # AU6 is column 3, AU1 column 0
        assert s["labels"].tolist() == (raw == 1).astype(float).tolist()
        assert s["mask"].tolist() == (raw != 9).astype(float).tolist()
        assert s["subcenters"].shape == (2, 2, 2)
        torch.testing.assert_close(s["subcenters"], au_subcenters(s["landmarks"], [6, 1]))
    np.testing.assert_array_equal(ds.labels, truth["labels"][ds.rows][:, [3, 0]])
    with pytest.raises(ValueError, match=r"AU9\b"):
        AUDataset(root, PREFIX, aus=[1, 9])


def test_subjects_filter(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX, subjects=["S002", "S003"])
    assert ds.subjects == ["S002", "S003"]
    assert len(ds) == 8
    got = sorted(truth["rows"][int(ds[i]["index"])] for i in range(len(ds)))
    assert got == sorted((q, f) for q, (_, fr) in SEQS.items() if q[:4] in ("S002", "S003") for f in fr)
    assert {ds.subjects[int(ds[i]["subject"])] for i in range(len(ds))} == {"S002", "S003"}
    with pytest.raises(ValueError, match="S999"):
        AUDataset(root, PREFIX, subjects=["S999"])


# ------------------------------------------------------------------ offset clips


def _clip_frames(ds, truth, s):
    """(sequence, frame) of each clip frame, from the clip's own landmarks and pixels."""
    out = []
    lms = s["landmarks"] if s["landmarks"].ndim == 3 else s["clip_landmarks"]
    for t in range(s["image"].shape[0]):
        q, f = truth["rows"][_row_of(lms[t, 0, 0])]
        assert abs(_grey(s["image"][t]) - SEQS[q][0]) < 2  # the pixels belong to that row too
        out.append((q, f))
    return out


# t -> frames of the clip, by hand from the nearest-listed-frame rule (ties: closer to t)
EXPECT_2 = {
    "S001/T1": {1: [1, 1, 3], 2: [1, 2, 4], 3: [1, 3, 5], 5: [3, 5, 6], 6: [4, 6, 6]},
    "S001/T2": {3: [3, 3, 5], 4: [3, 4, 6], 8: [6, 8, 8]},  # never T1's frames 1, 2
    "S002/T1": {10: [10, 10, 13], 13: [10, 13, 14], 14: [13, 14, 14], 20: [20, 20, 20]},
}
EXPECT_4 = {"S003/T1": {1: [1, 1, 3], 3: [1, 3, 7], 7: [3, 7, 9], 9: [7, 9, 9]}}  # 5 is a tie: 3 or 7


@pytest.mark.parametrize("offsets, expect", [([-2, 0, 2], EXPECT_2), ([-4, 0, 4], EXPECT_4)])
def test_offset_clips_take_frames_of_the_same_sequence(toy, offsets, expect):
    root, truth = toy
    ds = AUDataset(root, PREFIX, clip={"offsets": offsets})
    assert len(ds) == len(truth["rows"])  # one clip per list row
    seen = 0
    for i in range(len(ds)):
        s = ds[i]
        q, t = truth["rows"][int(s["index"])]
        assert int(s["frame"]) == t and ds.sequences[int(s["sequence"])] == q
        frames = _clip_frames(ds, truth, s)
        assert {fq for fq, _ in frames} == {q}, (q, t, frames)  # one sequence
        assert frames[1] == (q, t)  # offset 0 is the labelled frame
        assert s["frames"].tolist() == [f for _, f in frames]
        if t in expect.get(q, {}):
            assert [f for _, f in frames] == expect[q][t], (q, t)
            seen += 1
    assert seen == sum(len(v) for v in expect.values())


def test_offset_clip_sample_layout(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX, clip={"offsets": [-2, 0, 2]})
    s = ds[0]
    assert s["image"].shape == (3, 3, CROP, CROP) and s["image"].dtype == torch.float32
    assert s["labels"].shape == (3, 4) and s["mask"].shape == (3, 4)
    assert s["landmarks"].shape == (3, 49, 2) and s["subcenters"].shape == (3, 4, 2, 2)
    rows = s["indices"].tolist()
    assert rows[1] == int(s["index"]) and int(s["centre"]) == 1
    raw = truth["labels"][rows]
    assert s["labels"].tolist() == (raw == 1).astype(float).tolist()
    assert s["mask"].tolist() == (raw != 9).astype(float).tolist()
    torch.testing.assert_close(s["subcenters"], au_subcenters(s["landmarks"], AUS))
    # labels of the centre frame only
    c = AUDataset(root, PREFIX, clip={"offsets": [-2, 0, 2], "targets": "centre"})[0]
    assert c["labels"].shape == (4,) and c["landmarks"].shape == (49, 2) and c["clip_landmarks"].shape == (3, 49, 2)
    torch.testing.assert_close(c["labels"], s["labels"][1])
    with pytest.raises(ValueError, match="include 0"):
        AUDataset(root, PREFIX, clip={"offsets": [-2, 2]})


# ------------------------------------------------------------------ runs


def test_runs_sliding_and_disjoint_counts(toy):
    root, truth = toy
    lengths = [len(fr) for _, fr in SEQS.values()]  # 6, 6, 4, 4
    sliding = AUDataset(root, PREFIX, clip={"length": 3})
    assert len(sliding) == sum(n - 3 + 1 for n in lengths) == 12
    disjoint = AUDataset(root, PREFIX, clip={"length": 3, "windows": "disjoint", "pad": False})
    assert len(disjoint) == sum(n // 3 for n in lengths) == 6
    padded = AUDataset(root, PREFIX, clip={"length": 3, "windows": "disjoint"})
    assert len(padded) == sum(-(-n // 3) for n in lengths) == 8
    strided = AUDataset(root, PREFIX, clip={"length": 2, "stride": 2})
    assert len(strided) == sum(n - 2 for n in lengths)

    for i in range(len(sliding)):  # consecutive listed frames of one sequence, per-frame targets
        s = sliding[i]
        frames = _clip_frames(sliding, truth, s)
        q = frames[0][0]
        listed = SEQS[q][1]
        k = listed.index(frames[0][1])
        assert frames == [(q, f) for f in listed[k:k + 3]]
        assert s["labels"].shape == (3, 4) and s["mask"].shape == (3, 4)
        assert int(s["frame"]) == frames[1][1]  # the centre frame
    # disjoint: every listed frame in exactly one run; padding repeats the last frame with mask 0
    covered = []
    for i in range(len(padded)):
        s = padded[i]
        idx = s["indices"].tolist()
        real = [j for t, j in enumerate(idx) if t == 0 or idx[t] != idx[t - 1]]
        covered += real
        pad = len(idx) - len(real)
        assert s["mask"][len(real):].abs().sum() == 0 if pad else True
        if pad:
            assert idx[len(real):] == [real[-1]] * pad
    assert sorted(covered) == list(range(len(truth["rows"])))


# ------------------------------------------------------------------ errors


def test_corrupt_image_raises_image_read_error_naming_the_path(tmp_path):
    truth = _build(tmp_path)
    ds = AUDataset(tmp_path, PREFIX)  # the file exists: the dataset builds
    q, f = truth["rows"][2]
    bad = tmp_path / "images" / "TOY" / q / f"{f:04d}.jpg"
    bad.write_bytes(b"this is not a JPEG" * 10)
    (i,) = np.flatnonzero(ds.rows == 2)
    with pytest.raises(ImageReadError, match=str(bad).replace("\\", "\\\\")):
        ds[int(i)]
    ds[int(i) - 1 if i else 1]  # other samples still load
    bad.unlink()
    with pytest.raises(ImageReadError, match="not found"):
        ds[int(i)]


def test_unknown_au_list_needs_aus(tmp_path):
    _build(tmp_path)
    (tmp_path / "dataset.json").unlink()  # "TOY" is no DATASET_AUS name either
    with pytest.raises(ValueError, match="aus="):
        AUDataset(tmp_path, PREFIX)
    assert AUDataset(tmp_path, PREFIX, aus=[1, 2, 4, 6]).aus == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="4 label columns"):
        AUDataset(tmp_path, PREFIX, aus=[1, 2])


def test_duplicate_frame_numbers_in_a_sequence_are_an_error(tmp_path):
    paths = ["TOY/S001/T1/0001.jpg", "TOY/S001/T1/1.png"]  # both frame 1
    write_list(tmp_path, PREFIX, paths, np.stack([toy_landmarks()] * 2), np.ones((2, 4), int), write_weights=False)
    with pytest.raises(ValueError, match="appears twice"):
        AUDataset(tmp_path, PREFIX, aus=AUS, check_images=False, image_root=tmp_path, clip={"length": 2})


# ------------------------------------------------------------------ augmentation through the dataset


def test_batches_stack_through_a_dataloader(toy):
    root, _ = toy
    for clip, lead in ((None, ()), ({"offsets": [-1, 0, 1]}, (3,)), ({"length": 2}, (2,))):
        ds = AUDataset(root, PREFIX, clip=clip, transform=TrainTransform())
        b = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
        assert b["image"].shape == (4, *lead, 3, CROP, CROP)
        assert b["labels"].shape == b["mask"].shape == (4, *lead, 4)
        assert b["subcenters"].shape == (4, *lead, 4, 2, 2)
        assert b["index"].shape == (4,) and b["index"].dtype == torch.int64


def test_clip_frames_share_one_crop_and_flip(toy):
    """Landmarks of every clip frame went through the same crop offset and the same flip."""
    root, truth = toy
    from audet.facs import MIRROR_49

    for flip_p in (0.0, 1.0):
        ds = AUDataset(root, PREFIX, clip={"offsets": [-2, 0, 2]}, transform=TrainTransform(flip_p=flip_p))
        offsets = set()
        for seed in range(6):
            torch.manual_seed(seed)
            s = ds[seed]
            out = s["landmarks"].numpy()
            src = truth["landmarks"][s["indices"].numpy()]
            if flip_p:  # unflipped[i] = landmark i of the source after crop + mirror x' = 175 - (x - left)
                un = out[:, MIRROR_49]
                left = un[..., 0] + src[..., 0] - (CROP - 1)
                top = src[..., 1] - un[..., 1]
            else:
                left = src[..., 0] - out[..., 0]
                top = src[..., 1] - out[..., 1]
            assert np.ptp(left) < 1e-3 and np.ptp(top) < 1e-3  # one offset for all frames and points
            lt = (round(float(left[0, 0])), round(float(top[0, 0])))
            assert abs(left[0, 0] - lt[0]) < 1e-3 and 0 <= lt[0] <= 24 and 0 <= lt[1] <= 24
            offsets.add(lt)
        assert len(offsets) > 1  # the draws do vary between samples


def test_flipped_sample_subcenters_mirror_the_plain_ones(toy):
    """Same crop draw with and without the flip: every paired AU's sub-centres swap sides."""
    root, _ = toy
    kw = dict(brightness=0.0, contrast=0.0)
    flip = AUDataset(root, PREFIX, transform=TrainTransform(flip_p=1.0, **kw))
    plain = AUDataset(root, PREFIX, transform=TrainTransform(flip_p=0.0, **kw))
    for i in range(4):
        torch.manual_seed(i)
        a = flip[i]
        torch.manual_seed(i)
        b = plain[i]
        torch.testing.assert_close(a["subcenters"], au_subcenters(a["landmarks"], AUS))
        mirrored = b["subcenters"].flip(1).clone()  # AU1, 2, 4, 6 are all left/right pairs
        mirrored[..., 0] = (CROP - 1) - mirrored[..., 0]
        torch.testing.assert_close(a["subcenters"], mirrored, atol=1e-4, rtol=0)
        torch.testing.assert_close(a["image"], b["image"].flip(-1))


# ------------------------------------------------------------------ runs: stride and padding


def test_strided_disjoint_runs_cover_every_frame_once(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX, clip={"length": 2, "stride": 2, "windows": "non-overlapping"})
    covered = []
    for i in range(len(ds)):
        s = ds[i]
        idx = s["indices"].numpy()
        valid = ds.valid[i]
        covered += idx[valid].tolist()
        assert (s["mask"].numpy()[~valid] == 0).all()
        q = truth["rows"][idx[0]][0]
        listed = SEQS[q][1]
        if valid.all():  # every 2nd listed frame of one sequence
            pos = [listed.index(truth["rows"][j][1]) for j in idx]
            assert {truth["rows"][j][0] for j in idx} == {q} and pos[1] - pos[0] == 2
    assert sorted(covered) == list(range(len(truth["rows"])))


def test_short_sequences_give_one_padded_sliding_run(toy):
    root, truth = toy
    ds = AUDataset(root, PREFIX, clip={"length": 5})
    lengths = [len(fr) for _, fr in SEQS.values()]  # 6, 6, 4, 4
    assert len(ds) == 2 + 2 + 1 + 1
    short = [i for i in range(len(ds)) if not ds.valid[i].all()]
    assert len(short) == 2
    for i in short:
        s = ds[i]
        idx = s["indices"].tolist()
        assert idx[4] == idx[3] and s["mask"][4].abs().sum() == 0
        assert [truth["rows"][j][1] for j in idx[:4]] == SEQS[truth["rows"][idx[0]][0]][1]
    assert len(AUDataset(root, PREFIX, clip={"length": 5, "pad": False})) == 4 and lengths
