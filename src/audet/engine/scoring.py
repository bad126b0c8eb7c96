"""``AUEvaluator``: the one evaluation path (detectron2's DatasetEvaluator pattern).

``reset()`` -> ``process(batch, logits)`` for every batch -> ``evaluate()``. The training-end test,
validation during training, ``audet evaluate``, ``audet cv`` and the benchmarks all score with it,
so they score the same frames the same way.

Every labelled frame is scored exactly once. Each prediction is keyed by ``(sequence, frame)``
(``batch["sequence"]``/``batch["frame"]``, or ``batch["frames"]`` of a clip; ``batch["index"]``
when the data has no sequences): a clip model's per-frame outputs (``B x T x A``) are unrolled and
de-duplicated, preferring the prediction made at the clip's centre position (``batch["centre"]``)
and otherwise the first one seen -- padded positions of a short run repeat the last real frame, so
they are dropped. A clip model that outputs only the centre frame (``B x A``) is keyed by the
centre frame. Under DDP the task all-gathers :meth:`state` and calls :meth:`merge`, which also
removes the repeats DistributedSampler pads with.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from audet.clip import run_centre

__all__ = ["AUEvaluator"]

_FIELDS = ("probs", "labels", "mask", "seq", "frame", "prio", "order")


class AUEvaluator:
    """Per-AU F1-frame over de-duplicated frames.

    Args:
        aus: the AU numbers of the scored columns (names in the result).
        columns: which columns of the model's logits to score (default all, in order).
        convention: the F1 convention of :func:`audet.metrics.f1_frame` (``"paper"``, the
            default and every audet table's; ``"aunet"`` or ``"cis"`` reproduce the published
            codes' scores, docs/metrics.md).
    """

    def __init__(self, aus: Sequence[int], columns: Sequence[int] | None = None, convention: str = "paper"):
        from audet.metrics import _check_convention

        _check_convention(convention)
        self.aus = [int(a) for a in aus]
        self.columns = None if columns is None else [int(c) for c in columns]
        self.convention = convention
        self.reset()

    def reset(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in _FIELDS}
        self._count = 0

    # ------------------------------------------------------------------ accumulate
    @torch.no_grad()
    def process(self, batch: dict, logits: torch.Tensor) -> None:
        """Add one batch: ``logits`` ``(B, A)`` or ``(B, T, A)`` of the model for ``batch``."""
        logits = logits.detach().float()
        if self.columns is not None:
            logits = logits.index_select(-1, torch.as_tensor(self.columns, device=logits.device))
        probs = torch.sigmoid(logits).cpu()
        labels = batch["labels"].detach().float().cpu()
        mask = batch["mask"].detach().float().cpu()
        B = probs.shape[0]
        seq = _col(batch, "sequence", B)
        if probs.ndim == 3:
            T = probs.shape[1]
            centre = batch.get("centre")
            cpos = (centre.reshape(-1).cpu().long() if isinstance(centre, torch.Tensor)
                    else torch.full((B,), run_centre(T), dtype=torch.long))
            if labels.ndim == 2:  # centre-frame targets: score the centre prediction
                probs = probs[torch.arange(B), cpos]
                frame, prio = self._frame_keys(batch, B), torch.zeros(B, dtype=torch.long)
            else:
                frames = batch.get("frames")
                if frames is None:  # no frame numbers: key every clip position separately
                    frames = self._frame_keys(batch, B)[:, None] * T + torch.arange(T)
                frame = frames.reshape(B, T).cpu().long().reshape(-1)
                prio = (torch.arange(T)[None, :] != cpos[:, None]).long().reshape(-1)
                seq = seq[:, None].expand(B, T).reshape(-1)
                probs, labels, mask = (t.reshape(B * T, -1) for t in (probs, labels, mask))
        else:
            frame, prio = self._frame_keys(batch, B), torch.zeros(B, dtype=torch.long)
        n = probs.shape[0]
        order = torch.arange(self._count, self._count + n, dtype=torch.long)
        self._count += n
        for k, v in zip(_FIELDS, (probs, labels, mask, seq, frame, prio, order)):
            self._parts[k].append(v.numpy())

    def _frame_keys(self, batch: dict, B: int) -> torch.Tensor:
        for key in ("frame", "index"):  # frame number within its sequence, else the list row
            v = batch.get(key)
            if isinstance(v, torch.Tensor) and v.numel() == B:
                return v.reshape(-1).cpu().long()
        return torch.arange(self._count, self._count + B, dtype=torch.long)  # no key: all distinct

    # ------------------------------------------------------------------ state / DDP
    def state(self) -> dict[str, np.ndarray]:
        """The accumulated arrays (for all-gathering across processes)."""
        A = len(self.aus) if self.columns is None else len(self.columns)
        out = {}
        for k in _FIELDS:
            if self._parts[k]:
                out[k] = np.concatenate(self._parts[k])
            elif k in ("probs", "labels", "mask"):
                out[k] = np.zeros((0, A), np.float32)
            else:
                out[k] = np.zeros((0,), np.int64)
        return out

    def merge(self, states: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace the accumulated arrays by the union of several processes' :meth:`state`."""
        self.reset()
        for rank, st in enumerate(states):
            for k in _FIELDS:
                v = np.asarray(st[k])
                if k == "order":  # keep rank-major order for ties
                    v = v.astype(np.int64) + rank * (1 << 40)
                self._parts[k].append(v)

    # ------------------------------------------------------------------ result
    def _kept(self, st: dict[str, np.ndarray]) -> np.ndarray:
        """Rows of ``st`` that survive de-duplication, in first-seen order."""
        seq, frame, prio, order = (st[k].astype(np.int64) for k in ("seq", "frame", "prio", "order"))
        idx = np.lexsort((order, prio, frame, seq))  # by key, then centre first, then first seen
        s, f = seq[idx], frame[idx]
        first = np.ones(len(idx), bool)
        first[1:] = (s[1:] != s[:-1]) | (f[1:] != f[:-1])
        keep = idx[first]
        return keep[np.argsort(order[keep], kind="stable")]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probs, labels, mask)`` of the de-duplicated frames, in first-seen order."""
        st = self.state()
        if st["probs"].shape[0] == 0:
            return st["probs"], st["labels"], st["mask"]
        keep = self._kept(st)
        return st["probs"][keep], st["labels"][keep], st["mask"][keep]

    def sequences(self) -> np.ndarray:
        """The sequence id of each row of :meth:`arrays` (block-bootstrap groups)."""
        st = self.state()
        return st["seq"][self._kept(st)] if st["probs"].shape[0] else st["seq"]

    def keys(self) -> np.ndarray:
        """``(n, 2)`` int64: the (sequence, frame) key of each row of :meth:`arrays`, to align the
        rows of two evaluators (e.g. a frame model and a clip model) on the same frames."""
        st = self.state()
        if st["probs"].shape[0] == 0:
            return np.zeros((0, 2), np.int64)
        keep = self._kept(st)
        return np.stack([st["seq"][keep], st["frame"][keep]], axis=1).astype(np.int64)

    def evaluate(self, thresholds: Sequence[float] | None = None) -> dict:
        """The scores of the de-duplicated frames.

        ``{"f1": mean over AUs, "per_au": {au: f1}, "n": scored frames, "f1_micro", "auc": {au},
        "ap": {au}, "auc_mean", "ap_mean", "probs", "labels", "mask"}``: F1-frame at 0.5 (the
        headline), F1-micro over every (frame, AU) decision, per-AU ROC-AUC and average precision
        (:mod:`audet.metrics`). With ``thresholds`` (one per scored AU, chosen on the VALIDATION
        split: :func:`audet.metrics.choose_thresholds`) also ``"tuned"``: ``{"f1", "per_au",
        "f1_micro", "thresholds": {au: t}}`` -- beside the 0.5 scores, never instead of them.
        """
        from audet.metrics import average_precision_per_au, f1_frame, f1_micro, roc_auc_per_au

        probs, labels, mask = self.arrays()
        A = len(self.aus)
        nan_map = {a: float("nan") for a in self.aus}
        if probs.shape[0] == 0:
            return {"f1": float("nan"), "per_au": dict(nan_map), "n": 0, "f1_micro": float("nan"),
                    "auc": dict(nan_map), "ap": dict(nan_map), "auc_mean": float("nan"), "ap_mean": float("nan"),
                    "probs": probs, "labels": labels, "mask": mask}

        def f1_at(t):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                warnings.filterwarnings("ignore", message="f1_frame")
                return np.asarray(f1_frame(labels, probs, mask=mask, convention=self.convention, threshold=t),
                                  dtype=np.float64).reshape(A)

        f1 = f1_at(0.5)
        auc = roc_auc_per_au(labels, probs, mask=mask)
        ap = average_precision_per_au(labels, probs, mask=mask)
        out = {"f1": _nanmean(f1), "per_au": _per_au(self.aus, f1), "n": int(probs.shape[0]),
               "f1_micro": f1_micro(labels, probs, mask=mask),
               "auc": _per_au(self.aus, auc), "ap": _per_au(self.aus, ap),
               "auc_mean": _nanmean(auc), "ap_mean": _nanmean(ap),
               "probs": probs, "labels": labels, "mask": mask}
        if thresholds is not None:
            t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
            if t.shape[0] != A:
                raise ValueError(f"{t.shape[0]} thresholds for {A} AUs")
            ft = f1_at(t)
            out["tuned"] = {"f1": _nanmean(ft), "per_au": _per_au(self.aus, ft),
                            "f1_micro": f1_micro(labels, probs, mask=mask, threshold=t),
                            "thresholds": _per_au(self.aus, t)}
        return out

    def table(self, name: str = "F1"):
        """The result as the papers' table (F1 in percent, AU columns and Avg); see :mod:`audet.metrics`."""
        from audet.metrics import au_report

        probs, labels, mask = self.arrays()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="f1_frame")
            table = au_report(labels, probs, self.aus, mask=mask, convention=self.convention)
        table.index = [name]
        table.index.name = "F1"
        return table


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _per_au(aus: Sequence[int], values) -> dict[int, float]:
    return {int(a): float(v) for a, v in zip(aus, np.asarray(values, dtype=np.float64).reshape(-1))}


def _col(batch: dict, key: str, B: int) -> torch.Tensor:
    v = batch.get(key)
    if isinstance(v, torch.Tensor) and v.numel() == B:
        return v.reshape(-1).cpu().long()
    return torch.full((B,), -1, dtype=torch.long)
