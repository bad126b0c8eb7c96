"""Dual-directional attention of ESCDA's GDA network (section 3.2, Fig. 2 top).

Coordinate attention with the average pooling replaced by learnable global depthwise convolutions
(GDConv)::

    z_h = GDConv_{1 x W}(X)                     C x H x 1  (one value per row: vertical direction)
    z_w = GDConv_{H x 1}(X)                     C x 1 x W  (one value per column: horizontal)
    f   = h_swish(BN(Conv1x1([z_h ; z_w^T])))   concatenate ("C"), pointwise conv to C_mid channels
    f_h, f_w = split(f)                         ("S")
    g_h = sigmoid(Conv1x1_h(f_h))               C x H x 1
    g_w = sigmoid(Conv1x1_w(f_w^T))             C x 1 x W
    attention = expand(g_h) * expand(g_w)       C x H x W  ("E", element-wise product)

GDA multiplies the backbone map by ``attention``. Each GDConv is a depthwise conv without bias
followed by BatchNorm (MobileFaceNet's linear GDConv); ``C_mid = max(8, C / 32)`` as in coordinate
attention. ``directions="h"`` or ``"w"`` keeps one direction only: the unidirectional attention of
the ablation variant UA (Table 6, A^u).
"""
from __future__ import annotations

import torch
from torch import nn

from audet.models.layers.mobileface import LinearBlock

__all__ = ["DirectionalAttention"]


class DirectionalAttention(nn.Module):
    """``forward(x)`` -> the attention map ``(B, C, H, W)`` in (0, 1) (not yet multiplied into ``x``)."""

    def __init__(self, channels: int, height: int, width: int, directions: str = "hw", reduction: int = 32,
                 min_mid: int = 8):
        super().__init__()
        if directions not in ("hw", "h", "w"):
            raise ValueError(f"directions must be 'hw' (dual), 'h' or 'w' (unidirectional); got {directions!r}")
        self.directions = directions
        self.height, self.width = int(height), int(width)
        mid = max(min_mid, channels // reduction)
        self.linear_h = LinearBlock(channels, channels, (1, width), groups=channels) if "h" in directions else None
        self.linear_w = LinearBlock(channels, channels, (height, 1), groups=channels) if "w" in directions else None
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mid, channels, 1) if "h" in directions else None
        self.conv_w = nn.Conv2d(mid, channels, 1) if "w" in directions else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if (H, W) != (self.height, self.width):
            raise ValueError(f"directional attention was built for {self.height}x{self.width} maps, got {H}x{W} "
                             "(the input size differs from the model's input_size)")
        parts = []
        if self.linear_h is not None:
            parts.append(self.linear_h(x))  # (B, C, H, 1)
        if self.linear_w is not None:
            parts.append(self.linear_w(x).transpose(-1, -2))  # (B, C, W, 1)
        f = self.act(self.bn1(self.conv1(torch.cat(parts, dim=2))))
        att = None
        if self.directions == "hw":
            f_h, f_w = torch.split(f, [H, W], dim=2)
            g_h = torch.sigmoid(self.conv_h(f_h))  # (B, C, H, 1)
            g_w = torch.sigmoid(self.conv_w(f_w.transpose(-1, -2)))  # (B, C, 1, W)
            att = g_h.expand(B, C, H, W) * g_w.expand(B, C, H, W)
        elif self.directions == "h":
            att = torch.sigmoid(self.conv_h(f)).expand(B, C, H, W)
        else:
            att = torch.sigmoid(self.conv_w(f.transpose(-1, -2))).expand(B, C, H, W)
        return att
