"""Token embeddings of ResTv2 as AC2D uses them: pixel attention, ConvStem, PatchEmbed.

Shapes follow the channels-first image convention on input and return tokens
``(B, H*W, C)`` plus the spatial size ``(H, W)`` so that the blocks can fold the tokens back.
All LayerNorms use ``eps=1e-6`` and the ConvStem's BatchNorms the PyTorch defaults
(eps 1e-5, momentum 0.1), as in the authors' model (see
``shared/reference/original-checkpoints/README.md``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PixelAttention", "ConvStem", "PatchEmbed", "LN_EPS"]

#: LayerNorm epsilon used by every AC2D/ResTv2 LayerNorm
LN_EPS = 1e-6


class PixelAttention(nn.Module):
    """Pixel attention (PA) positional encoding: ``x * sigmoid(dwconv3x3(x) + b)``.

    ``conv`` is a depth-wise 3x3 convolution with bias (one filter per channel).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * torch.sigmoid(self.conv(x))


class _TokenEmbed(nn.Module):
    """``proj`` (set by the subclass) -> PA -> flatten to tokens -> LayerNorm; returns (tokens, H, W)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.pa(self.proj(x))
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class ConvStem(_TokenEmbed):
    """Stem of Fig. 2: conv3x3 (s1) - BN - ReLU - conv3x3 (s2) - BN - ReLU - conv1x1, then PA and LN.

    ``proj`` keeps the sequential indices 0..6 (conv, bn, relu, conv, bn, relu, conv); the two 3x3
    convolutions have no bias, the 1x1 has one. Halves the resolution: 176 -> 88.
    """

    def __init__(self, in_chans: int = 3, dim: int = 64, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, hidden, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 1, stride=1, bias=True),
        )
        self.pa = PixelAttention(dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)


class PatchEmbed(_TokenEmbed):
    """Patch embedding between stages: conv3x3 stride 2 (with bias) -> PA -> flatten -> LN."""

    def __init__(self, in_dim: int = 64, dim: int = 64, stride: int = 2):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, 3, stride=stride, padding=1, bias=True)
        self.pa = PixelAttention(dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)


def tokens_to_map(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> ``(B, C, H, W)`` map (row-major tokens)."""
    B, N, C = x.shape
    return x.transpose(1, 2).reshape(B, C, H, W)
