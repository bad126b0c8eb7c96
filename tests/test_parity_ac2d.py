"""Parity with the authors' AC2D outputs (shared/reference/golden/ac2d_bp4d_12au).

The golden files were produced by the authors' own ``ResTV2_ac2d`` with seeded random weights;
we convert their checkpoint (``net_20.pth``: state_dict + K_data, V_data = K_data/16, P_data = 1/16)
and compare every stored output with atol 1e-5. Skipped when ../shared is not beside the repo.
"""
from __future__ import annotations


import pytest
import torch

from helpers import GOLDEN as GOLDEN_ROOT, golden_io, one_thread, parity_marks

GOLDEN = GOLDEN_ROOT / "ac2d_bp4d_12au"
ATOL = 1e-5

pytestmark = parity_marks(GOLDEN / "net_20.pth")


@pytest.fixture(scope="module")
def golden():
    from audet.models.convert.ac2d import convert_ac2d

    io = golden_io(GOLDEN)
    model = convert_ac2d(GOLDEN / "net_20.pth", "BP4D", confounder_scale="code")
    with one_thread(), torch.no_grad():
        out = model(io["input"], return_full_attention=True)
        out_no_data = model(io["input"], intervention=False)
    return model, io, out, out_no_data


def maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_converted_prototypes_match_checkpoint(golden):
    model, io, _, _ = golden
    assert model.model_name == "ac2d" and model.aus == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    assert model.confounder_scale == "code" and bool(model.proto_valid)
    assert torch.equal(model.proto_k, io["K_data"]) and torch.equal(model.proto_v, io["V_data"])
    assert float(model.proto_count) == 16.0  # 1 / P_data
    assert torch.allclose(io["V_data"], io["K_data"] / 16)  # what the authors feed as V


def test_features_and_logits(golden):
    _, io, out, out_no_data = golden
    assert maxdiff(out.aux["features"], io["aus_feature"]) < ATOL
    assert maxdiff(out.logits, io["aus_output"]) < ATOL
    assert maxdiff(out_no_data.logits, io["aus_output_no_data"]) < ATOL
    # the two paths really differ, so the intervention is being tested
    assert maxdiff(io["aus_output"], io["aus_output_no_data"]) > 1e-3


def test_attention_maps(golden):
    _, io, out, _ = golden
    full = out.aux["attention_full"]
    assert full.shape == (2, 12, 4 * 484 * 484)
    assert maxdiff(out.aux["attention"].reshape(2, 12, 484), io["aus_attention_mean"]) < ATOL
    assert maxdiff(full[0, 0], io["aus_attention_b0_au0"]) < ATOL
    assert maxdiff(full[1, 11], io["aus_attention_b1_au11"]) < ATOL
    assert maxdiff(full[:, :, ::97], io["aus_attention_stride97"]) < ATOL


def test_paper_scale_conversion_changes_only_the_confounder(golden):
    from audet.models.convert.ac2d import convert_ac2d

    _, io, out, _ = golden
    paper = convert_ac2d(GOLDEN / "net_20.pth", "BP4D", confounder_scale="paper")
    assert torch.equal(paper.proto_v, io["K_data"])
    x = io["input"][:1]
    with torch.no_grad():
        o = paper(x)
    assert maxdiff(o.aux["features"], io["aus_feature"][:1]) < ATOL
    # Eq. 13 scale: logits = head(W_X f + W_Z K) instead of head(W_X f + W_Z K/16)
    br = paper.branches[3]
    f = io["aus_feature"][:1, 3]
    ref = br.head(br.intervention.w_x(f) + br.intervention.w_z(io["K_data"][3:4])).squeeze(-1)
    assert maxdiff(o.logits[:, 3], ref.detach()) < ATOL


def test_stacked_branches_reproduce_the_golden_outputs(golden):
    model, io, _, _ = golden
    try:
        model.branch_impl = "batched"
        with one_thread(), torch.no_grad():
            out = model(io["input"])
            logits = model.forward_logits(io["input"])
    finally:
        model.branch_impl = "auto"
    assert maxdiff(out.aux["features"], io["aus_feature"]) < ATOL
    assert maxdiff(out.logits, io["aus_output"]) < ATOL and maxdiff(logits, io["aus_output"]) < ATOL
    assert maxdiff(out.aux["attention"].reshape(2, 12, 484), io["aus_attention_mean"]) < ATOL
