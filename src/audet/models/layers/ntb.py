"""Next Transformer Block (NTB, Next-ViT) with ESCDA's self-attention constraint (LSC, Eq. 4-6).

NTB (Li et al., Next-ViT; ESCDA section 3.1.2, last paragraph), on a ``B x C x H x W`` map::

    x = PatchEmbed(x)                         1x1 conv + BN to C_s = make_divisible(0.75 C, 32)
                                              (identity when the widths already match)
    x = x + E-MHSA(BN(x))                     multi-head self-attention over the H*W tokens,
                                              head dim 32, q/k/v/proj Linear with bias (W^M = proj)
    y = Projection(x)                         1x1 conv + BN to C_c = C - C_s
    y = y + MHCA(y)                           3x3 group conv (group size 32) + BN + ReLU + 1x1 conv
    x = concat(x, y)                          C channels
    x = x + MLP(BN(x))                        1x1 conv (C -> make_divisible(2C, 32)) + ReLU + 1x1 conv

Self-attention constraint (ESCDA Eq. 4-6), ``mask`` = M_i over the key positions (Eq. 3)::

    A'_i = Softmax(Q_i K_i^T / sqrt(d'))      (Eq. 4)   per head (k' heads), n' = H*W tokens
    A_i  = A'_i (x) M_i                       (Eq. 5)   M_i broadcast over heads and queries
    SA   = A_i V_i                            (Eq. 6)   no renormalisation after the mask

Because ``M_i`` depends only on the key, ``(A' (x) M) V = A' (M (x) V)``: the fast path scales the
values by the mask and calls :func:`torch.nn.functional.scaled_dot_product_attention`; the explicit
path (``return_attention=True``) materialises A' and A (used by the tests and for visualisation,
paper Fig. 4). The spatial reduction of Next-ViT's E-MHSA is not used (``sr_ratio = 1`` at the
7 x 7 map of ESCDA), so the mask needs no resampling.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import ConvMlp, DropPath, make_divisible
from torch import nn

__all__ = [
    "attention_weights",
    "constrain_attention",
    "constrained_self_attention",
    "EMHSA",
    "MHCA",
    "NextTransformerBlock",
]


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """ESCDA Eq. 4: ``A' = Softmax(Q K^T / sqrt(d'))``; ``q, k`` ``(..., n', d')`` -> ``(..., n', n')``."""
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def constrain_attention(attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ESCDA Eq. 5: ``A = A' (x) M`` (element-wise); ``attn`` ``(B, k', n', n')``, ``mask`` over keys,
    ``(n',)`` or ``(B, n')``, broadcast over heads and queries."""
    m = mask if mask.dim() == 1 else mask[:, None, None, :]
    return attn * m


def constrained_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                               explicit: bool = False):
    """ESCDA Eq. 6: ``SA(Q, K, V) = A V`` with A of Eq. 5 (``mask=None``: plain attention, A = A').

    ``q, k, v`` ``(B, k', n', d')``. Returns ``(out, A)`` where ``A`` is None unless ``explicit``
    (then ``(A', A)`` materialised). The fast path uses ``A' (M (x) V)`` (identical in exact arithmetic).
    """
    if not explicit:
        if mask is not None:
            m = mask[:, None] if mask.dim() == 1 else mask[:, None, :, None]
            v = v * m
        return F.scaled_dot_product_attention(q, k, v), None
    a0 = attention_weights(q, k)
    a = constrain_attention(a0, mask) if mask is not None else a0
    return a @ v, (a0, a)


class EMHSA(nn.Module):
    """Multi-head self-attention of the NTB (q, k, v, proj Linear with bias), optionally constrained."""

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = True):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"E-MHSA width {dim} is not divisible by head_dim {head_dim}")
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, explicit: bool = False):
        """``x`` ``(B, N, C)`` -> ``((B, N, C), (A', A) or None)``."""
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = (lin(x).reshape(B, N, h, d).transpose(1, 2) for lin in (self.q, self.k, self.v))
        out, attn = constrained_self_attention(q, k, v, mask, explicit)
        return self.proj(out.transpose(1, 2).reshape(B, N, C)), attn


class MHCA(nn.Module):
    """Multi-head convolutional attention: 3x3 group conv (group size ``head_dim``) + BN + ReLU + 1x1 conv."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        groups = max(1, dim // head_dim)
        if dim % groups:
            raise ValueError(f"MHCA width {dim} is not divisible into {groups} groups")
        self.group_conv3x3 = nn.Conv2d(dim, dim, 3, 1, 1, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)
        self.projection = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.act(self.norm(self.group_conv3x3(x))))


class _Embed(nn.Module):
    """Next-ViT's stride-1 PatchEmbed: 1x1 conv (no bias) + BN, identity when widths match."""

    def __init__(self, in_c: int, out_c: int):
        super().__init__()
        if in_c == out_c:
            self.conv, self.norm = nn.Identity(), nn.Identity()
        else:
            self.conv, self.norm = nn.Conv2d(in_c, out_c, 1, bias=False), nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NextTransformerBlock(nn.Module):
    """NTB (see the module docstring). ``forward(x, mask=None, return_attention=False)``.

    Args:
        in_dim, out_dim: channels in and out (ESCDA: 512 -> 512).
        head_dim: channels per head of E-MHSA and per group of MHCA (32).
        mix_block_ratio: share of the output channels that go through E-MHSA (0.75).
        mlp_ratio: MLP expansion (2).
        drop_path: stochastic depth (Next-ViT scales it by the branch share).
    """

    def __init__(self, in_dim: int, out_dim: int, head_dim: int = 32, mix_block_ratio: float = 0.75,
                 mlp_ratio: float = 2.0, drop_path: float = 0.0):
        super().__init__()
        self.mhsa_dim = make_divisible(int(out_dim * mix_block_ratio), head_dim)
        self.mhca_dim = out_dim - self.mhsa_dim
        if self.mhca_dim <= 0:
            raise ValueError(f"NTB out_dim {out_dim} leaves no MHCA channels (mix_block_ratio {mix_block_ratio})")
        self.patch_embed = _Embed(in_dim, self.mhsa_dim)
        self.norm1 = nn.BatchNorm2d(self.mhsa_dim)
        self.e_mhsa = EMHSA(self.mhsa_dim, head_dim)
        self.mhsa_drop_path = DropPath(drop_path * mix_block_ratio) if drop_path > 0 else nn.Identity()
        self.projection = _Embed(self.mhsa_dim, self.mhca_dim)
        self.mhca = MHCA(self.mhca_dim, min(head_dim, self.mhca_dim))
        self.mhca_drop_path = DropPath(drop_path * (1 - mix_block_ratio)) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(out_dim)
        self.mlp = ConvMlp(out_dim, make_divisible(int(out_dim * mlp_ratio), head_dim), out_dim, act_layer=nn.ReLU)
        self.mlp_drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_attention: bool = False):
        """``x`` ``(B, C, H, W)``; ``mask`` over the ``H*W`` keys (Eq. 3) or None (vanilla NTB).

        Returns the output map, and ``(A', A)`` ``(B, heads, HW, HW)`` when ``return_attention``.
        """
        x = self.patch_embed(x)
        B, C, H, W = x.shape
        t = self.norm1(x).flatten(2).transpose(1, 2)
        a, attn = self.e_mhsa(t, mask, explicit=return_attention)
        x = x + self.mhsa_drop_path(a.transpose(1, 2).reshape(B, C, H, W))
        y = self.projection(x)
        y = y + self.mhca_drop_path(self.mhca(y))
        x = torch.cat([x, y], dim=1)
        x = x + self.mlp_drop_path(self.mlp(self.norm2(x)))
        return (x, attn) if return_attention else x
