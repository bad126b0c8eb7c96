"""Subject-exclusive folds (protocol section 5) and validation splits.

:data:`FOLDS` holds the official 3-part subject partitions of BP4D and DISFA as data. A fold
``k`` of an ``n``-part dataset tests on one part and trains on the others; the list-file
prefixes follow the published naming (``BP4D_combine_1_2`` / ``BP4D_part3``), see
:func:`fold_prefixes`. The other benchmarks use fixed train/test splits instead of folds
(:data:`CONVENTIONS`).

Model selection must not look at the test fold (protocol section 6): :func:`split_validation`
carves whole subjects out of the training subjects for validation.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "FOLDS",
    "PART_FRAMES",
    "CONVENTIONS",
    "canonical_dataset",
    "fold_parts",
    "fold_prefixes",
    "num_folds",
    "assign_parts",
    "split_validation",
    "subjects_of_parts",
]

#: Official subject-exclusive parts (protocol section 5): dataset -> [part1, part2, part3].
FOLDS: dict[str, list[tuple[str, ...]]] = {
    "BP4D": [
        ("F001", "F002", "F008", "F009", "F010", "F016", "F018", "F023", "M001", "M004", "M007", "M008", "M012", "M014"),
        ("F003", "F005", "F011", "F013", "F020", "F022", "M002", "M005", "M010", "M011", "M013", "M016", "M017", "M018"),
        ("F004", "F006", "F007", "F012", "F014", "F015", "F017", "F019", "F021", "M003", "M006", "M009", "M015"),
    ],
    "DISFA": [
        ("SN001", "SN002", "SN009", "SN010", "SN016", "SN026", "SN027", "SN030", "SN032"),
        ("SN006", "SN011", "SN012", "SN013", "SN018", "SN021", "SN024", "SN028", "SN031"),
        ("SN003", "SN004", "SN005", "SN007", "SN008", "SN017", "SN023", "SN025", "SN029"),
    ],
}

#: Frames per official part as reported with the partitions (for checking a preparation).
PART_FRAMES: dict[str, tuple[int, ...]] = {
    "BP4D": (50601, 50166, 45809),
    "DISFA": (43173, 40344, 42627),
}

#: Benchmarks without k-fold parts: how train and test are defined, and the list prefixes used.
CONVENTIONS: dict[str, dict[str, str]] = {
    "GFT": {
        "protocol": "official subject split of the release: 78 training subjects, 18 test subjects",
        "train": "GFT_train",
        "test": "GFT_test",
    },
    "BP4D+": {
        "protocol": "train on all of BP4D, test on all of BP4D+ (cross-dataset)",
        "train": "BP4D_all",
        "test": "BP4D+_all",
    },
    "Aff-Wild2": {
        "protocol": "train on the official training set, test on the official validation set",
        "train": "Aff-Wild2_train",
        "test": "Aff-Wild2_val",
    },
}

_ALIASES = {
    "bp4d": "BP4D",
    "disfa": "DISFA",
    "gft": "GFT",
    "bp4d+": "BP4D+",
    "bp4dplus": "BP4D+",
    "bp4d_plus": "BP4D+",
    "aff-wild2": "Aff-Wild2",
    "affwild2": "Aff-Wild2",
    "aff_wild2": "Aff-Wild2",
}


def canonical_dataset(name: str) -> str:
    """``"bp4d"`` -> ``"BP4D"``, ``"affwild2"`` -> ``"Aff-Wild2"``; unknown names are returned unchanged."""
    return _ALIASES.get(str(name).strip().casefold(), str(name))


def num_folds(dataset: str) -> int:
    """3 for BP4D and DISFA; 1 for the fixed-split benchmarks (GFT, BP4D+, Aff-Wild2)."""
    ds = canonical_dataset(dataset)
    if ds in FOLDS:
        return len(FOLDS[ds])
    if ds in CONVENTIONS:
        return 1
    raise ValueError(f"no folds known for dataset {dataset!r}; known: {', '.join([*FOLDS, *CONVENTIONS])}")


def fold_parts(n_parts: int, k: int) -> tuple[tuple[int, ...], int]:
    """``(train parts, test part)`` (1-based part numbers) of fold ``k`` (0-based).

    Fold 0 tests on the LAST part and folds count down, matching the published ordering
    ``[combine_1_2 -> part3, combine_1_3 -> part2, combine_2_3 -> part1]`` for ``n_parts=3``.
    """
    if n_parts < 2:
        raise ValueError(f"need at least 2 parts, got {n_parts}")
    if not 0 <= k < n_parts:
        raise ValueError(f"fold index {k} out of range 0..{n_parts - 1}")
    test = n_parts - k
    return tuple(p for p in range(1, n_parts + 1) if p != test), test


def fold_prefixes(dataset: str, k: int, n_parts: int | None = None) -> tuple[str, str]:
    """List-file prefixes ``(train, test)`` of fold ``k`` (0-based) of ``dataset``.

    >>> fold_prefixes("BP4D", 0)
    ('BP4D_combine_1_2', 'BP4D_part3')
    >>> fold_prefixes("DISFA", 2)
    ('DISFA_combine_2_3', 'DISFA_part1')

    Datasets with a fixed split (GFT, BP4D+, Aff-Wild2) have one fold, ``k = 0``, with the
    prefixes of :data:`CONVENTIONS`. For other datasets (e.g. ``"SYNTH"`` with parts from
    :func:`assign_parts`) pass ``n_parts``; the prefix starts with the dataset name as given.
    """
    ds = canonical_dataset(dataset)
    if ds in CONVENTIONS and n_parts is None:
        if k != 0:
            raise ValueError(f"{ds} has a single fixed train/test split: fold index must be 0, got {k}")
        return CONVENTIONS[ds]["train"], CONVENTIONS[ds]["test"]
    if n_parts is None:
        if ds not in FOLDS:
            raise ValueError(f"no official parts for {dataset!r}: pass n_parts= (see assign_parts)")
        n_parts = len(FOLDS[ds])
    train, test = fold_parts(n_parts, k)
    return f"{ds}_combine_{'_'.join(map(str, train))}", f"{ds}_part{test}"


def _unique_sorted(subjects: Iterable[str]) -> list[str]:
    out = sorted({str(s) for s in subjects})
    return out


def assign_parts(
    subjects: Iterable[str],
    n_parts: int = 3,
    seed: int = 0,
    frames: Mapping[str, int] | None = None,
) -> list[list[str]]:
    """Partition subjects into ``n_parts`` subject-exclusive parts (datasets without official folds).

    Deterministic for a given set of subjects and seed (the input order does not matter).
    Without ``frames``, parts differ in size by at most one subject (seeded shuffle, then dealt
    round-robin). With ``frames`` (subject -> frame count), subjects are placed largest first
    into the part with the fewest frames so far (ties broken by the seeded order), balancing frames.

    Returns:
        ``n_parts`` sorted lists of subject names.
    """
    subs = _unique_sorted(subjects)
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    if len(subs) < n_parts:
        raise ValueError(f"cannot split {len(subs)} subjects into {n_parts} non-empty parts")
    order = [subs[i] for i in np.random.default_rng(seed).permutation(len(subs))]
    parts: list[list[str]] = [[] for _ in range(n_parts)]
    if frames is None:
        for i, s in enumerate(order):
            parts[i % n_parts].append(s)
    else:
        missing = [s for s in subs if s not in frames]
        if missing:
            raise ValueError(f"frames has no count for subjects {missing}")
        rank = {s: i for i, s in enumerate(order)}
        load = [0] * n_parts
        for s in sorted(order, key=lambda s: (-int(frames[s]), rank[s])):
            # fewest frames, then fewest subjects, then lowest index
            j = min(range(n_parts), key=lambda j: (load[j], len(parts[j]), j))
            parts[j].append(s)
            load[j] += int(frames[s])
        if any(not p for p in parts):  # pragma: no cover - impossible when len(subs) >= n_parts
            raise ValueError("a part ended up empty")
    return [sorted(p) for p in parts]


def split_validation(
    subjects: Iterable[str],
    fraction: float = 0.15,
    seed: int = 0,
    *,
    n: int | None = None,
) -> tuple[list[str], list[str]]:
    """Hold out whole training SUBJECTS for validation.

    Args:
        subjects: the training subjects (duplicates allowed, e.g. one entry per frame).
        fraction: share of subjects to hold out, in (0, 1); ``round(fraction * S)`` subjects,
            at least 1 and at most ``S - 1``. An int >= 1 is read as a number of subjects.
        seed: the split is a seeded permutation of the sorted unique subjects (input order does
            not matter).
        n: number of validation subjects (overrides ``fraction``).

    Returns:
        ``(train_subjects, val_subjects)``, both sorted and disjoint.

    Raises:
        ValueError: with fewer than two training subjects, or an out-of-range fraction / n.
    """
    subs = _unique_sorted(subjects)
    S = len(subs)
    if S < 2:
        raise ValueError(
            f"cannot split a validation set of whole subjects from {S} training subject(s): need at least 2"
        )
    if n is None and isinstance(fraction, (int, np.integer)) and not isinstance(fraction, bool) and fraction >= 1:
        n = int(fraction)
    if n is None:
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        n = int(round(float(fraction) * S))
        n = min(max(n, 1), S - 1)
    elif not 1 <= int(n) <= S - 1:
        raise ValueError(f"n must be between 1 and {S - 1} for {S} subjects, got {n}")
    n = int(n)
    perm = np.random.default_rng(seed).permutation(S)
    val = sorted(subs[i] for i in perm[:n])
    vs = set(val)
    return [s for s in subs if s not in vs], val


def subjects_of_parts(dataset: str, parts: Sequence[int]) -> list[str]:
    """Sorted subjects of the given 1-based official parts, e.g. ``subjects_of_parts("BP4D", [1, 2])``."""
    ds = canonical_dataset(dataset)
    if ds not in FOLDS:
        raise ValueError(f"no official parts for {dataset!r}")
    out: list[str] = []
    for p in parts:
        if not 1 <= p <= len(FOLDS[ds]):
            raise ValueError(f"{ds} has parts 1..{len(FOLDS[ds])}, got {p}")
        out.extend(FOLDS[ds][p - 1])
    return sorted(out)
