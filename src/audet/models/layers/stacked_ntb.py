"""Per-AU Next Transformer Blocks (ESCDA's LSC branches) evaluated as ONE stacked computation.

ESCDA's LSC runs ``A`` identically shaped branches on the SAME backbone map (one per AU: an
:class:`~audet.models.layers.ntb.NextTransformerBlock` with that AU's mask ``M_i`` of Eq. 3, then
GDConv and ``Linear(c, 1)``). As in :mod:`audet.models.layers.stacked` (AC2D), the branch modules
stay what they are (same parameters, same state_dict names); at call time their weights are
concatenated (``torch.cat``, so gradients reach the original parameters) and every layer runs
once for all branches.

Layout. Between layers the activations of all branches are held "channel-major" as ``(A, C, L)``
with ``L = B * H * W`` (position ``b * HW + n``): branch ``i``'s 1x1 convolution is then a matrix
product of its ``(C_out, C_in)`` weight with its ``(C_in, L)`` slice, and all branches are one
``torch.baddbmm`` over the whole batch (one product with ``L`` columns, where the per-branch conv
works sample by sample);

- the first 1x1 conv of every NTB (PatchEmbed) reads the shared map: one dense matrix product
  with ``A * C_s`` outputs (when PatchEmbed is the identity, the shared map is repeated);
- every later per-branch 1x1 conv (projection, MHCA's 1x1, the MLP) and E-MHSA's q, k, v and
  proj ``Linear``: ``baddbmm`` over the branch dimension;
- MHCA's 3x3 group conv (group size 32): the maps rearranged to ``(B, A*C_c, H, W)`` and one
  grouped conv with ``groups = A * C_c / 32``;
- GDConv (a depth-wise conv whose kernel covers the whole map): per channel, the dot product of
  the kernel with the map, ``bmm`` over the ``A * C`` channels;
- BatchNorm over the ``A*C`` channels is per channel, hence exact
  (:func:`audet.models.layers.stacked.stacked_batch_norm`, shared with AC2D's and AAR's stacked
  paths: the running statistics are written back into each branch's own buffers, as the loop
  would update them);
- attention (ESCDA Eq. 4-6): the branch dimension folded into the batch, each branch with its own
  key mask ``M_i``: the fast path scales V by ``M_i`` and calls ``scaled_dot_product_attention``
  (``(A' (x) M) V = A' (M (x) V)``, as :func:`~audet.models.layers.ntb.constrained_self_attention`);
  the explicit path materialises ``A'_i`` (Eq. 4) and ``A_i = A'_i (x) M_i`` (Eq. 5);
- stochastic depth: one draw per (branch, sample), as the loop's per-branch ``DropPath`` makes.

The outputs equal the per-branch loop up to float rounding (tests: atol 1e-5 in fp32, gradients
too, BatchNorm running statistics to 1e-6). Next-ViT's E-MHSA spatial reduction is not part of
:class:`~audet.models.layers.ntb.EMHSA` (``sr_ratio = 1``), so nothing is resampled here either.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from audet.models.layers.ntb import NextTransformerBlock, attention_weights
from audet.models.layers.stacked import cat_conv, stacked_batch_norm

__all__ = ["stacked_pointwise", "stacked_drop_path", "stacked_ntb", "stacked_gdconv",
           "branch_maps"]


def branch_maps(x: torch.Tensor, B: int, H: int, W: int) -> torch.Tensor:
    """Channel-major ``(A, C, B*H*W)`` -> maps ``(B, A*C, H, W)`` (branch-major channels)."""
    A, C, _ = x.shape
    return x.reshape(A, C, B, H, W).permute(2, 0, 1, 3, 4).reshape(B, A * C, H, W)


def _channel_major(x: torch.Tensor, A: int) -> torch.Tensor:
    """Maps ``(B, A*C, H, W)`` -> channel-major ``(A, C, B*H*W)``."""
    B, AC, H, W = x.shape
    return x.reshape(B, A, AC // A, H * W).permute(1, 2, 0, 3).reshape(A, AC // A, B * H * W)


def _pointwise_weight(convs: Sequence[nn.Module]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``(A, C_out, C_in)`` weights and ``(A, C_out, 1)`` biases of 1x1 convs or Linears."""
    c = convs[0]
    if isinstance(c, nn.Conv2d) and (c.kernel_size != (1, 1) or c.stride != (1, 1) or c.groups != 1
                                     or c.padding != (0, 0)):
        raise ValueError("stacked_pointwise needs dense 1x1 convolutions (stride 1, no padding)")
    A, co = len(convs), c.weight.shape[0]
    w = torch.cat([m.weight for m in convs]).reshape(A, co, -1)
    b = torch.cat([m.bias for m in convs]).reshape(A, co, 1) if c.bias is not None else None
    return w, b


def stacked_pointwise(x: torch.Tensor, convs: Sequence[nn.Module], shared: bool = False) -> torch.Tensor:
    """Every branch's 1x1 ``Conv2d`` (or ``Linear``) on channel-major ``x``: ``(A, C_in, L)`` ->
    ``(A, C_out, L)`` by ``baddbmm``; ``shared``: one input ``(C_in, L)`` for all branches, one
    matrix product with ``A * C_out`` outputs."""
    w, b = _pointwise_weight(convs)
    A, co, ci = w.shape
    if shared:
        flat = w.reshape(A * co, ci)
        out = torch.addmm(b.reshape(A * co, 1), flat, x) if b is not None else flat @ x
        return out.reshape(A, co, -1)
    return torch.baddbmm(b, w, x) if b is not None else torch.bmm(w, x)


def _bn_cm(x: torch.Tensor, norms: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """:func:`stacked_batch_norm` of channel-major ``(A, C, L)``: statistics per channel over ``L``."""
    A, C, L = x.shape
    return stacked_batch_norm(x.reshape(1, A * C, L), norms).reshape(A, C, L)


def stacked_drop_path(x: torch.Tensor, B: int, paths: Sequence[nn.Module]) -> torch.Tensor:
    """timm's ``DropPath`` of every branch on channel-major ``x`` ``(A, C, B*HW)``: one draw per
    (branch, sample)."""
    p = paths[0]
    if not isinstance(p, DropPath) or p.drop_prob == 0.0 or not p.training:
        return x
    A, C, L = x.shape
    keep = 1.0 - p.drop_prob
    mask = x.new_empty(A, 1, B, 1).bernoulli_(keep)
    if keep > 0.0 and p.scale_by_keep:
        mask.div_(keep)
    return (x.reshape(A, C, B, L // B) * mask).reshape(A, C, L)


def _stacked_embed(x: torch.Tensor, embeds: Sequence[nn.Module], shared: bool) -> torch.Tensor:
    """Next-ViT's PatchEmbed / projection (:class:`~audet.models.layers.ntb._Embed`, 1x1 conv + BN)."""
    if isinstance(embeds[0].conv, nn.Identity):
        return x.expand(len(embeds), -1, -1) if shared else x
    return _bn_cm(stacked_pointwise(x, [e.conv for e in embeds], shared), [e.norm for e in embeds])


def stacked_gdconv(x: torch.Tensor, blocks: Sequence[nn.Module], B: int, H: int, W: int) -> torch.Tensor:
    """Every branch's GDConv (:class:`~audet.models.layers.mobileface.LinearBlock` with a depth-wise
    kernel the size of the map, no padding: ``g_c = sum_n k_{c,n} x_{c,n}``, then BN) on
    channel-major ``x`` ``(A, C, B*HW)`` -> ``(B, A, C)``."""
    conv = blocks[0].conv
    A, C, _ = x.shape
    if conv.groups != conv.in_channels or conv.kernel_size != (H, W) or conv.padding != (0, 0) or conv.bias is not None:
        raise ValueError("stacked GDConv needs a depth-wise kernel covering the whole map without padding or bias")
    k = torch.cat([b.conv.weight for b in blocks]).reshape(A * C, H * W, 1)
    g = torch.bmm(x.reshape(A * C, B, H * W), k).reshape(A * C, B).t()  # (B, A*C)
    return stacked_batch_norm(g, [b.bn for b in blocks]).reshape(B, A, C)


def _stacked_emhsa(x: torch.Tensor, blocks: Sequence[NextTransformerBlock], masks: torch.Tensor | None,
                   explicit: bool, B: int):
    """E-MHSA with the constraint (ESCDA Eq. 4-6) of every branch on channel-major (already normed)
    ``x`` ``(A, C, B*N)``; ``masks`` ``(A, N)`` (M_i over the keys) or None. Returns ``(A, C, B*N)``
    and, when ``explicit``, ``(A', A)`` each ``(A, B, heads, N, N)``."""
    attns = [b.e_mhsa for b in blocks]
    A, C, L = x.shape
    N = L // B
    h, d = attns[0].num_heads, attns[0].head_dim
    # q, k, v of every branch in one product, token-major (A, L, 3C): Linear output channel = head * d + j
    qkv = _qkv(x, attns).reshape(A, B, N, 3, h, d)
    q, k, v = (qkv[:, :, :, i].transpose(2, 3).reshape(A * B, h, N, d) for i in range(3))  # views
    info = None
    if not explicit:
        if masks is not None:  # M_i (x) V_i: the mask scales the keys' values
            v = (v.reshape(A, B, h, N, d) * masks[:, None, None, :, None]).reshape(A * B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        a0 = attention_weights(q, k).reshape(A, B, h, N, N)  # Eq. 4
        a = a0 * masks[:, None, None, None, :] if masks is not None else a0  # Eq. 5
        out = a.reshape(A * B, h, N, N) @ v  # Eq. 6
        info = (a0, a)
    out = out.reshape(A, B, h, N, d).transpose(2, 3).reshape(A, L, C)  # token-major, channel = head * d + j
    return stacked_pointwise(out.transpose(1, 2), [a.proj for a in attns]), info  # proj -> (A, C, L)


def _qkv(x: torch.Tensor, attns: Sequence[nn.Module]) -> torch.Tensor:
    """q, k, v Linears of every branch on channel-major ``x`` ``(A, C, L)``, token-major out:
    ``(A, L, 3C)`` (branch ``i``: its q, then k, then v)."""
    A, C, _ = x.shape
    w = torch.cat([lin.weight for a in attns for lin in (a.q, a.k, a.v)]).reshape(A, 3 * C, C)
    xt = x.transpose(1, 2)  # (A, L, C), a view
    if attns[0].q.bias is None:
        return torch.bmm(xt, w.transpose(1, 2))
    b = torch.cat([lin.bias for a in attns for lin in (a.q, a.k, a.v)]).reshape(A, 1, 3 * C)
    return torch.baddbmm(b, xt, w.transpose(1, 2))


def stacked_ntb(x: torch.Tensor, blocks: Sequence[NextTransformerBlock], masks: torch.Tensor | None = None,
                return_attention: bool = False):
    """Every branch's :class:`~audet.models.layers.ntb.NextTransformerBlock` on the SHARED map ``x``
    ``(B, C_in, H, W)``, branch ``i`` with key mask ``masks[i]`` (``masks`` ``(A, H*W)``, Eq. 3) or
    none (``masks=None``: vanilla NTB).

    Returns the outputs channel-major ``(A, C, B*H*W)`` (:func:`branch_maps` gives the maps) and,
    with ``return_attention``, ``(A', A)`` each ``(A, B, heads, HW, HW)``. The steps are those of
    ``NextTransformerBlock.forward``.
    """
    A = len(blocks)
    if masks is not None and masks.shape[0] != A:
        raise ValueError(f"{masks.shape[0]} masks for {A} branches")
    B, Cin, H, W = x.shape
    xs = x.reshape(B, Cin, H * W).transpose(0, 1).reshape(Cin, B * H * W)  # the shared map, (C_in, L)
    x = _stacked_embed(xs, [b.patch_embed for b in blocks], shared=True)  # (A, C_s, L)
    a, attn = _stacked_emhsa(_bn_cm(x, [b.norm1 for b in blocks]), blocks, masks, return_attention, B)
    x = x + stacked_drop_path(a, B, [b.mhsa_drop_path for b in blocks])
    y = _stacked_embed(x, [b.projection for b in blocks], shared=False)  # (A, C_c, L)
    # MHCA: 3x3 group conv on the maps (one grouped conv over A * C_c channels), BN, ReLU, 1x1 conv
    mh = [b.mhca for b in blocks]
    g = mh[0].group_conv3x3
    w, b = cat_conv([m.group_conv3x3 for m in mh])
    z = F.conv2d(branch_maps(y, B, H, W), w, b, g.stride, g.padding, g.dilation, A * g.groups)
    z = _channel_major(F.relu(stacked_batch_norm(z, [m.norm for m in mh])), A)
    z = stacked_pointwise(z, [m.projection for m in mh])
    y = y + stacked_drop_path(z, B, [b.mhca_drop_path for b in blocks])
    x = torch.cat([x, y], dim=1)  # concat(x, y) within each branch: (A, C, L)
    mlps = [b.mlp for b in blocks]
    if not (isinstance(mlps[0].norm, nn.Identity) and isinstance(mlps[0].act, nn.ReLU)):
        raise ValueError("stacked NTB expects Next-ViT's MLP: 1x1 conv, ReLU, 1x1 conv (no norm)")
    z = F.relu(stacked_pointwise(_bn_cm(x, [b.norm2 for b in blocks]), [m.fc1 for m in mlps]))
    z = F.dropout(z, mlps[0].drop.p, mlps[0].drop.training)
    z = stacked_pointwise(z, [m.fc2 for m in mlps])
    x = x + stacked_drop_path(z, B, [b.mlp_drop_path for b in blocks])
    return (x, attn) if return_attention else x
