"""audet.models.layers: each shared layer against a hand computation of its equation.

(Imported from the submodules, as the rules ask; AC2D's end-to-end parity is in test_parity_ac2d.)
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audet.models.layers.attention import ATTENTION_OUTPUTS, EMSAv2
from audet.models.layers.block import Block, init_restv2_weights
from audet.models.layers.causal import CausalIntervention
from audet.models.layers.embed import LN_EPS, ConvStem, PatchEmbed, PixelAttention, tokens_to_map


@pytest.fixture(autouse=True)
def _double():
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _emsa_by_hand(m: EMSAv2, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """AC2D Eq. 1-2 for sr_ratio = 1, head by head: proj(concat_h softmax(Q_h K_h^T / sqrt(d)) V_h + UP(V))."""
    B, N, C = x.shape
    h, d = m.num_heads, C // m.num_heads
    q = x @ m.q.weight.T + m.q.bias
    kv = x @ m.kv.weight.T + m.kv.bias
    k, v = kv[..., :C], kv[..., C:]
    heads = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)  # channel = head * d + j
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)  # Eq. 1
        heads.append(a @ v[..., sl])
    av = torch.cat(heads, dim=-1)
    vmap = v.transpose(1, 2).reshape(B, C, H, W)
    up = F.conv2d(vmap, m.up_conv.weight, m.up_conv.bias, padding=1, groups=C)  # PixelShuffle(1) = id
    up = F.layer_norm(up.flatten(2).transpose(1, 2), (C,), m.up_norm.weight, m.up_norm.bias, LN_EPS)
    return (av + up) @ m.proj.weight.T + m.proj.bias  # Eq. 2, then the output projection


def _randomise(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def test_emsav2_matches_equations_1_2_by_hand():
    m = _randomise(EMSAv2(8, num_heads=2, sr_ratio=1))
    x = torch.randn(2, 12, 8)
    want = _emsa_by_hand(m, x, 3, 4)
    torch.testing.assert_close(m(x, 3, 4), want)
    out, info = m.forward_attn(x, 3, 4, outputs=ATTENTION_OUTPUTS)
    torch.testing.assert_close(out, want)
    a = info["full"]
    assert a.shape == (2, 2, 12, 12)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 12))  # softmax rows (Eq. 1)
    torch.testing.assert_close(info["mean"], a.mean(dim=(1, 2)))  # AC2D Eq. 6
    torch.testing.assert_close(info["logmean"], a.log().mean(dim=(1, 2)))


def test_emsav2_spatial_reduction_fused_and_explicit_agree_and_all_parameters_learn():
    m = _randomise(EMSAv2(8, num_heads=2, sr_ratio=2))
    x = torch.randn(2, 16, 8, requires_grad=True)
    fused = m(x, 4, 4)
    explicit, info = m.forward_attn(x, 4, 4, outputs=("full",))
    torch.testing.assert_close(fused, explicit)
    assert info["full"].shape == (2, 2, 16, 4)  # keys reduced 4x4 -> 2x2
    fused.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_emsav2_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        EMSAv2(6, num_heads=4)
    m = EMSAv2(8, num_heads=2, sr_ratio=2)
    with pytest.raises(ValueError, match="divisible by sr_ratio=2"):
        m(torch.randn(1, 15, 8), 3, 5)
    with pytest.raises(ValueError, match="unknown attention outputs"):
        m.forward_attn(torch.randn(1, 16, 8), 4, 4, outputs=("max",))


def test_block_is_prenorm_residual():
    blk = _randomise(Block(8, num_heads=2, sr_ratio=1))
    x = torch.randn(2, 9, 8)
    # with the attention and MLP outputs zeroed, a residual block is the identity
    with torch.no_grad():
        for lin in (blk.attn.proj, blk.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    torch.testing.assert_close(blk(x, 3, 3), x)
    # otherwise: x1 = x + attn(norm1(x)); x2 = x1 + fc2(gelu(fc1(norm2(x1))))
    blk = _randomise(Block(8, num_heads=2, sr_ratio=1))
    x1 = x + blk.attn(blk.norm1(x), 3, 3)
    mlp = blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x1))))  # exact (erf) GELU
    torch.testing.assert_close(blk(x, 3, 3), x1 + mlp)
    out, info = blk.forward_attn(x, 3, 3)
    torch.testing.assert_close(out, x1 + mlp)
    assert info["mean"].shape == (2, 9)


def test_init_restv2_weights():
    torch.set_default_dtype(torch.float32)
    m = nn.Sequential(nn.Linear(256, 512), nn.Conv2d(64, 128, 3, groups=2), nn.LayerNorm(16), nn.BatchNorm2d(4))
    for mod in m:
        for p in mod.parameters():
            nn.init.constant_(p, 7.0)
    m.apply(init_restv2_weights)
    lin, conv, ln, bn = m
    assert lin.weight.std().item() == pytest.approx(0.02, rel=0.05)
    fan_out = 3 * 3 * 128 // 2
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    for b in (lin.bias, conv.bias, ln.bias, bn.bias):
        assert torch.count_nonzero(b) == 0
    assert torch.all(ln.weight == 1) and torch.all(bn.weight == 1)


def test_causal_intervention_one_prototype_is_linear_and_qk_get_no_gradient():
    ci = _randomise(CausalIntervention(dim=4, key_dim=32))
    f = torch.randn(3, 4)
    v = torch.randn(1, 4)  # one prototype (AC2D Eq. 12a): softmax over one key is 1
    out = ci(f, torch.randn(1, 4), v)
    want = f @ ci.w_x.weight.T + ci.w_x.bias + v @ ci.w_z.weight.T + ci.w_z.bias  # Eq. 10
    torch.testing.assert_close(out, want)
    out.sum().backward()
    assert torch.count_nonzero(ci.w_q.weight.grad) == 0 and torch.count_nonzero(ci.w_k.weight.grad) == 0
    assert ci.w_x.weight.grad.abs().sum() > 0 and ci.w_z.weight.grad.abs().sum() > 0


def test_causal_intervention_attends_over_several_prototypes():
    ci = _randomise(CausalIntervention(dim=4, key_dim=8))
    f, keys, values = torch.randn(2, 4), torch.randn(3, 4), torch.randn(3, 4)
    q = f @ ci.w_q.weight.T + ci.w_q.bias
    k = keys @ ci.w_k.weight.T + ci.w_k.bias
    alpha = torch.softmax(q @ k.T / math.sqrt(8), dim=-1)  # Eq. 11-12
    torch.testing.assert_close(ci.confounder(f, keys, values), alpha @ values)  # Eq. 13
    # per-sample prototypes broadcast: (N, 1, C) keys for (N, C) features
    one = ci.confounder(f, keys[:2, None], values[:2, None])
    torch.testing.assert_close(one, values[:2])


def test_causal_zero_touch_keeps_every_parameter_in_the_graph():
    ci = CausalIntervention(dim=4, key_dim=8)
    z = ci.zero_touch()
    assert z.item() == 0.0
    z.backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in ci.parameters())


def test_pixel_attention_and_embeddings():
    pa = PixelAttention(3)
    with torch.no_grad():
        pa.conv.weight.zero_()
        pa.conv.bias.copy_(torch.tensor([0.0, 1.0, -2.0]))
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(pa(x), x * torch.sigmoid(pa.conv.bias).view(1, 3, 1, 1))  # x * sigmoid(dwconv(x)+b)

    stem = ConvStem(3, dim=8).eval()
    tokens, H, W = stem(torch.randn(2, 3, 16, 16))
    assert (H, W) == (8, 8) and tokens.shape == (2, 64, 8)  # halves the resolution
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 64), atol=1e-9, rtol=0)  # LayerNorm (w=1, b=0)
    pe = PatchEmbed(8, 16)
    t2, H2, W2 = pe(tokens_to_map(tokens, H, W))
    assert (H2, W2) == (4, 4) and t2.shape == (2, 16, 16)


def test_tokens_to_map_inverts_flatten():
    m = torch.randn(2, 5, 3, 4)
    tokens = m.flatten(2).transpose(1, 2)  # row-major tokens (B, H*W, C)
    torch.testing.assert_close(tokens_to_map(tokens, 3, 4), m)
