"""audet.data.listfile: write/read round trip, AU weights (protocol section 4), deterministic
bytes, and one ListFileError per malformed case naming the file and the 1-based line."""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from audet.data import listfile
from audet.data.listfile import ListFileError, read_list, write_list
from audet.losses import AUWeightWarning, au_weights
from audet.data.toy import toy_landmarks

PREFIX = "TOY_combine_1_2"
PATHS = [
    "TOY/F001/T1/0010.jpg",
    "TOY/F001/T1/0011.jpg",
    "TOY/M002/T2/0007.jpg",
    "TOY/M002/T2/0008.jpg",
]
# 4 frames x 2 AUs: AU column 0 has P=3 of N=4, column 1 has P=1 of N=4
LABELS = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.int64)


def _jpeg_bytes() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def _landmarks(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return toy_landmarks()[None].astype(np.float64) + rng.uniform(-3, 3, (n, 49, 2))


def _write(root: Path, paths=PATHS, labels=LABELS, landmarks=None, prefix=PREFIX, images=True):
    landmarks = _landmarks(len(paths)) if landmarks is None else landmarks
    out = write_list(root, prefix, paths, landmarks, labels)
    if images:
        data = _jpeg_bytes()
        for p in paths:
            f = root / "images" / p
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
    return out, landmarks


@pytest.fixture
def prepared(tmp_path):
    root = tmp_path / "prep"
    out, lm = _write(root)
    return root, out, lm


def _line(path: Path, k: int) -> str:
    return path.read_text().splitlines()[k - 1]


def _set_line(path: Path, k: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[k - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _expect(root, file_name: str, line: int | None, **kw) -> str:
    with pytest.raises(ListFileError) as ei:
        read_list(root, PREFIX, **kw)
    msg = str(ei.value)
    if line is None:
        assert file_name in msg, msg
    else:  # "<file> line <k>": the culprit file, then the 1-based line
        assert re.search(rf"{re.escape(file_name)} line {line}\b", msg), msg
    return msg


# ------------------------------------------------------------------ round trip and weights


def test_round_trip(prepared):
    root, out, lm = prepared
    lf = read_list(root, PREFIX)
    assert lf.paths == PATHS
    assert lf.landmarks.shape == (4, 49, 2) and lf.landmarks.dtype == np.float32
    np.testing.assert_allclose(lf.landmarks, np.round(lm, 4), atol=2e-5)  # written with 4 decimals
    assert lf.labels.dtype == np.int8 and lf.labels.tolist() == LABELS.tolist()
    assert lf.image_root == root / "images"
    assert lf.image_path(2) == root / "images" / PATHS[2]
    assert [i.subject for i in lf.info] == ["F001", "F001", "M002", "M002"]
    assert [i.sequence for i in lf.info] == ["F001/T1", "F001/T1", "M002/T2", "M002/T2"]
    assert [i.frame for i in lf.info] == [10, 11, 7, 8]
    assert set(out) == {"path", "land", "labels", "au_weight", "pos_weight"}


def test_landmarks_are_written_with_four_decimals(tmp_path):
    lm = _landmarks(4)
    lm[0, 0] = (12.345678, -0.00001)  # -0.00001 must not be written as "-0.0000"
    _write(tmp_path, landmarks=lm)
    first = _line(tmp_path / "list" / f"{PREFIX}_land.txt", 1).split()
    assert len(first) == 98 and first[:2] == ["12.3457", "0.0000"]
    assert all(re.fullmatch(r"-?\d+\.\d{4}", t) for t in first)


def test_missing_labels_round_trip_and_mask(tmp_path):
    labels = LABELS.copy()
    labels[1, 1] = 9
    labels[3, 0] = 9
    _write(tmp_path, labels=labels)
    lf = read_list(tmp_path, PREFIX)
    assert lf.labels.tolist() == labels.tolist()
    assert lf.mask.tolist() == [[1, 1], [1, 0], [1, 1], [0, 1]]


def _weight_files(root, prefix=PREFIX):
    lf = read_list(root, prefix, check_images=False)
    return lf.au_weight.astype(np.float64), lf.pos_weight.astype(np.float64)


def test_weights_match_protocol_formulas_by_hand(prepared):
    root, _, _ = prepared
    # r_j = P_j / N: r = (3/4, 1/4); 1/r = (4/3, 4); sum = 16/3; J = 2
    w_hand = np.array([(4 / 3) / (16 / 3) * 2, 4 / (16 / 3) * 2])  # (0.5, 1.5)
    pos_hand = np.array([(4 - 3) / 3, (4 - 1) / 1])  # (N - P_j) / P_j = (1/3, 3)
    w, pos = _weight_files(root)
    np.testing.assert_allclose(w, w_hand, atol=1e-6)
    np.testing.assert_allclose(pos, pos_hand, atol=1e-6)
    assert w.sum() == pytest.approx(2.0)  # the weights average to 1
    assert (root / "list" / f"{PREFIX}_weight.txt").read_text() == "0.500000\n1.500000\n"
    assert (root / "list" / f"{PREFIX}_p_n_weight.txt").read_text() == "0.333333\n3.000000\n"


def _write_weights_only(root, labels):
    labels = np.asarray(labels)
    paths = [f"TOY/S1/T1/{i}.jpg" for i in range(len(labels))]
    write_list(root, PREFIX, paths, _landmarks(len(labels)), labels, write_weights=True)
    return _weight_files(root)


def test_weights_count_only_known_labels(tmp_path):
    # a 9 is neither positive nor negative: AU0 has N=3 known, P=1 -> r = 1/3; AU1 N=4, P=2 -> r = 1/2
    w, pos = _write_weights_only(tmp_path, [[1, 1], [0, 1], [9, 0], [0, 0]])
    inv = np.array([3.0, 2.0])
    np.testing.assert_allclose(w, inv / inv.sum() * 2, atol=1e-6)
    np.testing.assert_allclose(pos, [(3 - 1) / 1, (4 - 2) / 2], atol=1e-6)


def test_weight_files_and_training_loss_agree_without_positives(tmp_path):
    """Issue 8: the list files and the loss used two guards for an AU without a positive frame
    ([1.2, 0.6, 1.2] vs [0.75, 0.75, 1.5] here). One implementation now: losses.au_weights."""
    labels = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    with pytest.warns(AUWeightWarning, match=r"\[0\]"):
        w, pos = _write_weights_only(tmp_path, labels)
    # AU0 has no positive: it takes the smallest inverse rate of the others (min(4/2, 4/1) = 2)
    np.testing.assert_allclose(w, [0.75, 0.75, 1.5], atol=1e-6)
    np.testing.assert_allclose(pos, [1.0, 1.0, 3.0], atol=1e-6)
    with pytest.warns(AUWeightWarning):
        w_loss, v_loss = au_weights(labels, scale="list")
    np.testing.assert_allclose(w, w_loss, atol=1e-6)
    np.testing.assert_allclose(pos, v_loss, atol=1e-6)
    assert not hasattr(listfile, "compute_weights")  # no second implementation


def test_write_is_deterministic_bytes(tmp_path):
    lm = _landmarks(4)
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, landmarks=lm, images=False)
    _write(b, landmarks=lm.copy(), images=False)
    names = sorted(p.name for p in (a / "list").iterdir())
    assert names == sorted(p.name for p in (b / "list").iterdir()) and len(names) == 5
    for n in names:
        assert (a / "list" / n).read_bytes() == (b / "list" / n).read_bytes(), n
    # also after a read -> write cycle (what preparation resumes do)
    lf = read_list(a, PREFIX, check_images=False)
    write_list(b, PREFIX, lf.paths, lf.landmarks.astype(np.float64), lf.labels)
    for n in names:
        assert (a / "list" / n).read_bytes() == (b / "list" / n).read_bytes(), n


def test_write_validates_before_writing(tmp_path):
    with pytest.raises(ValueError, match="0, 1 or 9"):
        write_list(tmp_path, PREFIX, PATHS, _landmarks(4), np.array([[1, 0], [5, 0], [0, 1], [1, 1]]))
    lm = _landmarks(4)
    lm[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2"):
        write_list(tmp_path, PREFIX, PATHS, lm, LABELS)
    with pytest.raises(ValueError, match="relative"):
        write_list(tmp_path, PREFIX, ["/abs/S1/T1/1.jpg"] + PATHS[1:], _landmarks(4), LABELS)
    assert not (tmp_path / "list").exists()


# ------------------------------------------------------------------ malformed files


@pytest.mark.parametrize("kind", ["_path.txt", "_land.txt", "_AUoccur.txt"])
def test_line_count_mismatch_names_the_odd_file(prepared, kind):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}{kind}"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:-1]) + "\n")  # drop the last line of one file
    msg = _expect(root, f.name, 4)
    assert "3 lines" in msg and "4" in msg


def test_extra_line_names_the_longer_file(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_land.txt"
    f.write_text(f.read_text() + _line(f, 1) + "\n")  # 5 landmark lines, 4 paths and labels
    _expect(root, f.name, 5)


def test_nan_landmark(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_land.txt"
    toks = _line(f, 3).split()
    toks[10] = "nan"
    _set_line(f, 3, " ".join(toks))
    msg = _expect(root, f.name, 3)
    assert "nan" in msg and "value 11" in msg


def test_97_landmark_values(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_land.txt"
    _set_line(f, 2, " ".join(_line(f, 2).split()[:97]))
    msg = _expect(root, f.name, 2)
    assert "97 values" in msg and "98" in msg


def test_label_5(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_AUoccur.txt"
    _set_line(f, 4, "1 5")
    msg = _expect(root, f.name, 4)
    assert "5" in msg and "0, 1 or 9" in msg


def test_wrong_number_of_labels_on_a_line(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_AUoccur.txt"
    _set_line(f, 2, "1 0 1")
    _expect(root, f.name, 2)


@pytest.mark.parametrize("kind, token", [("_land.txt", "12.5x"), ("_AUoccur.txt", "yes")])
def test_non_numeric_token(prepared, kind, token):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}{kind}"
    toks = _line(f, 2).split()
    toks[1] = token
    _set_line(f, 2, " ".join(toks))
    msg = _expect(root, f.name, 2)
    assert token in msg


def test_missing_image(prepared):
    root, _, _ = prepared
    (root / "images" / PATHS[2]).unlink()
    msg = _expect(root, f"{PREFIX}_path.txt", 3)
    assert PATHS[2] in msg
    assert len(read_list(root, PREFIX, check_images=False)) == 4  # existence check is optional


def test_bad_path_line(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_path.txt"
    _set_line(f, 2, "TOY/F001/T1/frame.jpg")  # no frame number
    _expect(root, f.name, 2)
    _set_line(f, 2, "/abs/TOY/F001/T1/0011.jpg")
    msg = _expect(root, f.name, 2)
    assert "relative" in msg


@pytest.mark.parametrize("kind", ["_land.txt", "_AUoccur.txt", "_path.txt"])
def test_missing_file(prepared, kind):
    root, _, _ = prepared
    (root / "list" / f"{PREFIX}{kind}").unlink()
    _expect(root, f"{PREFIX}{kind}", None)


def test_bad_weight_file(prepared):
    root, _, _ = prepared
    f = root / "list" / f"{PREFIX}_weight.txt"
    f.write_text("0.5\nfoo\n")
    msg = _expect(root, f.name, 2)
    assert "foo" in msg
    f.write_text("0.5\n1.0\n2.0\n")  # 3 values for 2 AUs
    _expect(root, f.name, None)


def test_aus_argument_checks_label_width(prepared):
    root, _, _ = prepared
    read_list(root, PREFIX, aus=[1, 2])
    _expect(root, f"{PREFIX}_AUoccur.txt", 1, aus=[1, 2, 4])


def test_crlf_and_missing_final_newline_are_tolerated(prepared):
    root, _, _ = prepared
    for kind in ("_path.txt", "_land.txt", "_AUoccur.txt"):
        f = root / "list" / f"{PREFIX}{kind}"
        f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n").rstrip(b"\r\n"))
    lf = read_list(root, PREFIX)
    assert lf.paths == PATHS and lf.labels.tolist() == LABELS.tolist()


# ------------------------------------------------------------------ plain list directory


def test_plain_list_dir_with_image_root(prepared, tmp_path):
    root, _, _ = prepared
    plain = tmp_path / "published" / "data" / "list"  # the published code's data/list/
    plain.mkdir(parents=True)
    for f in (root / "list").iterdir():
        (plain / f.name).write_bytes(f.read_bytes())
    # no image root known: checking images is impossible, and the error says so
    with pytest.raises(ListFileError, match="image root"):
        read_list(plain, PREFIX)
    lf = read_list(plain, PREFIX, check_images=False)
    assert lf.image_root is None and lf.paths == PATHS
    lf = read_list(plain, PREFIX, image_root=root / "images")
    assert lf.image_root == root / "images" and lf.labels.tolist() == LABELS.tolist()
    # images in the wrong root: named by line
    with pytest.raises(ListFileError, match=r"_path.txt line 1: image"):
        read_list(plain, PREFIX, image_root=tmp_path)
    # a sibling ../images folder is the default image root
    sibling = plain.parent / "images"
    sibling.mkdir()
    assert read_list(plain, PREFIX, check_images=False).image_root == sibling


def test_three_different_line_counts_name_the_shortest(prepared):
    root, _, _ = prepared
    land = root / "list" / f"{PREFIX}_land.txt"
    land.write_text(land.read_text() + _line(land, 1) + "\n")  # 5 lines
    lab = root / "list" / f"{PREFIX}_AUoccur.txt"
    lab.write_text("\n".join(lab.read_text().splitlines()[:2]) + "\n")  # 2 lines
    msg = _expect(root, lab.name, 3)
    assert "4 lines" in msg and "5 lines" in msg and "2 lines" in msg
