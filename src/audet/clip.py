"""The clip spec: which frames around frame t a temporal model sees (one parser for all of audet).

A model owns its clip (``model.preprocess["clip"]``; None = single frames). Two kinds:

- ``{"offsets": [-T, 0, T], "targets": "all" | "centre"}``: frames t-T, t, t+T by frame number
  (AUNet's neighbours); ``targets: centre`` = the labels of the centre frame only.
- ``{"length": t, "stride": s, "windows": "sliding" | "disjoint", "pad": True}``: runs of t listed
  frames of one sequence, every s-th (AAR's sequences). ``windows`` and ``pad`` say how the TRAINING
  data tiles a sequence into runs (:class:`audet.data.AUDataset`); they are the only keys a
  ``data.clip`` may add to the model's clip (:func:`served_clip`).

:func:`parse_clip` validates a spec and fills in its defaults; :func:`eval_clip` is the spec used to
score a clip model; :func:`clip_offsets` the frame offsets of one inference input.
"""
from __future__ import annotations

__all__ = ["parse_clip", "eval_clip", "clip_offsets", "run_centre", "served_clip", "SAMPLING_KEYS", "ClipMismatch"]

_WINDOWS = {"sliding": "sliding", "disjoint": "disjoint", "non-overlapping": "disjoint", "nonoverlapping": "disjoint"}

#: keys of a clip spec that only say how training runs are drawn (not what the model sees)
SAMPLING_KEYS = ("windows", "pad")


class ClipMismatch(ValueError):
    """A ``data.clip`` that disagrees with the model's clip (the message names both)."""


def parse_clip(clip: dict | None) -> dict | None:
    """Validate a clip spec and fill in its defaults (see the module docstring); None/{} -> None.

    ``{"offsets": [...]}`` -> ``{"offsets", "targets"}``; ``{"length": t}`` -> ``{"length",
    "stride", "windows", "pad"}``. A bad spec raises ValueError naming it.
    """
    if not clip:
        return None
    if not isinstance(clip, dict):
        raise ValueError(f"clip spec {clip!r} must be a mapping like {{length: 8}} or {{offsets: [-10, 0, 10]}}")
    c = dict(clip)
    if "offsets" in c and "length" in c:
        raise ValueError(f"clip spec {clip}: give 'offsets' or 'length', not both")
    if "offsets" in c:
        offsets = [int(o) for o in c["offsets"]]
        if not offsets or 0 not in offsets:
            raise ValueError(f"clip offsets {offsets} must include 0 (the centre frame)")
        targets = c.get("targets", "all")
        if targets not in ("all", "centre", "center"):
            raise ValueError(f"clip targets must be 'all' or 'centre', got {targets!r}")
        unknown = set(c) - {"offsets", "targets"}
        if unknown:
            raise ValueError(f"clip spec {clip}: unknown keys {sorted(unknown)}")
        return {"offsets": offsets, "targets": "centre" if targets == "center" else targets}
    if "length" in c:
        t, s = int(c["length"]), int(c.get("stride", 1))
        windows = _WINDOWS.get(str(c.get("windows", "sliding")).lower())
        if t < 1 or s < 1 or windows is None:
            raise ValueError(f"bad clip spec {clip}: length >= 1, stride >= 1, windows 'sliding' or 'disjoint'")
        unknown = set(c) - {"length", "stride", "windows", "pad"}
        if unknown:
            raise ValueError(f"clip spec {clip}: unknown keys {sorted(unknown)}")
        return {"length": t, "stride": s, "windows": windows, "pad": bool(c.get("pad", True))}
    raise ValueError(f"clip spec {clip} needs 'offsets' or 'length'")


def eval_clip(clip: dict | None) -> dict | None:
    """The clip spec used to SCORE a clip model: runs (``{"length": t}``) become disjoint padded
    windows, so every listed frame is in exactly one run; offsets clips are unchanged (one clip per
    frame, centred on it). The training-end test, ``audet evaluate`` and ``audet cv`` all use it."""
    c = parse_clip(clip)
    if c and "length" in c:
        return {**c, "windows": "disjoint", "pad": True}
    return c


def run_centre(length: int) -> int:
    """Position of the centre frame in a run of ``length`` frames: ``(length - 1) // 2`` (for an even
    length the earlier of the two middle frames). Training samples (``batch["centre"]``), the
    evaluator and inference (:func:`clip_offsets`) all use it."""
    return (int(length) - 1) // 2


def clip_offsets(clip: dict | None) -> tuple[list[int], int]:
    """Frame offsets of one inference input and the position of the centre (offset 0).

    ``{"offsets": [...]}`` is used as trained (e.g. AUNet's t-10, t, t+10); ``{"length": T,
    "stride": s}`` becomes the T frames ``t + (k - (T-1)//2) * s``, k = 0..T-1, in increasing
    order with the training spacing s, and the output at the centre position is used. No clip:
    ``([0], 0)``.
    """
    c = parse_clip(clip)
    if c is None:
        return [0], 0
    if "offsets" in c:
        return list(c["offsets"]), c["offsets"].index(0)
    t, s = c["length"], c["stride"]
    centre = run_centre(t)
    return [(k - centre) * s for k in range(t)], centre


def _text(clip: dict | None) -> str:
    if not clip:
        return "none (single frames)"
    return "{" + ", ".join(f"{k}: {v}" for k, v in clip.items()) + "}"


def served_clip(model_clip: dict | None, data_clip: dict | None, *, model: str = "the model") -> dict | None:
    """The clip the data serves a model: the model's clip, with ``windows``/``pad`` from
    ``data_clip`` (how training runs are drawn). Any other key of ``data_clip`` must agree with the
    model's: a disagreement raises :class:`ClipMismatch` naming both values, and so does a clip
    given for a single-frame model. The model's clip is changed through the model's own arguments
    (e.g. ``model.args.clip_length`` of AAR, or ``model.args.preprocess.clip``), which the
    checkpoint records and inference uses."""
    mine = parse_clip(model_clip)
    if not data_clip:
        return mine
    override = "; the model owns the clip: drop data.clip (it may only set windows/pad), or change the model's " \
               "through its arguments (model.args.preprocess: {clip: ...})"
    if mine is None:
        raise ClipMismatch(f"data.clip {_text(dict(data_clip))} disagrees with {model}'s clip "
                           f"{_text(None)}{override}")
    extra = {k: v for k, v in dict(data_clip).items() if k not in SAMPLING_KEYS}
    if "offsets" in mine and set(dict(data_clip)) & set(SAMPLING_KEYS):
        raise ClipMismatch(f"data.clip {_text(dict(data_clip))}: windows/pad apply to runs ({{length: t}}); "
                           f"{model}'s clip is {_text(mine)}{override}")
    if extra:
        asked = parse_clip(extra) if ("length" in extra or "offsets" in extra) else None
        shape = {k: v for k, v in mine.items() if k not in SAMPLING_KEYS}
        if asked is None or {k: v for k, v in asked.items() if k not in SAMPLING_KEYS} != shape:
            raise ClipMismatch(f"data.clip {_text(dict(data_clip))} disagrees with {model}'s clip "
                               f"{_text(shape)}{override}")
    return parse_clip({**mine, **dict(data_clip)})
