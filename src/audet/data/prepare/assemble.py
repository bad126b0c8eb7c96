"""Assembly of ``audet prepare``: list files, ``dataset.json`` and ``prepare_summary.json``.

Built from the per-sequence manifests only, in sorted order, so an interrupted-and-resumed run
writes the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from audet.data.meta import DATASET_META
from audet.data.prepare.partition import Partition
from audet.data.prepare.release import Release
from audet.data.prepare.types import SKIP_REASONS, SYNTH_META, PrepareOptions, SequenceSpec
from audet.data.prepare.worker import load_manifest, manifest_path
from audet.utils.io import write_json_atomic

__all__ = ["assemble", "summary_lines"]

logger = logging.getLogger(__name__)


def assemble(release: Release, specs: Sequence[SequenceSpec], aus: Sequence[int],
             partition: Partition, opts: PrepareOptions) -> dict:  # fmt: skip
    from audet._version import __version__
    from audet.data.listfile import write_list

    out = Path(opts.out)
    per_subject: dict[str, list[dict]] = {}
    reasons: Counter = Counter()
    examples: dict[str, list[str]] = {}
    subj_counts: dict[str, dict[str, int]] = {}
    empty_sequences = []
    for spec in specs:  # sorted by key
        m = load_manifest(manifest_path(out, release.name, spec))
        if m is None:  # pragma: no cover - all were just written
            raise RuntimeError(f"manifest of {spec.key} missing after processing")
        per_subject.setdefault(spec.subject, []).append(m)
        c = subj_counts.setdefault(spec.subject, {"written": 0, "skipped": 0})
        c["written"] += len(m["paths"])
        c["skipped"] += len(m["skip_reasons"])
        if len(m["paths"]) == 0:
            empty_sequences.append(spec.key)
        for name, r in zip(m["skip_names"].tolist(), m["skip_reasons"].tolist()):
            reasons[r] += 1
            ex = examples.setdefault(r, [])
            if len(ex) < 10:
                ex.append(name)

    def rows_of(subjects: Iterable[str]):
        ms = [m for s in subjects for m in per_subject.get(s, [])]
        if not ms:
            return [], np.zeros((0, 49, 2)), np.zeros((0, len(aus)), np.int8)
        return ([p for m in ms for p in m["paths"].tolist()],
                np.concatenate([m["landmarks"] for m in ms]),
                np.concatenate([m["labels"] for m in ms]))  # fmt: skip

    list_dir = out / "list"
    written_prefixes: dict[str, dict] = {}
    for prefix, (part_names, is_train) in partition.prefixes.items():
        subjects = [s for p in part_names for s in partition.parts.get(p, [])]
        paths, lm, lab = rows_of(subjects)
        if not paths:
            logger.warning("%s has no frames; its list files are not written", prefix)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            write_list(out, prefix, paths, lm, lab, write_weights=is_train)
        for w in caught:  # e.g. an AU without positives in a small training set
            logger.warning("note: %s: %s", prefix, w.message)
        written_prefixes[prefix] = {"parts": part_names, "frames": len(paths),
                                    "subjects": len(subjects), "train": is_train}  # fmt: skip
    # list files of this dataset left by an earlier run with other parts
    if list_dir.is_dir():
        for f in sorted(list_dir.iterdir()):
            m = re.match(rf"^({re.escape(release.name)}_.+?)_(path|land|AUoccur|weight|p_n_weight)\.txt$", f.name)  # fmt: skip
            if m and m.group(1) not in written_prefixes:
                f.unlink()
    folds = [f for f in partition.folds
             if f.get("test") in written_prefixes
             and (f.get("train") in written_prefixes or f.get("train_dataset"))]  # fmt: skip
    dropped = [f for f in partition.folds if f not in folds]
    for f in dropped:
        logger.warning("fold %s dropped (a prefix has no frames)", f)

    n_written = sum(c["written"] for c in subj_counts.values())
    n_skipped = sum(reasons.values())
    summary = {
        "dataset": release.name,
        "sequences": len(specs),
        "subjects": len(per_subject),
        "frames_written": n_written,
        "frames_skipped": n_skipped,
        "skipped_by_reason": dict(sorted(reasons.items())),
        "reason_descriptions": {r: SKIP_REASONS.get(r, r) for r in sorted(reasons)},
        "skipped_examples": {r: examples[r] for r in sorted(examples)},
        "sequences_without_frames": empty_sequences,
        "per_subject": dict(sorted(subj_counts.items())),
    }
    info = {
        "dataset": release.name,
        # synthetic faces (`audet synth`): a model trained on them says nothing about real faces
        "synthetic": (Path(opts.root) / SYNTH_META).is_file(),
        "aus": list(aus),
        "parts": partition.parts,
        "folds": folds,
        "fold_assignment": partition.assignment,
        **({"fold_notice": partition.notice} if partition.notice else {}),
        **partition.extra,
        "prefixes": written_prefixes,
        "images": "images",
        "image_format": opts.image_format,
        **({"jpeg_quality": opts.jpeg_quality} if opts.image_format == "jpg" else {}),
        "image_size": opts.size,
        "border": opts.border,
        "landmarks": "49 points (x, y), 0-based pixels of the aligned image",
        "alignment": "protocol section 2 (audet.geometry.align_face)",
        "source": {"root": opts.root, **release.source_info(opts)},
        "counts": {"subjects": len(per_subject), "sequences": len(specs),
                   "frames": n_written, "skipped": n_skipped},  # fmt: skip
        "summary": "prepare_summary.json",
        "audet_version": __version__,
    }
    write_json_atomic(out / "prepare_summary.json", summary)
    write_json_atomic(out / DATASET_META, info)
    return summary


def summary_lines(summary: dict) -> list[str]:
    """The summary of a run as text lines (frames written, skipped by reason)."""
    lines = [f"{summary['dataset']}: {summary['frames_written']} frames written, "
             f"{summary['frames_skipped']} skipped "
             f"({summary['subjects']} subjects, {summary['sequences']} sequences)"]  # fmt: skip
    for r, n in summary["skipped_by_reason"].items():
        lines.append(f"  skipped {n:>8d}  {r}: {SKIP_REASONS.get(r, '')}")
    return lines
