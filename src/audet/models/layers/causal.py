"""Causal intervention by backdoor adjustment with sample prototypes (AC2D Eq. 8-13).

With the NWGM approximation (Eq. 9) and a linear model (Eq. 10)::

    P(Y | do(X)) = W_X f + W_Z E_z[g(z)]                              (Eq. 10)
    E_z[g(z)]    = Softmax(Q K^T / sqrt(d_k)) V                       (Eq. 11-13)
    Q = W_Q f,   K = W_K z  (prototypes z),   d_k = 8c                (Eq. 12b-d)

``V`` is the prototype value: ``mean f`` in the paper (Eq. 13), ``P * mean f`` with
``P = 1/N`` in the published code (protocol section 7) - the caller chooses.

Shapes follow the authors' layer (state-dict layout in
``shared/reference/original-checkpoints/ac2d_bp4d_12au.tsv``): ``W_Q``, ``W_K`` are
Linear(c, 8c) and ``W_X``, ``W_Z`` are Linear(c, c), all with bias. (The paper writes
``W_X, W_Z in R^{8c x c}``; the released model and its 3,625,196 parameters use c x c.)

With ONE prototype (AC2D's ``bar f``, Eq. 12a) the softmax is identically 1, so ``W_Q`` and
``W_K`` get exactly zero gradient and the layer is ``W_X f + W_Z V``. They are kept (and
computed) for fidelity to Eq. 12-13 and to load the authors' checkpoints; with several
prototypes the layer is a genuine attention over them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["CausalIntervention"]


class CausalIntervention(nn.Module):
    def __init__(self, dim: int = 64, key_dim: int = 512):
        super().__init__()
        self.dim = dim
        self.key_dim = key_dim
        self.w_q = nn.Linear(dim, key_dim)
        self.w_k = nn.Linear(dim, key_dim)
        self.w_x = nn.Linear(dim, dim)
        self.w_z = nn.Linear(dim, dim)

    @torch.no_grad()
    def identity_init(self) -> None:
        """``W_X = I``, ``W_Z = 0`` (biases 0): Eq. 10 starts as ``f`` itself (not in the paper; AC2D's
        ``intervention_init="identity"``)."""
        nn.init.eye_(self.w_x.weight)
        nn.init.zeros_(self.w_x.bias)
        nn.init.zeros_(self.w_z.weight)
        nn.init.zeros_(self.w_z.bias)

    def confounder(self, f: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``E_z[g(z)]`` of Eq. 13 for features ``f`` ``(..., C)``.

        ``keys``/``values``: prototypes ``(..., M, C)`` whose leading dims broadcast with
        ``f``'s (e.g. ``(M, C)`` shared by all samples, or ``(N, 1, C)`` one per token).
        """
        q = self.w_q(f).unsqueeze(-2)  # (..., 1, dk)
        k = self.w_k(keys)  # (..., M, dk)
        alpha = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(self.key_dim), dim=-1)  # (..., 1, M)
        return (alpha @ values.to(f.dtype)).squeeze(-2)  # (..., C)

    def forward(self, f: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Eq. 10: ``W_X f + W_Z E_z[g(z)]``."""
        return self.w_x(f) + self.w_z(self.confounder(f, keys, values))

    def zero_touch(self) -> torch.Tensor:
        """``0 * sum(params)``: keeps every parameter in the autograd graph when the layer is
        skipped (epoch 0 without prototypes), so DDP needs no ``find_unused_parameters``."""
        return sum(p.sum() for p in self.parameters()) * 0.0
