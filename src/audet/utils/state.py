"""State-dict checks shared by checkpoint loading and checkpoint conversion."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["describe_mismatch"]


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v.shape) if hasattr(v, "shape") else tuple(v)


def _few(xs: Sequence[str], limit: int) -> str:
    return ", ".join(xs[:limit]) + (f", ... ({len(xs)} in all)" if len(xs) > limit else "")


def describe_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any], limit: int = 6) -> str:
    """Why the tensors ``got`` (a checkpoint) do not fit ``expected`` (the model); ``""`` if they do.

    Both map tensor names to shapes (tuples, ``torch.Size``) or to tensors/arrays (their
    ``.shape`` is used). The message has up to three ``"; "``-separated parts, each listing at
    most ``limit`` names (then ``", ... (N in all)"``), in the order of the mappings::

        missing from the checkpoint: a.weight, a.bias; unexpected in the checkpoint: z.weight;
        wrong shapes: b.weight: checkpoint (4, 3) vs model (8, 3)
    """
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = []
    for k, v in expected.items():
        if k in got and _shape(got[k]) != _shape(v):
            shapes.append(f"{k}: checkpoint {_shape(got[k])} vs model {_shape(v)}")
    parts = []
    if missing:
        parts.append(f"missing from the checkpoint: {_few(missing, limit)}")
    if unexpected:
        parts.append(f"unexpected in the checkpoint: {_few(unexpected, limit)}")
    if shapes:
        parts.append(f"wrong shapes: {_few(shapes, limit)}")
    return "; ".join(parts)
