"""FACS knowledge as data: the AU table, dataset AU sets, AU sub-centre rules and landmark layouts.

Conventions (see ``docs/protocol.md``):

* Landmarks are arrays of shape ``(..., P, 2)`` holding ``(x, y)`` in pixels, x to the right and
  y downwards, 0-based (pixel centres at integer coordinates).
* The 49-point layout is the 68-point iBUG layout without the 17 jaw points (0-16) and the two
  inner-mouth corners (68-point indices 60 and 64). The 66-point layout is the 68-point one
  without the two inner-mouth corners.
* Every function that takes landmarks accepts a numpy array or a torch tensor and returns the same
  type (torch outputs keep device and floating dtype).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

import sys


class _LazyTorch:
    """Stands in for the torch module until first use, so importing audet.facs (and building
    the CLI parser, which imports it) does not pay torch's ~1 s import time."""

    def __getattr__(self, name):
        import torch as _torch

        return getattr(_torch, name)


torch = _LazyTorch()

__all__ = [
    "AUInfo",
    "AU_INFO",
    "DATASET_AUS",
    "dataset_aus",
    "DEFAULT_AUS",
    "default_aus",
    "parse_aus",
    "resolve_aus",
    "EMOTION_PROTOTYPES",
    "SUBCENTER_RULES",
    "SUPPORTED_AUS",
    "INNER_EYE_CORNERS_49",
    "au_subcenters",
    "inner_eye_scale",
    "KEEP_68_TO_49",
    "KEEP_66_TO_49",
    "landmarks68_to_49",
    "landmarks66_to_49",
    "to_49",
    "MIRROR_PAIRS_68",
    "MIRROR_68",
    "MIRROR_49",
    "flip_landmarks",
]


# ---------------------------------------------------------------------------------------------
# AU table (AUNet, Table I)
# ---------------------------------------------------------------------------------------------


class AUInfo(NamedTuple):
    """One row of AUNet Table I."""

    number: int
    name: str
    muscle: str
    location: str


_AU_ROWS = (
    (1, "Inner brow raiser", "Frontalis", "1/2 scale above inner brow"),
    (2, "Outer brow raiser", "Frontalis", "1/3 scale above outer brow"),
    (4, "Brow lowerer", "Corrugator supercilii", "1/3 scale below brow center"),
    (6, "Cheek raiser", "Orbicularis oculi", "1 scale below eye bottom"),
    (7, "Lid tightener", "Orbicularis oculi", "Eye"),
    (9, "Nose wrinkler", "Levator labii superioris", "1/2 scale above nose bottom"),
    (10, "Upper lip raiser", "Levator labii superioris", "Upper lip center"),
    (12, "Lip corner puller", "Zygomaticus major", "Lip corner"),
    (14, "Dimpler", "Buccinator", "Lip corner"),
    (15, "Lip corner depressor", "Triangularis", "Lip corner"),
    (17, "Chin raiser", "Mentalis", "1/2 scale below lip"),
    (23, "Lip tightener", "Orbicularis oris", "Lip center"),
    (24, "Lip presser", "Orbicularis oris", "Lip center"),
    # AUNet Table I prints "Orbicularis oculi" for AU25 and "Mentalis" for AU26; kept verbatim
    # (FACS itself names depressor labii / relaxed mentalis for 25 and relaxed masseter for 26).
    (25, "Lips part", "Orbicularis oculi", "Lip center"),
    (26, "Jaw drop", "Mentalis", "1/2 scale below lip"),
)

#: AU number -> :class:`AUInfo` (number, name, muscle, location), the 15 AUs of AUNet Table I.
AU_INFO: dict[int, AUInfo] = {row[0]: AUInfo(*row) for row in _AU_ROWS}

#: AU sets of the benchmarks (protocol section 1), in label-column order.
DATASET_AUS: dict[str, tuple[int, ...]] = {
    "BP4D": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "DISFA": (1, 2, 4, 6, 9, 12, 25, 26),
    "GFT": (1, 2, 4, 6, 10, 12, 14, 15, 23, 24),
    "BP4D+": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "Aff-Wild2": (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26),
    "SYNTH": tuple(sorted(AU_INFO)),
}


def dataset_aus(name: str) -> tuple[int, ...]:
    """AU numbers of dataset ``name`` (case-insensitive, e.g. ``"bp4d"``, ``"aff-wild2"``).

    Raises ValueError listing the valid names for an unknown dataset.
    """
    key = str(name).strip().casefold()
    for known, aus in DATASET_AUS.items():
        if known.casefold() == key:
            return aus
    raise ValueError(
        f"unknown dataset {name!r}; valid names (case-insensitive): {', '.join(DATASET_AUS)}"
    )


#: The AU list of a model built without one (and without data): BP4D's 12 AUs (protocol section 1).
DEFAULT_AUS: tuple[int, ...] = DATASET_AUS["BP4D"]


def default_aus(num_aus: int | None = None) -> list[int]:
    """The AU numbers of a model given no AU list: :data:`DEFAULT_AUS` (BP4D's 12), or its first
    ``num_aus`` when only a count is given. THE one fallback: training, evaluation, complexity,
    inference and ONNX export all see these ids."""
    if num_aus is None:
        return list(DEFAULT_AUS)
    n = int(num_aus)
    if not 1 <= n <= len(DEFAULT_AUS):
        raise ValueError(f"num_aus={num_aus} without AU numbers: give the AU list (aus=[...]); only 1 to "
                         f"{len(DEFAULT_AUS)} AUs default to BP4D's first ones {list(DEFAULT_AUS)}")
    return list(DEFAULT_AUS[:n])


def parse_aus(spec) -> list[int] | None:
    """THE parser of an AU spec: ``None`` -> None; a list of AU numbers (``[1, 2, 4]``, or their
    texts), a comma list ``"1,2,4"`` or a dataset name ``"BP4D"`` -> ``[1, 2, 4, ...]``.

    AU numbers are whole numbers >= 1 without repeats. A bad spec raises ValueError with one line
    saying what is accepted (the config and the commands reword it for their key or flag).
    """
    what = "a list of AU numbers like 1,2,4 or a dataset name like BP4D"
    if spec is None:
        return None
    if isinstance(spec, str):
        parts = [t.strip() for t in spec.replace(" ", ",").split(",") if t.strip()]
        if not parts:
            raise ValueError(f"empty AU list; give {what}")
        if not all(t.isdigit() for t in parts):
            if len(parts) == 1:
                try:
                    return list(dataset_aus(parts[0]))
                except ValueError:
                    pass
            raise ValueError(f"{spec!r} is neither a comma list of AU numbers (1,2,4) nor a dataset name "
                             f"({', '.join(DATASET_AUS)})")
        spec = parts
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"{spec!r} is not an AU list; give {what}")
    out = []
    for a in spec:
        if isinstance(a, str) and a.strip().isdigit():
            a = int(a.strip())
        if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)) or not float(a).is_integer():
            raise ValueError(f"{a!r} in {list(spec)} is not an AU number; give {what}")
        out.append(int(a))
    if min(out) < 1 or len(set(out)) != len(out):
        raise ValueError(f"AU numbers must be >= 1 and not repeated; got {out}")
    return out


def resolve_aus(have, wanted=None, *, source: str = "the data") -> tuple[list[int], list[int]]:
    """THE mapping of wanted AUs onto label (or logit) columns: ``(aus, columns)``.

    Args:
        have: the AU numbers of the columns, in order; or an ``int``: the number of columns when
            their AU numbers are unknown.
        wanted: the AU numbers wanted, in the wanted order (a subset or a reordering of ``have``);
            None = all of ``have``.
        source: what ``have`` describes, for the error messages (e.g. ``"BP4D_part1"``).

    Returns ``aus`` (the AU numbers served) and ``columns`` (``columns[j]`` is the column of
    ``aus[j]``). With unknown AU numbers (``have`` an int) ``wanted`` must name every column.
    Every mismatch is a ValueError of one line naming both lists.
    """
    wanted = None if wanted is None else [int(a) for a in wanted]
    if wanted is not None and len(set(wanted)) != len(wanted):
        raise ValueError(f"AU list {wanted} repeats an AU")
    if isinstance(have, (int, np.integer)):
        n = int(have)
        if wanted is None:
            raise ValueError(f"{source}: the AU numbers of its {n} label columns are unknown (no dataset.json "
                             "'aus', no known dataset name); give the AU list (aus=)")
        if len(wanted) != n:
            raise ValueError(f"{source} has {n} label columns but {len(wanted)} AUs were given ({wanted}) and its "
                             "AU numbers are unknown (no dataset.json)")
        return wanted, list(range(n))
    have = [int(a) for a in have]
    if wanted is None:
        return have, list(range(len(have)))
    missing = [a for a in wanted if a not in have]
    if missing:
        raise ValueError(f"{source} has no labels for AU{', AU'.join(map(str, missing))} (it has AUs {have})")
    return wanted, [have.index(a) for a in wanted]


#: Prototypic emotion -> alternative AU combinations (AUNet Table II, adapted from EMFACS).
#: Each value is a tuple of alternatives; each alternative is a tuple of AUs that co-occur.
#: E.g. happiness is AU6+AU12 or AU7+AU12.
EMOTION_PROTOTYPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "happiness": ((6, 12), (7, 12)),
    "anger": ((4, 7), (17, 24), (23,)),
    "fear": ((1, 2, 4),),
    "sadness": ((1,), (1, 4), (6, 15)),
    "surprise": ((1, 2, 26),),
    "disgust": ((9,), (10,)),
}


# ---------------------------------------------------------------------------------------------
# Sub-centre rules (protocol section 1), 49-point indices, dy in units of r
# ---------------------------------------------------------------------------------------------

#: 49-point indices of the inner eye corners; r = |x[22] - x[25]|.
INNER_EYE_CORNERS_49 = (22, 25)

_RULE_GROUPS = (
    ((1,), ((4, -1 / 2), (5, -1 / 2))),
    ((2,), ((1, -1 / 3), (8, -1 / 3))),
    ((4,), ((2, 1 / 3), (7, 1 / 3))),
    ((6,), ((24, 1.0), (29, 1.0))),
    ((7,), ((21, 0.0), (26, 0.0))),
    ((9,), ((15, -1 / 2), (17, -1 / 2))),
    ((10,), ((43, 0.0), (45, 0.0))),
    ((12, 14, 15), ((31, 0.0), (37, 0.0))),
    ((17, 26), ((39, 1 / 2), (41, 1 / 2))),
    ((23, 24, 25), ((34, 0.0), (40, 0.0))),
)

#: AU -> ((landmark index, dy factor), (landmark index, dy factor)): sub-centre k of the AU is
#: ``(x[idx_k], y[idx_k] + dy_k * r)`` with 49-point indices and r the inner-eye-corner distance.
#: dy > 0 moves down in the image (y grows downwards).
SUBCENTER_RULES: dict[int, tuple[tuple[int, float], tuple[int, float]]] = {
    au: rule for aus, rule in _RULE_GROUPS for au in aus
}
SUBCENTER_RULES = dict(sorted(SUBCENTER_RULES.items()))

#: AUs that :func:`au_subcenters` knows.
SUPPORTED_AUS: tuple[int, ...] = tuple(SUBCENTER_RULES)


def _is_torch(x) -> bool:
    # a tensor can only exist once torch has been imported
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(x, mod.Tensor)


def _check_points(landmarks, n: int | tuple[int, ...], what: str = "landmarks") -> None:
    shape = tuple(landmarks.shape)
    ns = (n,) if isinstance(n, int) else n
    if len(shape) < 2 or shape[-1] != 2 or shape[-2] not in ns:
        want = " or ".join(str(k) for k in ns)
        raise ValueError(f"{what} must have shape (..., {want}, 2), got {shape}")


def _check_finite(landmarks, indices: Sequence[int]) -> None:
    """Raise ValueError if any of the given landmark points is NaN/inf anywhere in the batch."""
    idx = list(indices)
    if _is_torch(landmarks):
        sub = landmarks[..., idx, :]
        bad = ~torch.isfinite(sub)
        if bool(bad.any()):
            bad_pts = bad.reshape(-1, len(idx), 2).any(dim=2).any(dim=0).cpu().numpy()
        else:
            return
    else:
        sub = np.asarray(landmarks)[..., idx, :]
        bad = ~np.isfinite(sub)
        if not bad.any():
            return
        bad_pts = bad.reshape(-1, len(idx), 2).any(axis=2).any(axis=0)
    names = sorted({idx[i] for i in np.nonzero(bad_pts)[0]})
    raise ValueError(f"landmarks contain NaN/inf at 49-point indices {names}")


def inner_eye_scale(landmarks):
    """Scale r = |x[22] - x[25]| (inner eye corners, 49-point layout), shape ``(...)``."""
    _check_points(landmarks, 49)
    i, j = INNER_EYE_CORNERS_49
    return abs(landmarks[..., i, 0] - landmarks[..., j, 0])


def au_subcenters(landmarks, aus: Sequence[int]):
    """AU sub-centres from 49-point landmarks (protocol section 1, AC2D / JAA-Net rules).

    Args:
        landmarks: ``(..., 49, 2)`` numpy array or torch tensor of ``(x, y)``.
        aus: AU numbers, e.g. ``DATASET_AUS["BP4D"]``.

    Returns:
        ``(..., len(aus), 2, 2)`` of the same type: ``[..., a, k, :]`` is ``(x, y)`` of sub-centre
        ``k`` (0 or 1) of AU ``aus[a]``. Sub-centre ``k`` is ``(x[i_k], y[i_k] + dy_k * r)`` with
        ``(i_k, dy_k) = SUBCENTER_RULES[au][k]`` and ``r = inner_eye_scale(landmarks)``.

    Raises:
        ValueError: for an AU without a rule, a wrong shape, or NaN/inf among the used points.
    """
    aus = [int(a) for a in aus]
    unknown = [a for a in aus if a not in SUBCENTER_RULES]
    if unknown:
        raise ValueError(
            f"no sub-centre rule for AU {', '.join(map(str, unknown))}; "
            f"supported AUs: {', '.join(map(str, SUPPORTED_AUS))}"
        )
    _check_points(landmarks, 49)
    idx = [SUBCENTER_RULES[a][k][0] for a in aus for k in (0, 1)]
    dy = [SUBCENTER_RULES[a][k][1] for a in aus for k in (0, 1)]
    _check_finite(landmarks, sorted(set(idx) | set(INNER_EYE_CORNERS_49)))
    batch = tuple(landmarks.shape[:-2])
    r = inner_eye_scale(landmarks)[..., None]  # (..., 1)
    if _is_torch(landmarks):
        dtype = landmarks.dtype if landmarks.is_floating_point() else torch.get_default_dtype()
        lm = landmarks.to(dtype)
        r = r.to(dtype)
        pts = lm[..., torch.as_tensor(idx, device=lm.device), :]  # (..., 2A, 2)
        dyt = torch.as_tensor(dy, dtype=dtype, device=lm.device)
        y = pts[..., 1] + dyt * r
        out = torch.stack([pts[..., 0], y], dim=-1)
    else:
        lm = np.asarray(landmarks)
        if not np.issubdtype(lm.dtype, np.floating):
            lm = lm.astype(np.float64)
        r = r.astype(lm.dtype)
        pts = lm[..., idx, :]
        y = pts[..., 1] + np.asarray(dy, dtype=lm.dtype) * r
        out = np.stack([pts[..., 0], y], axis=-1)
    return out.reshape(*batch, len(aus), 2, 2)


# ---------------------------------------------------------------------------------------------
# Landmark layouts
# ---------------------------------------------------------------------------------------------

#: 68-point indices kept in the 49-point layout (49-point index i <- 68-point KEEP_68_TO_49[i]).
KEEP_68_TO_49 = np.array([i for i in range(17, 68) if i not in (60, 64)], dtype=np.int64)
#: 66-point indices kept in the 49-point layout (drop the jaw, 0-16).
KEEP_66_TO_49 = np.arange(17, 66, dtype=np.int64)


def _take(landmarks, idx: np.ndarray):
    if _is_torch(landmarks):
        return landmarks[..., torch.tensor(idx.tolist(), device=landmarks.device), :]
    return np.asarray(landmarks)[..., idx, :]


def landmarks68_to_49(l68):
    """``(..., 68, 2)`` iBUG landmarks -> ``(..., 49, 2)``: drop the jaw (0-16) and 60, 64."""
    _check_points(l68, 68, "68-point landmarks")
    return _take(l68, KEEP_68_TO_49)


def landmarks66_to_49(l66):
    """``(..., 66, 2)`` landmarks (68 without 60 and 64) -> ``(..., 49, 2)``: drop the jaw (0-16)."""
    _check_points(l66, 66, "66-point landmarks")
    return _take(l66, KEEP_66_TO_49)


def to_49(landmarks):
    """Convert ``(..., 49|66|68, 2)`` landmarks to the 49-point layout (49 is returned as is)."""
    _check_points(landmarks, (49, 66, 68))
    n = landmarks.shape[-2]
    if n == 68:
        return landmarks68_to_49(landmarks)
    if n == 66:
        return landmarks66_to_49(landmarks)
    return landmarks


# ---------------------------------------------------------------------------------------------
# Mirror permutations
# ---------------------------------------------------------------------------------------------

#: Left/right mirror pairs of the 68-point iBUG layout (0-based); unlisted points map to themselves.
MIRROR_PAIRS_68 = (
    # jaw
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
    # eyebrows
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
    # nose base
    (31, 35), (32, 34),
    # eyes
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    # outer lips
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),
    # inner lips
    (60, 64), (61, 63), (65, 67),
)  # fmt: skip


def _mirror_68() -> np.ndarray:
    p = np.arange(68, dtype=np.int64)
    for a, b in MIRROR_PAIRS_68:
        p[a], p[b] = b, a
    return p


#: Mirror permutation of the 68 points: after a horizontal flip, ``flipped[i] = mirror(orig[p[i]])``.
MIRROR_68: np.ndarray = _mirror_68()


def _mirror_49() -> np.ndarray:
    pos = {int(j): i for i, j in enumerate(KEEP_68_TO_49)}
    return np.array([pos[int(MIRROR_68[j])] for j in KEEP_68_TO_49], dtype=np.int64)


#: Mirror permutation of the 49 points (derived from :data:`MIRROR_68`); an involution.
MIRROR_49: np.ndarray = _mirror_49()
MIRROR_68.setflags(write=False)
MIRROR_49.setflags(write=False)
KEEP_68_TO_49.setflags(write=False)
KEEP_66_TO_49.setflags(write=False)


def flip_landmarks(landmarks, width: float):
    """Landmarks of the horizontally flipped image (``cv2.flip(img, 1)`` / ``img[:, ::-1]``).

    ``x -> width - 1 - x`` (0-based pixel-centre coordinates), then the points are permuted with
    :data:`MIRROR_49` or :data:`MIRROR_68` so that index i keeps its anatomical meaning (e.g.
    49-point 22 stays the inner corner of the eye on the image-left side). Accepts
    ``(..., 49|68, 2)``; numpy in, numpy out; torch in, torch out.
    """
    _check_points(landmarks, (49, 68))
    perm = MIRROR_49 if landmarks.shape[-2] == 49 else MIRROR_68
    if _is_torch(landmarks):
        out = landmarks[..., torch.tensor(perm.tolist(), device=landmarks.device), :].clone()
        out[..., 0] = (width - 1) - out[..., 0]
        return out
    out = np.array(np.asarray(landmarks)[..., perm, :], copy=True)
    if not np.issubdtype(out.dtype, np.floating):
        out = out.astype(np.float64)
    out[..., 0] = (width - 1) - out[..., 0]
    return out
