"""EMSAv2: efficient multi-head self-attention v2 of ResTv2 with its upsample branch.

AC2D Eq. 1-2::

    A = Softmax(Q K^T / sqrt(d'))              (Eq. 1)
    SA(Q, K, V) = A V + UP(V)                  (Eq. 2)

- ``q``: Linear(C, C) on the tokens; ``kv``: Linear(C, 2C) on the (spatially reduced) tokens,
  output rows ``[0:C]`` are K and ``[C:2C]`` are V; heads split channels as ``head * hd + d``.
- spatial reduction (only when ``sr_ratio > 1``, K/V only): depth-wise Conv2d(k = r+1,
  stride r, pad r//2, bias) then LayerNorm.
- ``UP``: V folded to ``(B, C, H/r, W/r)`` -> depth-wise Conv2d(C, r^2 C, 3, pad 1, groups=C) ->
  PixelShuffle(r) -> tokens -> LayerNorm (``up_norm``). It exists for r = 1 too. It is added to
  ``A V`` *before* the output projection ``proj``.

The attention weights are only materialised when asked for (``forward_attn``); the plain
``forward`` uses :func:`torch.nn.functional.scaled_dot_product_attention`. Count FLOPs under
``sdpa_kernel(SDPBackend.MATH)`` so that the fused kernel is decomposed into counted matmuls.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from audet.models.layers.embed import LN_EPS

__all__ = ["EMSAv2", "ATTENTION_OUTPUTS"]

#: what ``forward_attn`` can return:
#: ``mean``    (B, Nk)          A averaged over heads and queries (AC2D Eq. 6)
#: ``logmean`` (B, Nk)          log A averaged over heads and queries (for a per-channel KL)
#: ``full``    (B, h, N, Nk)    the softmax weights themselves
ATTENTION_OUTPUTS = ("mean", "logmean", "full")


class EMSAv2(nn.Module):
    def __init__(self, dim: int, num_heads: int = 1, sr_ratio: int = 1, qkv_bias: bool = True, logmean_eps: float = 1e-12):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = int(sr_ratio)
        self.logmean_eps = logmean_eps
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        r = self.sr_ratio
        if r > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=r + 1, stride=r, padding=r // 2, groups=dim)
            self.sr_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.up_conv = nn.Conv2d(dim, r * r * dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.up_shuffle = nn.PixelShuffle(r)
        self.up_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor, H: int, W: int):
        B, N, C = x.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q(x).reshape(B, N, h, hd).transpose(1, 2)  # (B, h, N, hd)
        if self.sr_ratio > 1:
            m = self.sr(x.transpose(1, 2).reshape(B, C, H, W))
            hk, wk = m.shape[-2:]
            x = self.sr_norm(m.flatten(2).transpose(1, 2))
        else:
            hk, wk = H, W
        kv = self.kv(x).reshape(B, -1, 2, h, hd).permute(2, 0, 3, 1, 4)  # (2, B, h, Nk, hd)
        return q, kv[0], kv[1], hk, wk

    def _finish(self, out: torch.Tensor, v: torch.Tensor, hk: int, wk: int, H: int, W: int) -> torch.Tensor:
        B, h, Nk, hd = v.shape
        out = out.transpose(1, 2).reshape(B, -1, self.dim)  # (B, N, C), channel = head*hd + d
        ident = v.transpose(-1, -2).reshape(B, self.dim, hk, wk)  # channel = head*hd + d
        up = self.up_shuffle(self.up_conv(ident))
        if up.shape[-2:] != (H, W):
            raise ValueError(
                f"EMSAv2 upsample branch gives {tuple(up.shape[-2:])} but the tokens are {(H, W)}; "
                f"the input side must be divisible by sr_ratio={self.sr_ratio} at this stage"
            )
        up = self.up_norm(up.flatten(2).transpose(1, 2))
        return self.proj(out + up)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        q, k, v, hk, wk = self._qkv(x, H, W)
        out = F.scaled_dot_product_attention(q, k, v)  # default scale = hd ** -0.5 (Eq. 1)
        return self._finish(out, v, hk, wk, H, W)

    def forward_attn(
        self, x: torch.Tensor, H: int, W: int, outputs: Iterable[str] = ("mean",)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Like ``forward`` but with an explicit softmax; also returns the asked attention summaries."""
        outputs = tuple(outputs)
        bad = set(outputs) - set(ATTENTION_OUTPUTS)
        if bad:
            raise ValueError(f"unknown attention outputs {sorted(bad)}; choose from {ATTENTION_OUTPUTS}")
        q, k, v, hk, wk = self._qkv(x, H, W)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # (B, h, N, Nk), Eq. 1
        out = attn @ v
        info: dict[str, torch.Tensor] = {}
        if "mean" in outputs:
            info["mean"] = attn.mean(dim=(1, 2))  # Eq. 6
        if "logmean" in outputs:
            info["logmean"] = attn.clamp_min(self.logmean_eps).log().mean(dim=(1, 2))
        if "full" in outputs:
            info["full"] = attn
        return self._finish(out, v, hk, wk, H, W), info
