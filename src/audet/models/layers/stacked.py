"""Identically shaped per-AU modules evaluated as ONE batched computation ("stacked" evaluation).

A method that repeats the same small modules once per AU (AC2D's stage-3 branches: m branches x
n3 blocks) runs m times as many small kernels as it needs. Here the branch modules stay what they
are (their parameters, names and checkpoints do not change); at call time their weights are
stacked along a new leading branch dimension ``A`` and every layer runs once for all branches:

- a convolution on an input shared by all branches: the filters concatenated along the output
  channels (one dense convolution with ``A * C`` outputs);
- a depth-wise convolution on per-branch maps: one grouped convolution over ``A * C`` channels;
- ``Linear``: ``torch.baddbmm`` over the branch dimension;
- LayerNorm: normalisation without affine, then each branch's weight and bias;
- BatchNorm: one ``F.batch_norm`` over the ``A * C`` channels (per channel, so exact), running
  statistics written back into each branch (used by the AAR and ESCDA stacked paths);
- attention: the branch dimension folded into the batch of ``scaled_dot_product_attention``.

Tokens are laid out ``(A, B, N, C)``. The maths is that of :class:`~audet.models.layers.embed.PatchEmbed`,
:class:`~audet.models.layers.block.Block` (EMSAv2, AC2D Eq. 1-2) and
:class:`~audet.models.layers.causal.CausalIntervention` (Eq. 10-13) term by term, so the outputs
equal the per-module loop up to float rounding (tests: atol 1e-5 in fp32). Gradients flow back to
the original parameters through ``torch.stack``. Stochastic depth draws one mask per (branch,
sample), as the loop does.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audet.models.layers.attention import ATTENTION_OUTPUTS
from audet.models.layers.block import Block
from audet.models.layers.causal import CausalIntervention
from audet.models.layers.embed import PatchEmbed

__all__ = [
    "stacked_layer_norm",
    "stacked_batch_norm",
    "stacked_linear",
    "cat_conv",
    "stacked_patch_embed",
    "stacked_block",
    "stacked_intervention",
]


def stacked_layer_norm(x: torch.Tensor, norms: Sequence[nn.LayerNorm]) -> torch.Tensor:
    """Per-branch LayerNorm of ``x`` ``(A, ..., C)``."""
    A, C = x.shape[0], x.shape[-1]
    shape = (A,) + (1,) * (x.ndim - 2) + (C,)
    w = torch.stack([n.weight for n in norms]).reshape(shape)
    b = torch.stack([n.bias for n in norms]).reshape(shape)
    return F.layer_norm(x, (C,), None, None, norms[0].eps) * w + b


def stacked_batch_norm(x: torch.Tensor, norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> torch.Tensor:
    """Every branch's BatchNorm on ``x`` ``(N, A*C, ...)`` (branch-major channels at dim 1) in ONE
    ``F.batch_norm`` call: BatchNorm is per channel, so this equals the A separate modules in eval
    AND in training mode.

    Follows ``torch.nn.modules.batchnorm._BatchNorm.forward``: in training (with running
    statistics) each branch's ``num_batches_tracked`` is incremented and the concatenated running
    buffers, updated by ``F.batch_norm``, are copied back into each branch's own buffers. Branches
    whose settings differ (type, mode, momentum, eps, affine, tracking, or cumulative averaging
    with unequal counters) run one by one, which is the same computation.
    """
    n0 = norms[0]
    key = (type(n0), n0.training, n0.momentum, n0.eps, n0.affine, n0.track_running_stats)
    same = all((type(n), n.training, n.momentum, n.eps, n.affine, n.track_running_stats) == key for n in norms)
    track = n0.track_running_stats and n0.running_mean is not None
    update = n0.training and track
    if same and update and n0.momentum is None:  # cumulative average 1 / count: needs equal counts
        same = len({int(n.num_batches_tracked) for n in norms}) == 1
    if not same:  # per branch; each chunk as (N, C, L, 1) so that any BatchNorm class accepts it
        return torch.cat([n(c.reshape(*c.shape[:2], -1, 1)).reshape(c.shape)
                          for n, c in zip(norms, x.chunk(len(norms), dim=1))], dim=1)
    factor = 0.0 if n0.momentum is None else n0.momentum
    if update:
        for n in norms:
            n.num_batches_tracked.add_(1)
        if n0.momentum is None:
            factor = 1.0 / float(n0.num_batches_tracked)
    w = torch.cat([n.weight for n in norms]) if n0.affine else None
    b = torch.cat([n.bias for n in norms]) if n0.affine else None
    if not track:
        return F.batch_norm(x, None, None, w, b, True, factor, n0.eps)
    rm = torch.cat([n.running_mean for n in norms])
    rv = torch.cat([n.running_var for n in norms])
    out = F.batch_norm(x, rm, rv, w, b, n0.training, factor, n0.eps)
    if update:  # write the updated running statistics back, branch by branch
        with torch.no_grad():
            for n, m, v in zip(norms, rm.split(n0.num_features), rv.split(n0.num_features)):
                n.running_mean.copy_(m)
                n.running_var.copy_(v)
    return out


def stacked_linear(x: torch.Tensor, linears: Sequence[nn.Linear]) -> torch.Tensor:
    """Per-branch ``Linear`` of ``x`` ``(A, ..., Cin)`` -> ``(A, ..., Cout)`` with one batched matmul."""
    A = x.shape[0]
    w = torch.stack([m.weight for m in linears])  # (A, Cout, Cin)
    flat = x.reshape(A, -1, x.shape[-1])
    if linears[0].bias is not None:
        b = torch.stack([m.bias for m in linears]).unsqueeze(1)  # (A, 1, Cout)
        out = torch.baddbmm(b, flat, w.transpose(1, 2))
    else:
        out = torch.bmm(flat, w.transpose(1, 2))
    return out.reshape(*x.shape[:-1], w.shape[1])


def cat_conv(convs: Sequence[nn.Conv2d]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The branches' convolution weights and biases concatenated along the output channels (one
    dense convolution on a shared input, or one grouped convolution on branch-major maps)."""
    w = torch.cat([c.weight for c in convs])
    b = torch.cat([c.bias for c in convs]) if convs[0].bias is not None else None
    return w, b


def _depthwise(x: torch.Tensor, convs: Sequence[nn.Conv2d]) -> torch.Tensor:
    """Per-branch depth-wise conv of ``x`` ``(B, A*C, H, W)`` (branch-major channels) as one grouped conv."""
    c = convs[0]
    if c.groups != c.in_channels:
        raise ValueError("stacked evaluation supports depth-wise convolutions only here")
    w, b = cat_conv(convs)
    return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, groups=len(convs) * c.groups)


def _maps_to_tokens(x: torch.Tensor, A: int) -> torch.Tensor:
    """``(B, A*C, H, W)`` -> ``(A, B, H*W, C)``."""
    B, AC, H, W = x.shape
    return x.reshape(B, A, AC // A, H * W).permute(1, 0, 3, 2)


def _tokens_to_maps(t: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``(A, B, H*W, C)`` -> ``(B, A*C, H, W)``."""
    A, B, N, C = t.shape
    return t.permute(1, 0, 3, 2).reshape(B, A * C, H, W)


def stacked_patch_embed(x: torch.Tensor, embeds: Sequence[PatchEmbed]) -> tuple[torch.Tensor, int, int]:
    """Every branch's :class:`PatchEmbed` of the SHARED map ``x`` ``(B, Cin, H, W)``: tokens ``(A, B, N, C)``.

    The branch convolutions become one convolution with ``A * C`` output channels.
    """
    A, p = len(embeds), embeds[0].proj
    w, b = cat_conv([e.proj for e in embeds])
    y = F.conv2d(x, w, b, p.stride, p.padding, p.dilation, p.groups)
    y = y * torch.sigmoid(_depthwise(y, [e.pa.conv for e in embeds]))  # PixelAttention
    H, W = y.shape[-2:]
    return stacked_layer_norm(_maps_to_tokens(y, A), [e.norm for e in embeds]), H, W


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """timm's DropPath (scale by keep) with one draw per (branch, sample) of ``x`` ``(A, B, ...)``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty(x.shape[:2] + (1,) * (x.ndim - 2)).bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


def _drop_prob(block: Block) -> float:
    dp = block.drop_path
    return float(getattr(dp, "drop_prob", 0.0)) if not isinstance(dp, nn.Identity) else 0.0


def _stacked_attention(
    x: torch.Tensor, blocks: Sequence[Block], H: int, W: int, outputs: tuple[str, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EMSAv2 (Eq. 1-2) of every branch on ``x`` ``(A, B, N, C)`` (already normed)."""
    attns = [b.attn for b in blocks]
    a0 = attns[0]
    A, B, N, C = x.shape
    h, hd, r = a0.num_heads, a0.head_dim, a0.sr_ratio
    q = stacked_linear(x, [a.q for a in attns]).reshape(A * B, N, h, hd).transpose(1, 2)  # (AB, h, N, hd)
    if r > 1:
        m = _depthwise(_tokens_to_maps(x, H, W), [a.sr for a in attns])
        hk, wk = m.shape[-2:]
        xk = stacked_layer_norm(_maps_to_tokens(m, A), [a.sr_norm for a in attns])
    else:
        hk, wk, xk = H, W, x
    kv = stacked_linear(xk, [a.kv for a in attns]).reshape(A * B, -1, 2, h, hd).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]  # (AB, h, Nk, hd)
    info: dict[str, torch.Tensor] = {}
    if outputs:
        attn = torch.softmax((q @ k.transpose(-2, -1)) * a0.scale, dim=-1)  # (AB, h, N, Nk), Eq. 1
        out = attn @ v
        Nk = attn.shape[-1]
        if "mean" in outputs:
            info["mean"] = attn.mean(dim=(1, 2)).reshape(A, B, Nk)  # Eq. 6
        if "logmean" in outputs:
            info["logmean"] = attn.clamp_min(a0.logmean_eps).log().mean(dim=(1, 2)).reshape(A, B, Nk)
        if "full" in outputs:
            info["full"] = attn.reshape(A, B, h, N, Nk)
    else:
        out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(A, B, N, C)
    # UP(V): V folded to maps (channel = head*hd + d), depth-wise conv to r^2 C, pixel shuffle, LN
    ident = v.transpose(-1, -2).reshape(A, B, C, hk * wk).permute(1, 0, 2, 3).reshape(B, A * C, hk, wk)
    up = F.pixel_shuffle(_depthwise(ident, [a.up_conv for a in attns]), r)
    if up.shape[-2:] != (H, W):
        raise ValueError(f"EMSAv2 upsample branch gives {tuple(up.shape[-2:])} but the tokens are {(H, W)}")
    up = stacked_layer_norm(_maps_to_tokens(up, A), [a.up_norm for a in attns])
    return stacked_linear(out + up, [a.proj for a in attns]), info


def stacked_block(
    x: torch.Tensor, blocks: Sequence[Block], H: int, W: int, outputs: Iterable[str] = ()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Every branch's :class:`Block` on its own tokens ``x`` ``(A, B, N, C)``.

    ``outputs`` (from ``ATTENTION_OUTPUTS``): attention summaries to return, each ``(A, B, ...)``
    (``Block.forward_attn``); with none, the attention runs fused (``Block.forward``).
    """
    outputs = tuple(outputs)
    bad = set(outputs) - set(ATTENTION_OUTPUTS)
    if bad:
        raise ValueError(f"unknown attention outputs {sorted(bad)}; choose from {ATTENTION_OUTPUTS}")
    training = blocks[0].training
    p = _drop_prob(blocks[0])
    a, info = _stacked_attention(stacked_layer_norm(x, [b.norm1 for b in blocks]), blocks, H, W, outputs)
    x = x + _drop_path(a, p, training)
    y = stacked_layer_norm(x, [b.norm2 for b in blocks])
    y = stacked_linear(y, [b.mlp.fc1 for b in blocks])
    y = stacked_linear(F.gelu(y), [b.mlp.fc2 for b in blocks])  # timm Mlp: fc1 -> GELU (erf) -> fc2
    return x + _drop_path(y, p, training), info


def stacked_intervention(
    f: torch.Tensor, layers: Sequence[CausalIntervention], keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Eq. 10-13 for every branch: ``f`` ``(A, B, C)``, ``keys``/``values`` ``(A, M, C)`` -> ``(A, B, C)``."""
    q = stacked_linear(f, [m.w_q for m in layers])  # (A, B, dk)
    k = stacked_linear(keys.to(f.dtype), [m.w_k for m in layers])  # (A, M, dk)
    alpha = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(layers[0].key_dim), dim=-1)  # (A, B, M)
    conf = alpha @ values.to(f.dtype)  # (A, B, C)
    return stacked_linear(f, [m.w_x for m in layers]) + stacked_linear(conf, [m.w_z for m in layers])
