"""Sample prototypes of AC2D's causal intervention: their bookkeeping (AC2D Eq. 12a-13).

The intervention (:class:`audet.models.layers.causal.CausalIntervention`) attends over ONE key
``K = bar f`` (Eq. 12a: a mean of pooled features) with the value ``V`` (Eq. 13: ``V = K``; the
published code feeds ``V_data = P_data * K_data`` with ``P = 1/N``, i.e. ``K / N``). Where the mean
comes from is the prototype mode (:data:`PROTOTYPE_MODES`):

- ``"batch"`` (paper, C^e(d)): the current training mini-batch's mean, every step;
- ``"epoch_stale"`` (published code): the mean over the previous epoch's training steps
  (augmented, train mode); epoch 0 trains WITHOUT intervention;
- ``"epoch"`` (paper, C^e(s)): recomputed at each epoch end by a pass over the training data
  with the current parameters (the model contract's epoch-end data pass).

Here: :func:`training_prototype` (which mean a training step uses), :func:`confounder_value`
(``V`` from ``K`` and ``N``) and :class:`FeatureMean` (the epoch accumulator: float64 sums and
a count, all-reduced across processes when ``torch.distributed`` is initialised). The model keeps
the resulting ``K``, ``V``, ``N`` in its own registered buffers (checkpoints carry them).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["CONFOUNDER_SCALES", "PROTOTYPE_MODES", "FeatureMean", "confounder_value", "training_prototype"]

PROTOTYPE_MODES = ("batch", "epoch_stale", "epoch")
CONFOUNDER_SCALES = ("paper", "code")


def confounder_value(mean: torch.Tensor, count: float, scale: str) -> torch.Tensor:
    """``V`` of Eq. 13 from ``K = mean``: ``K`` (``scale="paper"``) or ``K / N`` (``"code"``)."""
    if scale not in CONFOUNDER_SCALES:
        raise ValueError(f"confounder_scale={scale!r}; choose one of {', '.join(CONFOUNDER_SCALES)}")
    return mean if scale == "paper" else mean / float(count)


def training_prototype(mode: str, features: torch.Tensor, scale: str):
    """``(K, V)`` a TRAINING step computes from its own batch (``mode="batch"``), else None (the
    step uses the stored prototypes, or none). ``features``: ``(B, ...)``, detached here."""
    if mode != "batch":
        return None
    k = features.detach().mean(dim=0)
    return k, confounder_value(k, features.shape[0], scale)


class FeatureMean:
    """Running float64 sum and count of feature batches (one epoch's prototypes).

    Plain attributes, not buffers: DDP broadcasts buffers from rank 0 every step, which would
    overwrite the other ranks' sums. :meth:`finish` all-reduces sum and count (collective: every
    process must call it) and resets.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, features: torch.Tensor) -> None:
        """Add a batch ``(B, ...)`` of features."""
        self.add_sum(features.detach().sum(dim=0).to(torch.float64), int(features.shape[0]))

    def add_sum(self, total: torch.Tensor, count: int) -> None:
        """Add a precomputed sum over ``count`` samples (e.g. a data-pass step's result)."""
        total = total.to(torch.float64)
        if self.total is None or self.total.device != total.device:
            self.total = torch.zeros_like(total)
        self.total += total
        self.count += int(count)

    @staticmethod
    def batch_sum(features: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(sum over the batch (float64), batch size)``: what a data-pass step returns."""
        return features.detach().sum(dim=0).to(torch.float64), int(features.shape[0])

    @torch.no_grad()
    def finish(self, shape, device) -> tuple[torch.Tensor, float] | None:
        """``(mean (float64), count)`` over every process, or None when nothing was added
        anywhere; resets. ``shape``/``device``: of the sum, for a process that saw nothing."""
        total = self.total
        if total is None:
            total = torch.zeros(tuple(shape), dtype=torch.float64, device=device)
        n = torch.tensor(float(self.count), dtype=torch.float64, device=total.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(n)
        self.reset()
        if float(n) <= 0:
            return None
        return total / n, float(n)
