"""The uniform interface every audet model follows.

A model maps images (``B x 3 x H x W``) or clips (``B x T x 3 x H x W``) to a
:class:`ModelOutput`: per-AU logits plus named auxiliary tensors its losses need. The training
engine never special-cases a method: it calls

- ``model(images)`` -> :class:`ModelOutput`,
- ``model.loss_terms(output, batch, ctx)`` -> ``{name: scalar tensor}`` (summed by the engine,
  each already multiplied by its trade-off weight, e.g. ``lambda_a * L_a``),
- the state hooks ``on_train_epoch_start/on_train_batch_end/on_train_epoch_end`` for state
  that lives across batches (AC2D sample prototypes, CISNet subject dictionary). Such state is
  kept in registered buffers so that checkpoints and DDP carry it without special code.

``batch`` is the dict produced by :class:`audet.data.AUDataset` (keys ``image``, ``labels``,
``mask``, ``landmarks``, ``subcenters``, ``subject``, ``sequence``, ``frame``, ...), and ``ctx`` is a
:class:`LossContext` with the AU weights computed once from the training labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ModelOutput:
    """Per-AU logits (``B x A`` or ``B x T x A``) plus auxiliary outputs for the losses."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


@dataclass
class LossContext:
    """Quantities computed once from the training labels and handed to ``loss_terms``.

    ``au_weight`` is w_j and ``pos_weight`` is v_j of AC2D Eq. 14 (see :mod:`audet.losses`).
    ``extra`` holds method-specific statistics (e.g. CISNet's adaptive loss weights).
    """

    au_weight: torch.Tensor | None = None
    pos_weight: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device) -> "LossContext":
        mv = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return LossContext(mv(self.au_weight), mv(self.pos_weight), {k: mv(v) for k, v in self.extra.items()})


#: Preprocessing every model carries (like torchvision's Weights.transforms()).
DEFAULT_PREPROCESS = {
    "aligned_size": 200,  # protocol section 2
    "crop_size": 176,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "color": "RGB",
    "clip": None,  # e.g. {"offsets": [-10, 0, 10]} or {"length": 8} for temporal models
}


class AUModel(nn.Module):
    """Base class: holds the AU list, the preprocessing and the default hooks."""

    #: registry name, set by create_model
    model_name: str = ""

    def __init__(self, num_aus: int, aus: list[int] | tuple[int, ...] | None = None, preprocess: dict | None = None):
        super().__init__()
        if aus is not None and len(aus) != num_aus:
            raise ValueError(f"num_aus={num_aus} but {len(aus)} AU numbers were given: {list(aus)}")
        self.num_aus = int(num_aus)
        self.aus = tuple(int(a) for a in aus) if aus is not None else None
        self.preprocess = {**DEFAULT_PREPROCESS, **(preprocess or {})}
        #: the constructor arguments, stored in checkpoints (set by subclasses)
        self.config: dict[str, Any] = {}

    # --- losses -------------------------------------------------------------------------
    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """Default: the weighted BCE of AC2D Eq. 14 (masked by missing labels)."""
        from audet.losses import weighted_bce

        return {"au": weighted_bce(output.logits, batch["labels"], batch["mask"], ctx.au_weight, ctx.pos_weight)}

    # --- cross-batch state ----------------------------------------------------------------
    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the engine before each training epoch."""

    def on_train_batch_end(self, output: ModelOutput, batch: dict) -> None:
        """Called after each training step with that step's output (no grad)."""

    def on_train_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (synchronise buffers across processes here)."""
