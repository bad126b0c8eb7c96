"""Pre-norm transformer block of ResTv2 (EMSAv2 + MLP) and its weight initialisation.

``x = x + DropPath(attn(norm1(x)))``; ``x = x + DropPath(mlp(norm2(x)))`` with
``mlp = fc1 (C -> 4C) -> GELU (exact, erf) -> fc2``, LayerNorm eps 1e-6, no layer scale, no dropout.
The MLP and stochastic depth are timm's :class:`timm.layers.Mlp` and :class:`timm.layers.DropPath`.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from audet.models.layers.attention import EMSAv2
from audet.models.layers.embed import LN_EPS

__all__ = ["Block", "init_restv2_weights"]


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = EMSAv2(dim, num_heads=num_heads, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_attn(
        self, x: torch.Tensor, H: int, W: int, outputs: Iterable[str] = ("mean",)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``forward`` that also returns the attention summaries of :meth:`EMSAv2.forward_attn`."""
        a, info = self.attn.forward_attn(self.norm1(x), H, W, outputs)
        x = x + self.drop_path(a)
        return x + self.drop_path(self.mlp(self.norm2(x))), info


def init_restv2_weights(m: nn.Module) -> None:
    """ResTv2-style initialisation (apply with ``model.apply``).

    Linear: truncated normal std 0.02, bias 0. Conv2d: normal(0, sqrt(2 / fan_out)) with
    ``fan_out = k_h * k_w * out_channels / groups``, bias 0. LayerNorm / BatchNorm: weight 1, bias 0.
    """
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
