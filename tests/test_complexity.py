"""Parameter and FLOP counting (audet.complexity) and the `audet complexity` command."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audet.complexity import count_flops, count_parameters, count_training_flops, model_input_shape
from audet.models import create_model


def test_count_parameters_shared_and_trainable():
    lin = nn.Linear(10, 5)
    m = nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(5, 2))
    assert count_parameters(m) == 55 + 12
    m[3].weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 55 + 2


def test_flops_linear_and_conv_by_hand():
    r = count_flops(nn.Linear(10, 5), inputs=torch.randn(3, 10))
    assert r["flops"] == 2 * 3 * 10 * 5 and r["macs"] == 150
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    r = count_flops(conv, inputs=torch.randn(1, 3, 16, 16))
    assert r["flops"] == 2 * 16 * 16 * 8 * 3 * 9


def test_training_flops_count_what_autograd_runs():
    # one Linear on an input without grad: forward 2*B*I*O, backward only the weight gradient
    # 2*B*I*O (no input gradient); a second trainable Linear adds its input gradient too
    B, I, H, O = 4, 10, 6, 3
    one = count_training_flops(nn.Linear(I, O), inputs=torch.randn(B, I))
    assert one == 2 * B * I * O + 2 * B * I * O
    two = nn.Sequential(nn.Linear(I, H), nn.ReLU(), nn.Linear(H, O))
    assert count_training_flops(two, inputs=torch.randn(B, I)) == (2 * B * I * H + 2 * B * H * O) + 2 * B * I * H + 2 * (2 * B * H * O)
    # a frozen first layer (a frozen pretrained part) gets no backward at all, so the second
    # layer's input gradient is not formed either: only its weight gradient
    two[0].requires_grad_(False)
    assert count_training_flops(two, inputs=torch.randn(B, I)) == (2 * B * I * H + 2 * B * H * O) + 2 * B * H * O
    assert two.training  # mode restored
    # a depth-wise convolution's gradients cost what its forward costs (groups counted)
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    fwd = 2 * 2 * 8 * 6 * 6 * 9
    x = torch.randn(2, 8, 6, 6)
    assert count_flops(dw, inputs=x)["flops"] == fwd
    assert count_training_flops(dw, inputs=x) == fwd + fwd  # weight gradient only
    assert count_training_flops(dw, inputs=x.requires_grad_(True)) == fwd + 2 * fwd
    two.eval()
    count_training_flops(two, inputs=torch.randn(B, I))
    assert not two.training


class SDPA(nn.Module):
    def forward(self, x):  # (B, h, N, d)
        return F.scaled_dot_product_attention(x, x, x)


def test_attention_is_counted():
    B, h, N, d = 1, 2, 16, 8
    r = count_flops(SDPA(), inputs=torch.randn(B, h, N, d))
    assert r["flops"] == 2 * (2 * B * h * N * N * d)  # q k^T and A v


def test_mode_restored_and_input_shape_from_preprocess():
    m = create_model("ac2d_bnet", num_aus=1, img_size=64, depths=(1, 1, 2))
    m.train()
    count_flops(m)
    assert m.training
    assert model_input_shape(m) == (1, 3, 64, 64)
    m.preprocess = dict(m.preprocess, clip={"offsets": [-10, 0, 10]})
    assert model_input_shape(m, 32, batch=2) == (2, 3, 3, 32, 32)
    assert model_input_shape(m, (1, 3, 8, 8)) == (1, 3, 8, 8)


@pytest.mark.parametrize(
    "name,num_aus,flops",
    [
        ("ac2d", 12, 8_952_300_032),  # the authors' model counted the same way (with K/V data)
        ("ac2d_bnet", 12, 8_950_516_736),  # = the authors' model without the causal layer
        ("ac2d", 8, 7_509_462_528),
    ],
)
def test_ac2d_flops_equal_authors_count(name, num_aus, flops):
    m = create_model(name, num_aus=num_aus)
    r = count_flops(m, 176)
    assert r["flops"] == flops
    assert r["gmacs"] == pytest.approx(flops / 2e9)
    if name == "ac2d":  # counting installs temporary prototypes and restores the buffers
        assert not bool(m.proto_valid) and m.proto_k.abs().sum() == 0


def test_cli_json(capsys):
    from audet.cli import main

    assert main(["complexity", "ac2d", "--aus", "BP4D", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] == 3_625_196 and r["trainable_params"] == 3_625_196
    assert r["flops"] == 8_952_300_032 and r["input_shape"] == [1, 3, 176, 176]
    assert "FlopCounterMode" in r["method"]
    assert main(["complexity", "ac2d_av", "--aus", "DISFA"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "MACs" in out and "8 AUs" in out
