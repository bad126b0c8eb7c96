"""Tests of the synthetic FACS benchmark generator (audet.data.synth, `audet synth`)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from audet.data.synth import CSV_HEADER, SYNTH_AUS, generate, get_config, load_meta
from audet.data.synth.episodes import (
    Episode,
    calibrate,
    labels_from_intensity,
    rasterize,
)
from audet.data.synth.face_model import Pose, deform, magnitudes, neutral_shape, subject_displacements
from audet.data.synth.grid import intensity_vector, render_still
from audet.data.synth.identity import make_subject
from audet.data.synth.writer import plan_sequence, render_sequence
from audet.facs import au_subcenters, inner_eye_scale, landmarks68_to_49

IDX = {au: i for i, au in enumerate(SYNTH_AUS)}


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three small runs: seed 3 twice (1 and 2 workers) and seed 4."""
    cfg = get_config("test", frames=10, noise_landmarks=0.0, lost_landmarks=0.0)
    base = tmp_path_factory.mktemp("synth")
    a, b, c = base / "a", base / "b", base / "c"
    generate(cfg, a, seed=3, workers=1, progress=False)
    generate(cfg, b, seed=3, workers=2, progress=False)
    generate(cfg, c, seed=4, workers=1, progress=False)
    return cfg, a, b, c


# ----------------------------------------------------------------------------------------------
# determinism and layout
# ----------------------------------------------------------------------------------------------


def test_same_seed_identical_bytes_any_worker_count(runs):
    cfg, a, b, _ = runs
    da, db = _digest(a), _digest(b)
    kinds = {Path(k).suffix for k in da}
    assert {".jpg", ".csv", ".mat", ".json"} <= kinds
    assert da == db


def _by_position(d: dict[str, str]) -> dict[tuple, str]:
    """Key images by (folder, position in the sorted frame list): frame numbers depend on the seed."""
    out, count = {}, {}
    for k in sorted(d):
        folder = str(Path(k).parent)
        count[folder] = count.get(folder, -1) + 1
        out[(folder, count[folder], Path(k).suffix if k.endswith(".jpg") else Path(k).name)] = d[k]
    return out


def test_different_seed_differs(runs):
    _, a, _, c = runs
    da, dc = _by_position(_digest(a)), _by_position(_digest(c))
    common = set(da) & set(dc)
    for suffix in (".jpg", ".csv", ".mat"):
        keys = [k for k in common if k[2].endswith(suffix)]
        assert keys, suffix
        assert sum(da[k] != dc[k] for k in keys) >= len(keys) // 2, suffix


def test_layout(runs):
    cfg, a, _, _ = runs
    subjects = ["F001", "M001", "F002", "M002"]
    assert sorted(p.name for p in (a / "BP4D-training").iterdir()) == sorted(subjects)
    for s in subjects:
        tasks = sorted(p.name for p in (a / "BP4D-training" / s).iterdir())
        assert tasks == ["T1", "T2"]
        for t in tasks:
            imgs = sorted((a / "BP4D-training" / s / t).glob("*.jpg"))
            assert len(imgs) == cfg.frames
            assert all(len(p.stem) == 4 and p.stem.isdigit() for p in imgs)
            assert imgs[0].read_bytes()[:2] == b"\xff\xd8"  # JPEG
            lines = (a / "AUCoding" / "AU_OCC" / f"{s}_{t}.csv").read_text().splitlines()
            assert lines[0] == "0,1,2,4,6,7,9,10,12,14,15,17,23,24,25,26" == CSV_HEADER
            rows = [list(map(int, ln.split(","))) for ln in lines[1:]]
            assert [r[0] for r in rows] == [int(p.stem) for p in imgs]
            assert all(len(r) == 16 and set(r[1:]) <= {0, 1, 9} for r in rows)
            fit = scipy.io.loadmat(str(a / "2DFeatures" / f"{s}_{t}.mat"))["fit"]
            assert fit.shape == (1, cfg.frames)
            assert fit[0, 0]["pred"].shape == (68, 2)
    meta = load_meta(a)
    assert meta["seed"] == 3 and meta["preset"] == "test" and meta["aus"] == list(SYNTH_AUS)
    assert set(meta["subjects"]) == set(subjects)
    assert len(meta["sequences"]) == 8


def test_landmarks_are_one_based_and_match_the_image(runs):
    """pred (1-based) = rendered 0-based landmarks + 1 when annotation noise is 0."""
    cfg, a, _, _ = runs
    params = calibrate(cfg, 3)
    plan = plan_sequence(cfg, 3, 1, 1, params)  # M001 T2
    fit = scipy.io.loadmat(str(a / "2DFeatures" / "M001_T2.mat"))["fit"]
    for k, _img, lm in render_sequence(cfg, plan, [0, cfg.frames - 1]):
        pred = fit[0, k]["pred"]
        np.testing.assert_allclose(pred, lm + 1.0, atol=1e-3)
        # the face is in the picture, and landmark x, y are in (x, y) order: eyes above mouth
        assert (pred > 1).all() and (pred < cfg.size).all()
        assert pred[36:48, 1].mean() < pred[48:68, 1].mean()


def test_lost_landmarks_are_empty_and_noise_is_applied(tmp_path):
    cfg = get_config("test", subjects=1, sequences=1, frames=40, lost_landmarks=0.3,
                     noise_landmarks=1.0)  # fmt: skip
    generate(cfg, tmp_path, seed=0, progress=False)
    fit = scipy.io.loadmat(str(tmp_path / "2DFeatures" / "F001_T1.mat"))["fit"]
    shapes = [fit[0, k]["pred"].shape for k in range(40)]
    assert (0, 2) in shapes and (68, 2) in shapes
    lost = load_meta(tmp_path)["sequences"]["F001_T1"]["nuisance"]["lost_frames"]
    assert shapes.count((0, 2)) == lost > 0
    plan = plan_sequence(cfg, 0, 0, 0, calibrate(cfg, 0))
    k = next(i for i, s in enumerate(shapes) if s == (68, 2))
    (_, _, lm), = list(render_sequence(cfg, plan, [k]))
    err = fit[0, k]["pred"] - (lm + 1)
    assert 0.3 < err.std() < 2.0  # noise std 1 px at 256 -> 0.5 px at 128


def test_existing_output_needs_force(tmp_path):
    cfg = get_config("test", subjects=1, sequences=1, frames=2)
    generate(cfg, tmp_path, seed=0, progress=False)
    with pytest.raises(FileExistsError):
        generate(cfg, tmp_path, seed=0, progress=False)
    generate(cfg, tmp_path, seed=1, progress=False, force=True)
    assert load_meta(tmp_path)["seed"] == 1


# ----------------------------------------------------------------------------------------------
# labels and episodes
# ----------------------------------------------------------------------------------------------


def _runs_of(x: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], x.astype(int), [0]]))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


def test_episode_profile_onset_apex_offset_contiguous():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_on, n_ap, n_off = rng.integers(1, 15, 3)
        ep = Episode(12, 5, 5 + n_on, 5 + n_on + n_ap, 5 + n_on + n_ap + n_off, rng.uniform(0.5, 5), "t")
        prof = ep.profile()
        assert len(prof) == ep.end - ep.start
        d = np.diff(prof)
        on, ap = n_on, n_on + n_ap
        assert (d[: on] > 0).all()  # onset rises to the apex
        assert np.allclose(prof[on:ap], ep.peak)  # apex is flat
        assert (d[ap - 1 :] < 0).all()  # offset falls
        lab = labels_from_intensity(prof, 2.0)
        assert len(_runs_of(lab)) == (1 if ep.peak >= 2.0 else 0)


def test_labels_follow_episodes_in_a_sequence():
    cfg = get_config("quick", frames=200)
    params = calibrate(cfg, 11)
    for si, qi in ((0, 0), (3, 1), (5, 2)):
        plan = plan_sequence(cfg, 11, si, qi, params)
        eps = plan["episodes"]
        lab = plan["labels"]
        np.testing.assert_array_equal(lab, labels_from_intensity(rasterize(eps, 200, plan["habits"]), 2.0))
        known = plan["coded"] != 9
        assert (plan["coded"][known] == lab[known]).all()
        for au in SYNTH_AUS:
            mine = [e for e in eps if e.au == au]
            for a, b in _runs_of(lab[:, IDX[au]]):
                # every positive run lies inside the union of this AU's episodes, and each of
                # its frames is covered by an episode whose apex reaches the threshold
                cover = np.zeros(200, bool)
                for e in mine:
                    if e.peak >= 2.0:
                        cover[max(e.start, 0) : max(0, min(e.end, 200))] = True
                assert cover[a:b].all(), (au, a, b)


def test_rates_near_targets_and_cooccurrence():
    """Label rates over a default-size simulation (labels only) are near AAR Table I (BP4D)."""
    cfg = get_config("default")
    params = calibrate(cfg, 0)
    labs = []
    for si in range(cfg.subjects):
        for qi in range(cfg.sequences):
            labs.append(plan_sequence(cfg, 0, si, qi, params)["labels"])
    lab = np.concatenate(labs)
    rates = lab.mean(0)
    target = np.array([cfg.target_rates()[au] for au in SYNTH_AUS])
    assert np.abs(rates - target).max() < 0.1, dict(zip(SYNTH_AUS, np.round(rates, 3)))
    assert np.abs(rates - target).mean() < 0.04

    def phi(a, b):
        return np.corrcoef(lab[:, IDX[a]], lab[:, IDX[b]])[0, 1]

    # prototypes (AUNet Table II): happiness 6+12, fear/surprise 1+2, anger 17+24 co-occur;
    # AU26 comes with AU25; unrelated AUs (12 and 15, 12 and 4) do not
    assert phi(6, 12) > 0.2 and phi(1, 2) > 0.4 and phi(17, 24) > 0.2
    assert abs(phi(12, 15)) < 0.15 and abs(phi(12, 4)) < 0.15
    on26 = lab[:, IDX[26]] == 1
    assert lab[on26, IDX[25]].mean() > 0.75


def test_subject_habits_change_cooccurrence():
    """The confounder: a subject's extra AUs show up with its emotion far more than for others."""
    cfg = get_config("default", expression=0.8)
    params = calibrate(cfg, 0)
    found = 0
    for si in range(12):
        ident, habits = make_subject(0, si, cfg)
        for emo, extra in habits.extras.items():
            n_emo = n_extra = 0
            for qi in range(6):
                for e in plan_sequence(cfg, 0, si, qi, params)["episodes"]:
                    if e.source == f"emotion:{emo}":
                        n_emo += 1
                    if e.source == f"habit:{emo}":
                        n_extra += 1
            if n_emo >= 5:
                found += 1
                assert n_extra > 0, (ident.name, emo, extra)
    assert found >= 3


# ----------------------------------------------------------------------------------------------
# appearance: landmarks move and texture changes at each AU's FACS location
# ----------------------------------------------------------------------------------------------


def _shape(ident, aus):
    cfg = get_config("test")
    disp = subject_displacements(ident, cfg.subtle, cfg.au_gain)
    return deform(neutral_shape(ident), disp, magnitudes(intensity_vector(aus)[None])[0])


@pytest.fixture(scope="module")
def subject():
    return make_subject(0, 2, get_config("test"))[0]


def test_au_landmark_displacements_at_facs_locations(subject):
    n = _shape(subject, {})
    # AU12: lip corners (48, 54) up (y smaller) and out
    d = _shape(subject, {12: 4}) - n
    assert d[48, 1] < -0.03 and d[54, 1] < -0.03 and d[48, 0] < -0.03 and d[54, 0] > 0.03
    # AU1: inner brows (21, 22) up, more than the outer ends (17, 26)
    d = _shape(subject, {1: 4}) - n
    assert d[21, 1] < -0.06 and d[22, 1] < -0.06 and d[21, 1] < d[17, 1] - 0.04
    # AU2: outer brows up more than inner brows
    d = _shape(subject, {2: 4}) - n
    assert d[17, 1] < -0.03 and d[17, 1] < d[21, 1] - 0.02
    # AU4: brows down and together
    d = _shape(subject, {4: 4}) - n
    assert d[21, 1] > 0.04 and d[21, 0] > 0.02 and d[22, 0] < -0.02
    # AU26: the jaw / chin (8) drops
    d = _shape(subject, {26: 4}) - n
    assert d[8, 1] > 0.1 and abs(d[36:48]).max() < 1e-9
    # AU25: lips part (inner lower lip below inner upper lip)
    p = _shape(subject, {25: 4})
    assert p[66, 1] - p[62, 1] > 0.04 and n[66, 1] - n[62, 1] < 0.02
    # AU15: corners down; AU17: lower lip / chin up; AU7, AU6: lower lids up
    assert (_shape(subject, {15: 4}) - n)[[48, 54], 1].min() > 0.03
    assert (_shape(subject, {17: 4}) - n)[57, 1] < -0.03
    for au in (6, 7):
        assert (_shape(subject, {au: 4}) - n)[[40, 41, 46, 47], 1].max() < -0.01
    # each AU moves only points of its region (upper-face AUs leave the mouth alone, ...)
    lower = list(range(48, 68))
    for au in (1, 2, 4, 7):
        assert abs((_shape(subject, {au: 5}) - n)[lower]).max() < 1e-9, au
    for au in (12, 14, 15, 17, 23, 24, 25, 26):
        assert abs((_shape(subject, {au: 5}) - n)[list(range(17, 27))]).max() < 1e-9, au


def test_au_texture_changes_within_the_au_region(subject):
    """Image difference apex vs neutral (same identity, frontal, no noise) concentrates around
    the AU's sub-centres (protocol section 1)."""
    cfg = get_config("test")
    S = 256
    neu, lm = render_still(subject, cfg, None, S, scale=0.3)
    lm49 = landmarks68_to_49(lm)
    r = float(inner_eye_scale(lm49))
    yy, xx = np.mgrid[0:S, 0:S]
    for au in SYNTH_AUS:
        aus = {au: 4.5, 25: 4.5} if au == 26 else {au: 4.5}
        img, _ = render_still(subject, cfg, aus, S, scale=0.3)
        diff = np.abs(img.astype(float) - neu).sum(2)
        assert diff.sum() > 0, au
        sc = au_subcenters(lm49, [au])[0]
        near = np.zeros((S, S), bool)
        for x, y in sc:
            near |= (xx - x) ** 2 + (yy - y) ** 2 < (1.1 * r) ** 2
        frac = diff[near].sum() / diff.sum()
        # the region is small (two discs): most of the change must still fall inside it
        # (AU9 and AU10 also deepen the nasolabial furrow and AU9 lowers the brows)
        assert frac > 0.33, (au, round(frac, 3))
        assert diff[near].mean() > 5 * diff[~near].mean(), au


def test_projection_and_pose():
    """Yaw moves the nose tip sideways more than the ears; roll rotates the eye line."""
    from audet.data.synth.face_model import Projector, TEMPLATE68

    flat = Projector(Pose(0, 0, 0, 50, 100, 100))(TEMPLATE68)
    turned = Projector(Pose(np.radians(20), 0, 0, 50, 100, 100))(TEMPLATE68)
    shift = turned[:, 0] - flat[:, 0]
    assert shift[30] > shift[0] + 5 and shift[30] > 0
    rolled = Projector(Pose(0, 0, np.radians(10), 50, 100, 100))(TEMPLATE68)
    v = rolled[45] - rolled[36]
    assert np.degrees(np.arctan2(v[1], v[0])) == pytest.approx(10, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# config and CLI
# ----------------------------------------------------------------------------------------------


def test_presets_and_overrides():
    assert get_config("test").total_frames < 200
    q, d, big = get_config("quick"), get_config("default"), get_config("large")
    assert 3000 <= q.total_frames <= 6000 and 9 <= q.subjects <= 12
    assert 15000 <= d.total_frames <= 20000 and d.subjects >= 20
    assert big.total_frames >= 20000
    c = get_config("quick", subjects=6, frames=50, noise_landmarks=0.25, rates="DISFA")
    assert (c.subjects, c.frames, c.noise_landmarks) == (6, 50, 0.25)
    assert c.target_rates()[25] == pytest.approx(0.278)
    with pytest.raises(ValueError):
        get_config("nope")
    with pytest.raises(ValueError):
        get_config("test", rates="3=0.5")
    with pytest.raises(ValueError):
        get_config("test", occlusion=2.0)


def test_cli(tmp_path, capsys):
    from audet.cli import main

    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = capsys.readouterr().out
    for knob in ("--preset", "--seed", "--workers", "--yaw", "--occlusion", "--noise-landmarks",
                 "--clutter", "--rates", "--subjects", "--grid"):  # fmt: skip
        assert knob in text
    assert main(["synth", "--preset", "test", "--out", str(tmp_path), "--subjects", "2",
                 "--sequences", "1", "--frames", "3", "--size", "96", "--quiet"]) == 0  # fmt: skip
    assert len(list((tmp_path / "BP4D-training").rglob("*.jpg"))) == 6
    assert main(["synth", "--out", str(tmp_path), "--preset", "test", "--quiet"]) == 2  # exists
