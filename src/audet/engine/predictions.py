"""Scoring per-frame predictions (audet's or another tool's) against a prepared split's labels.

``audet score`` reads a table of per-frame AU outputs, matches its rows to the labelled frames of a
prepared split by (sequence, frame number), and scores it under the protocol of ``audet
evaluate`` (F1-frame per AU at 0.5 over the known labels, plus F1-micro, ROC-AUC and average
precision where the tool gives scores). Readers (:func:`read_predictions`, chosen by the columns):

``audet``   ``AU<nn>_p`` probabilities: ``audet evaluate --save-predictions`` (columns
            ``sequence, frame``) and ``audet predict`` (``file, frame, face_id, success, ...``).
``openface`` OpenFace 2.x ``FeatureExtraction`` CSV: ``AU<nn>_c`` presence (0/1), or with a stated
            ``threshold`` the intensity ``AU<nn>_r >= threshold`` (and ``_r`` as the ranking
            score); header names may carry leading spaces, as OpenFace writes them.
``pyfeat``  py-feat's CSV (``Fex``): ``AU<nn>`` probabilities with ``input`` and ``frame``.

Where the rows sit: a ``sequence`` column names the data's sequence (``F001/T1``); else a
``file``/``input`` column holding image paths gives sequence (the trailing folders) and frame (the
number in the file name); else the sequence is found in the file's own name or the video's (the
data sequence whose name, ``/`` written as ``_``, occurs in it) and the frame is ``frame`` +
``frame_offset``. Several faces in one frame (``face_id``): the most confident row is kept.
Rows with ``success == 0`` are frames where the tool found no face: counted and, like labelled
frames without any row, left out of the score unless ``missing="absent"`` (scored as no AU).

Errors (one line each): no row matches a labelled frame; two rows for the same frame; a NaN or
out-of-range probability in a row with a face.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["Predictions", "read_predictions", "split_frames", "score_predictions", "detect_format"]

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_AU_RE = {"audet": re.compile(r"^AU(\d+)_p$"), "openface_c": re.compile(r"^AU(\d+)_c$"),
          "openface_r": re.compile(r"^AU(\d+)_r$"), "pyfeat": re.compile(r"^AU(\d+)$")}


@dataclass
class Predictions:
    """Rows of a predictions table mapped to the data's keys.

    ``sequence`` (names), ``frame`` (int64), ``decisions`` ``{au: bool array}``, ``scores``
    ``{au: float array}`` (empty for a tool that gives only decisions), ``face`` (bool: the tool
    found a face), ``kind``, ``notes``."""

    sequence: np.ndarray
    frame: np.ndarray
    decisions: dict[int, np.ndarray]
    scores: dict[int, np.ndarray]
    face: np.ndarray
    kind: str
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def aus(self) -> list[int]:
        return sorted(self.decisions)


def split_frames(root, prefix: str) -> pd.DataFrame:
    """The labelled frames of ``root``/``prefix``: ``sequence``, ``frame``, ``subject`` and one
    ``AU<n>`` column per AU of the data (0/1, 9 = missing), in list order."""
    from audet.data.listfile import read_list
    from audet.data.meta import data_aus

    lists = read_list(root, prefix, check_images=False)
    info = lists.info
    aus = data_aus(root, lists.num_aus, info[0].dataset if len(lists) else None, required=True)
    df = pd.DataFrame({"sequence": [p.sequence for p in info], "frame": [int(p.frame) for p in info],
                       "subject": [p.subject for p in info]})
    for j, a in enumerate(aus):
        df[f"AU{a}"] = lists.labels[:, j].astype(np.int64)
    return df


def detect_format(columns: Sequence[str], threshold: float | None = None) -> str:
    """``"audet"``, ``"openface_c"``, ``"openface_r"`` or ``"pyfeat"`` from a table's columns."""
    cols = [c.strip() for c in columns]
    has = {k: any(rx.match(c) for c in cols) for k, rx in _AU_RE.items()}
    if has["audet"]:
        return "audet"
    if has["openface_r"] and threshold is not None:
        return "openface_r"
    if has["openface_c"]:
        return "openface_c"
    if has["openface_r"]:
        raise ValueError("the table has only AU intensities (AUnn_r, OpenFace): state the presence threshold "
                         "with --threshold (e.g. 1.0 on OpenFace's 0-5 scale)")
    if has["pyfeat"]:
        return "pyfeat"
    raise ValueError("no AU columns found (expected AUnn_p of audet, AUnn_c / AUnn_r of OpenFace or AUnn of py-feat)")


def _match_name(name: str, sequences: Sequence[str]) -> str | None:
    """The data sequence whose name (``/`` as ``_``) occurs in ``name`` (longest wins)."""
    low = name.lower()
    hits = [s for s in sequences if s.replace("/", "_").lower() in low or s.lower() in low]
    if not hits:
        return None
    hits.sort(key=len, reverse=True)
    if len(hits) > 1 and len(hits[0]) == len(hits[1]):
        raise ValueError(f"{name!r} matches several sequences of the data ({hits[0]}, {hits[1]}); "
                         "add a 'sequence' column")
    return hits[0]


def _from_image_path(path: str, sequences: Sequence[str]) -> tuple[str | None, int | None]:
    p = Path(str(path).replace("\\", "/"))
    m = re.search(r"(\d+)$", p.stem)
    frame = int(m.group(1)) if m else None
    parents = list(p.parent.parts)
    for s in sorted(sequences, key=lambda s: -len(s.split("/"))):
        parts = s.split("/")
        if len(parents) >= len(parts) and parents[-len(parts):] == parts:
            return s, frame
    return None, frame


def read_predictions(paths: Sequence[str | Path], sequences: Sequence[str], *, threshold: float | None = None,
                     frame_offset: int = 0) -> Predictions:
    """Read one or more prediction CSVs (or a folder of them) into :class:`Predictions` keyed by the
    data's ``sequences`` (see the module docstring)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".csv", ".parquet"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such predictions file or folder")
    if not files:
        raise ValueError(f"{', '.join(map(str, paths))}: no .csv file to score")
    parts, kinds, notes = [], set(), []
    for f in files:
        df = pd.read_parquet(f) if f.suffix.lower() == ".parquet" else pd.read_csv(f, skipinitialspace=True)
        df.columns = [str(c).strip() for c in df.columns]
        kind = detect_format(df.columns, threshold)
        kinds.add(kind)
        parts.append(_rows_of(df, f, kind, sequences, threshold, frame_offset))
    if len(kinds) > 1:
        raise ValueError(f"the prediction files mix formats ({', '.join(sorted(kinds))}); score them separately")
    kind = kinds.pop()
    aus = sorted(set().union(*(set(p["dec"]) for p in parts)))
    for p in parts:
        lacking = [a for a in aus if a not in p["dec"]]
        if lacking:
            raise ValueError(f"{p['file']}: lacks AU column(s) {lacking} that other files have")
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    dec = {a: np.concatenate([p["dec"][a] for p in parts]) for a in aus}
    sc = {a: np.concatenate([p["score"][a] for p in parts]) for a in aus if all(a in p["score"] for p in parts)}
    for p in parts:
        notes += p["notes"]
    return Predictions(cat("seq"), cat("frame"), dec, sc, cat("face"), kind, ", ".join(map(str, files)), notes)


def _rows_of(df: pd.DataFrame, f: Path, kind: str, sequences, threshold, frame_offset) -> dict:
    n = len(df)
    notes: list[str] = []
    # where the rows sit
    if "sequence" in df:
        seq = df["sequence"].astype(str).to_numpy()
        frame = df["frame"].to_numpy(dtype=np.int64) + int(frame_offset)
    else:
        col = "file" if "file" in df else "input" if "input" in df else None
        vals = df[col].astype(str) if col else None
        if vals is not None and len(vals) and vals.str.lower().str.endswith(_IMAGE_EXT).all():
            got = [_from_image_path(v, sequences) for v in vals]
            seq = np.array([g[0] if g[0] is not None else "" for g in got], dtype=object)
            frame = np.array([g[1] if g[1] is not None else -1 for g in got], dtype=np.int64) + int(frame_offset)
        else:
            names = vals.unique().tolist() if vals is not None else []
            name = names[0] if len(names) == 1 else f.stem
            if len(names) > 1:
                found = {v: _match_name(Path(v).stem, sequences) for v in names}
                seq = vals.map(lambda v: found[v] or "").to_numpy(dtype=object)
            else:
                s = _match_name(Path(name).stem, sequences) or _match_name(f.stem, sequences)
                if s is None:
                    raise ValueError(f"{f}: cannot tell which sequence of the data it holds (no sequence name like "
                                     f"{sequences[0].replace('/', '_')!r} in {Path(name).name!r}); add a "
                                     "'sequence' column")
                seq = np.full(n, s, dtype=object)
            if "frame" not in df:
                raise ValueError(f"{f}: no 'frame' column")
            frame = df["frame"].to_numpy(dtype=np.int64) + int(frame_offset)
    face = np.ones(n, bool)
    if "success" in df:
        face = df["success"].fillna(0).to_numpy() > 0
    # several faces per frame: the most confident one
    keep = np.ones(n, bool)
    if "face_id" in df and n:
        conf = df["confidence"].fillna(-1).to_numpy(dtype=np.float64) if "confidence" in df else np.zeros(n)
        order = np.lexsort((-conf, ~face, frame, seq.astype(str)))
        s_o, f_o = seq.astype(str)[order], frame[order]
        first = np.ones(n, bool)
        first[1:] = (s_o[1:] != s_o[:-1]) | (f_o[1:] != f_o[:-1])
        # two rows with the same face_id in one frame are duplicates, not several faces
        ids = df["face_id"].to_numpy()
        key = pd.Series(list(zip(seq.astype(str), frame, ids)))
        if key.duplicated().any():
            i = int(np.flatnonzero(key.duplicated().to_numpy())[0])
            raise ValueError(f"{f}: duplicate rows for sequence {seq[i]!r} frame {int(frame[i])} face {ids[i]}")
        keep = np.zeros(n, bool)
        keep[order[first]] = True
        if (~keep).sum():
            notes.append(f"{f.name}: {int((~keep).sum())} rows of further faces in a frame dropped (kept the most "
                         "confident face)")
    dec: dict[int, np.ndarray] = {}
    score: dict[int, np.ndarray] = {}
    rx = _AU_RE[kind]
    for c in df.columns:
        m = rx.match(c)
        if not m:
            continue
        a = int(m.group(1))
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(v) & face
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{f}: {int(bad.sum())} NaN value(s) in {c} (first at data row {i + 2}) in rows with a "
                             "face; fix or drop those rows")
        if kind in ("audet", "pyfeat") and ((v[face] < 0) | (v[face] > 1)).any():
            raise ValueError(f"{f}: {c} has values outside [0, 1]; expected probabilities")
        v = np.where(face, v, 0.0)
        if kind == "openface_r":
            dec[a] = v >= float(threshold)
            score[a] = v
        elif kind == "openface_c":
            dec[a] = v >= 0.5
        else:
            dec[a] = v >= 0.5
            score[a] = v
    sel = lambda x: x[keep]  # noqa: E731
    return {"file": f, "seq": sel(seq.astype(object)), "frame": sel(frame), "face": sel(face),
            "dec": {a: sel(v) for a, v in dec.items()}, "score": {a: sel(v) for a, v in score.items()},
            "notes": notes}


def score_predictions(pred: Predictions, data: pd.DataFrame, *, missing: str = "skip", name: str = "predictions",
                      data_name: str = "data") -> dict:
    """Score ``pred`` against ``data`` (:func:`split_frames`). Returns ``{"table", "aus",
    "missing_aus", "n_scored", "n_data", "unmatched_rows", "data_without_row", "no_face",
    "f1", "per_au", "f1_micro", "auc", "ap", "notes"}``."""
    from audet.metrics import average_precision_per_au, au_report, f1_frame, f1_micro, roc_auc_per_au

    if missing not in ("skip", "absent"):
        raise ValueError(f"missing={missing!r}: 'skip' or 'absent'")
    data_aus = [int(c[2:]) for c in data.columns if c.startswith("AU")]
    dkey = pd.MultiIndex.from_arrays([data["sequence"].astype(str), data["frame"].astype(np.int64)])
    pkey = pd.MultiIndex.from_arrays([pred.sequence.astype(str), pred.frame.astype(np.int64)])
    if pkey.has_duplicates:
        i = int(np.flatnonzero(pkey.duplicated())[0])
        raise ValueError(f"{name}: two rows for sequence {pred.sequence[i]!r} frame {int(pred.frame[i])} "
                         "(duplicate frames)")
    pos = dkey.get_indexer(pkey)  # data row of each prediction row, -1 when none
    matched = pos >= 0
    if not matched.any():
        ex = f"{pred.sequence[0]!r} frame {int(pred.frame[0])}" if len(pkey) else "none"
        raise ValueError(f"{name}: none of its {len(pkey)} rows matches a labelled frame of {data_name} "
                         f"(first row: sequence {ex}; the data has e.g. {data['sequence'].iloc[0]!r} frame "
                         f"{int(data['frame'].iloc[0])}); wrong --data/--fold, or a frame offset (--frame-offset)?")
    have = np.zeros(len(data), bool)
    have[pos[matched]] = True
    face = np.zeros(len(data), bool)
    face[pos[matched]] = pred.face[matched]
    scored = have & face if missing == "skip" else np.ones(len(data), bool)
    aus = [a for a in data_aus if a in pred.decisions]
    lacking = [a for a in data_aus if a not in pred.decisions]
    labels = data[[f"AU{a}" for a in data_aus]].to_numpy()[scored]
    dec = np.zeros((len(data), len(data_aus)))
    sc = np.full((len(data), len(data_aus)), np.nan)
    for j, a in enumerate(data_aus):
        if a in pred.decisions:
            d = np.zeros(len(data))
            d[pos[matched]] = pred.decisions[a][matched]
            dec[:, j] = d
            if a in pred.scores:
                s = np.zeros(len(data))
                s[pos[matched]] = pred.scores[a][matched]
                sc[:, j] = s
    dec, sc = dec[scored], sc[scored]
    cols = [data_aus.index(a) for a in aus]
    # F1 of the decisions (the tool's own scores at 0.5 give the same decisions for probabilities)
    probs = sc[:, cols] if len(pred.scores) == len(pred.decisions) and pred.kind in ("audet", "pyfeat") else dec[:, cols]
    table = au_report(labels[:, cols], probs, aus)
    table.index = [name]
    table.index.name = "F1"
    full = pd.DataFrame(np.nan, index=table.index, columns=[f"AU{a}" for a in data_aus] + ["Avg"])
    for c in table.columns:
        full[c] = table[c]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="f1_frame")
        f1v = np.asarray(f1_frame(labels[:, cols], probs), dtype=np.float64)  # as AUEvaluator computes it
    f1 = {int(a): float(v) for a, v in zip(aus, f1v)}
    out = {"table": full, "aus": aus, "missing_aus": lacking, "n_scored": int(scored.sum()), "n_data": len(data),
           "unmatched_rows": int((~matched).sum()), "data_without_row": int((~have).sum()),
           "no_face": int((have & ~face).sum()),
           "f1": float(np.nanmean(f1v)) if np.isfinite(f1v).any() else float("nan"), "per_au": f1,
           "f1_micro": f1_micro(labels[:, cols], probs), "kind": pred.kind, "notes": list(pred.notes)}
    sc_cols = [j for j in cols if np.isfinite(sc[:, j]).all()]
    if sc_cols:
        auc = roc_auc_per_au(labels[:, sc_cols], sc[:, sc_cols])
        ap = average_precision_per_au(labels[:, sc_cols], sc[:, sc_cols])
        out["auc"] = {data_aus[j]: float(v) for j, v in zip(sc_cols, auc)}
        out["ap"] = {data_aus[j]: float(v) for j, v in zip(sc_cols, ap)}
    return out
