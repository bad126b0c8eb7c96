"""AAR's adaptive graph convolutions over AU nodes (Shao et al., AAR, section III-C; aar.md).

Shapes: node features ``(..., m, c)`` (m AUs), U and Q ``(m, c_e)``, the parameter pool
W ``(c_e, c_in, c_out)``. Each equation is one function:

- :func:`normalized_adjacency` -- Eq. 10: ``D^-1/2 A D^-1/2 := N(R(U U^T))``;
- :func:`propagation_matrix` -- ``I + N(R(U U^T))`` (Eq. 11/13/15);
- :func:`au_specific_parameters` -- Eq. 9: ``Theta^(1) = Q W`` (one ``c_in x c_out`` matrix per AU);
- :func:`au_specific_product` -- the operator of Eq. 8: ``Z_ab = sum_k X_ak Y_akb``;
- :func:`adaptive_graph_conv` -- Eq. 11 (G^sp); :func:`shared_graph_conv` -- Eq. 15 (G^sh);
- :func:`gru_gates` -- Eq. 13a-c, :func:`gru_update` -- Eq. 12d/13d.

Modules: :class:`SpatialGraphConv` (one G^sp or G^sh layer, per frame) and
:class:`SpatioTemporalGraphConv` (one G^st(t', m', c') layer: Eq. 13 over the frames of a
sequence, hidden state h_0 = 0). Following the paper, no bias is used anywhere (Eq. 7 "omitting
the bias"; Eq. 13 has none).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "normalized_adjacency",
    "propagation_matrix",
    "au_specific_parameters",
    "au_specific_product",
    "adaptive_graph_conv",
    "shared_graph_conv",
    "gru_gates",
    "gru_update",
    "SpatialGraphConv",
    "SpatioTemporalGraphConv",
]


def normalized_adjacency(U: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 10: ``N(R(U U^T))`` -- ReLU of ``U U^T``, divided by the sum of ALL its elements.

    ``U`` ``(m, c_e)`` -> ``(m, m)``, non-negative, symmetric, summing to 1 (N normalises by
    ``sum_{a,b}``, not per row). The sum is at least ``sum_a |U_a|^2 > 0`` unless U = 0 (then it
    is clamped at ``eps`` and the matrix is 0).
    """
    A = torch.relu(U @ U.transpose(-1, -2))
    return A / A.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)


def propagation_matrix(U: torch.Tensor) -> torch.Tensor:
    """``I + N(R(U U^T))`` (the propagation of Eq. 11, 13 and 15), ``(m, m)``."""
    return torch.eye(U.shape[-2], dtype=U.dtype, device=U.device) + normalized_adjacency(U)


def au_specific_parameters(Q: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``Theta^(1) = Q W``; ``Q`` ``(m, c_e)``, pool ``W`` ``(c_e, c_in, c_out)`` ->
    ``(m, c_in, c_out)``: AU i's parameters are ``sum_k Q_ik W_k``."""
    return torch.einsum("mk,kio->mio", Q, W)


def au_specific_product(X: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The operator of Eq. 8: ``Z_ab = sum_k X_ak Y_akb``; ``X`` ``(..., m, c_in)``,
    ``theta`` ``(m, c_in, c_out)`` -> ``(..., m, c_out)`` (AU a transformed by its own matrix)."""
    return torch.einsum("...mi,mio->...mo", X, theta)


def adaptive_graph_conv(F_in: torch.Tensor, U: torch.Tensor, Q: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Eq. 11 (G^sp): ``F_out = (I + N(R(U U^T))) F_in (.) Q W``; ``F_in`` ``(..., m, c_in)``."""
    return au_specific_product(propagation_matrix(U) @ F_in, au_specific_parameters(Q, W))


def shared_graph_conv(F_in: torch.Tensor, U: torch.Tensor, theta0: torch.Tensor) -> torch.Tensor:
    """Eq. 15 (G^sh): ``F_out = (I + N(R(U U^T))) F_in Theta^(0)``, ``Theta^(0)`` ``(c_in, c_out)``
    shared by every AU."""
    return (propagation_matrix(U) @ F_in) @ theta0


def gru_gates(P: torch.Tensor, h_prev: torch.Tensor, x: torch.Tensor, theta_z: torch.Tensor, theta_r: torch.Tensor,
              theta_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 13a-c for one time step: ``(z, r, h~)``.

    ``z = sigma(P C(h, F) (.) Theta_z)``, ``r = sigma(P C(h, F) (.) Theta_r)``,
    ``h~ = tanh(P C(r * h, F) (.) Theta_h)`` with ``P = I + N(R(U U^T))`` ``(m, m)``, the
    concatenation ``C`` along channels (h first), ``h_prev`` and ``x`` ``(..., m, c)`` and each
    ``Theta = Q W`` ``(m, 2c, c)`` (Eq. 9). With AU-shared parameters (G^sh) pass
    ``Theta`` ``(2c, c)`` broadcast to ``(m, 2c, c)``.
    """
    hx = P @ torch.cat((h_prev, x), dim=-1)
    z = torch.sigmoid(au_specific_product(hx, theta_z))
    r = torch.sigmoid(au_specific_product(hx, theta_r))
    h_tilde = torch.tanh(au_specific_product(P @ torch.cat((r * h_prev, x), dim=-1), theta_h))
    return z, r, h_tilde


def gru_update(h_prev: torch.Tensor, z: torch.Tensor, h_tilde: torch.Tensor) -> torch.Tensor:
    """Eq. 12d / 13d: ``h = z * h_prev + (1 - z) * h~`` (z keeps the previous state)."""
    return z * h_prev + (1.0 - z) * h_tilde


def _pool_init(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class SpatialGraphConv(nn.Module):
    """One spatial graph layer over m AU nodes: G^sp (Eq. 11, ``specific=True``) or G^sh (Eq. 15).

    Parameters: ``U`` ``(m, c_e)``; G^sp: ``Q`` ``(m, c_e)`` and the pool ``W`` ``(c_e, c_in, c_out)``;
    G^sh: ``theta`` ``(c_in, c_out)``. No bias (Eq. 7). Applied to every frame independently.
    """

    def __init__(self, num_nodes: int, in_dim: int, out_dim: int, pool_dim: int = 8, specific: bool = True):
        super().__init__()
        self.specific = bool(specific)
        self.U = nn.Parameter(torch.randn(num_nodes, pool_dim) / math.sqrt(pool_dim))
        if self.specific:
            self.Q = nn.Parameter(torch.randn(num_nodes, pool_dim) / math.sqrt(pool_dim))
            self.W = _pool_init((pool_dim, in_dim, out_dim), in_dim)
        else:
            self.theta = _pool_init((in_dim, out_dim), in_dim)

    def forward(self, F_in: torch.Tensor) -> torch.Tensor:
        if self.specific:
            return adaptive_graph_conv(F_in, self.U, self.Q, self.W)
        return shared_graph_conv(F_in, self.U, self.theta)


class SpatioTemporalGraphConv(nn.Module):
    """G^st(t', m', c') (Eq. 13): graph-convolutional GRU over the frames of a sequence.

    ``F_in`` ``(B, T, m, c)`` -> ``F_out`` ``(B, T, m, c)`` = the hidden states h_1..h_T (h_0 = 0).
    Parameters ``U``, ``Q`` ``(m, c_e)`` and pools ``W_z``, ``W_r``, ``W_h`` ``(c_e, 2c, c)``
    (rows ``[:c]`` act on h, ``[c:]`` on the input, the order of ``C(h, F)``); with
    ``specific=False`` (shared parameters, Eq. 15 inside the GRU) ``W_*`` are ``(2c, c)``.

    Computation: ``P C(h, F) (.) Theta = (P h) (.) Theta[:, :c] + (P F) (.) Theta[:, c:]``, so the
    input halves of all gates are computed for every frame at once and only the recurrent halves
    step through time (the same numbers as :func:`gru_gates` per step; tested).
    """

    def __init__(self, num_nodes: int, dim: int, pool_dim: int = 8, specific: bool = True):
        super().__init__()
        self.specific = bool(specific)
        self.dim = int(dim)
        self.U = nn.Parameter(torch.randn(num_nodes, pool_dim) / math.sqrt(pool_dim))
        shape = (pool_dim, 2 * dim, dim) if self.specific else (2 * dim, dim)
        if self.specific:
            self.Q = nn.Parameter(torch.randn(num_nodes, pool_dim) / math.sqrt(pool_dim))
        self.W_z = _pool_init(shape, 2 * dim)
        self.W_r = _pool_init(shape, 2 * dim)
        self.W_h = _pool_init(shape, 2 * dim)

    def thetas(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-AU ``(Theta_z, Theta_r, Theta_h)``, each ``(m, 2c, c)`` (Eq. 9, or the shared W)."""
        m = self.U.shape[0]
        if self.specific:
            return tuple(au_specific_parameters(self.Q, W) for W in (self.W_z, self.W_r, self.W_h))
        return tuple(W.unsqueeze(0).expand(m, -1, -1) for W in (self.W_z, self.W_r, self.W_h))

    def forward(self, F_in: torch.Tensor) -> torch.Tensor:
        if F_in.dim() != 4:
            raise ValueError(f"G^st expects (B, T, m, c) features, got {tuple(F_in.shape)}")
        B, T, m, c = F_in.shape
        P = propagation_matrix(self.U)
        tz, tr, th = self.thetas()
        # input halves of the three gates for all frames at once: (B, T, m, 3c)
        px = au_specific_product(P @ F_in, torch.cat((tz[:, c:], tr[:, c:], th[:, c:]), dim=-1))
        xz, xr, xh = px.split(c, dim=-1)
        t_zr = torch.cat((tz[:, :c], tr[:, :c]), dim=-1)  # recurrent halves of z and r
        t_hh = th[:, :c]
        h = F_in.new_zeros(B, m, c)
        out = []
        for t in range(T):
            zr = au_specific_product(P @ h, t_zr)
            z = torch.sigmoid(zr[..., :c] + xz[:, t])  # Eq. 13a
            r = torch.sigmoid(zr[..., c:] + xr[:, t])  # Eq. 13b
            h_tilde = torch.tanh(au_specific_product(P @ (r * h), t_hh) + xh[:, t])  # Eq. 13c
            h = gru_update(h, z, h_tilde)  # Eq. 13d
            out.append(h)
        return torch.stack(out, dim=1)

    def forward_reference(self, F_in: torch.Tensor) -> torch.Tensor:
        """Eq. 13 step by step with :func:`gru_gates` (slow; for tests)."""
        B, T, m, c = F_in.shape
        P = propagation_matrix(self.U)
        tz, tr, th = self.thetas()
        h = F_in.new_zeros(B, m, c)
        out = []
        for t in range(T):
            z, _, h_tilde = gru_gates(P, h, F_in[:, t], tz, tr, th)
            h = gru_update(h, z, h_tilde)
            out.append(h)
        return torch.stack(out, dim=1)
