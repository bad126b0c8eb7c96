"""Parity with the authors' CISNet head (shared/reference/golden/cis_head_resnet18).

The golden files come from the authors' own ``net.CISNet.Model`` (resnet18, subject=True) with its
encoder replaced by ``nn.Identity`` and seeded random weights; ``final_model.pt`` is their
training script's dict (head state_dict + K_subject/V_subject/P_subject for 6 subjects). We
convert it and feed the stored pooled encoder output through projector -> CIS -> classifier;
every stored output must match with atol 1e-5. Skipped when ../shared is not beside the repo.
"""
from __future__ import annotations

import pytest
import torch

from helpers import GOLDEN as GOLDEN_ROOT, REFERENCE, golden_io, one_thread, parity_marks, reference_layout

GOLDEN = GOLDEN_ROOT / "cis_head_resnet18"
ATOL = 1e-5

pytestmark = parity_marks(GOLDEN / "final_model.pt")


@pytest.fixture(scope="module")
def golden():
    from audet.models.convert.cisnet import convert_cisnet

    io = golden_io(GOLDEN)
    model = convert_cisnet(GOLDEN / "final_model.pt", "BP4D", backbone="resnet18")
    with one_thread(), torch.no_grad():
        feature = model.projector(io["input"])  # the pooled encoder output is the stored input
        logits = model.forward_head(feature)
        logits_no_subject = model.forward_head(feature, intervention=False)
        alpha = model.cis.attention(feature)
    return model, io, feature, logits, logits_no_subject, alpha


def maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_converted_dictionary_matches_checkpoint(golden):
    model, io, *_ = golden
    assert model.model_name == "cisnet_r18" and model.aus == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    rep = model.conversion_report
    assert rep["missing_encoder"] and rep["dictionary"] and rep["subjects"] == 6
    cis = model.cis
    assert cis.valid and bool(cis.dict_present.all())
    assert torch.equal(cis.dict_keys, io["K_subject"]) and torch.equal(cis.dict_values, io["V_subject"])
    assert torch.allclose(cis.dict_priors, io["P_subject"])
    # the priors are n_s / N with n = [5, 3, 7, 4, 6, 5] (golden README) and V = P * K
    assert torch.allclose(io["P_subject"], torch.tensor([5, 3, 7, 4, 6, 5]) / 30.0)
    assert rep["V_minus_PK_max_abs"] < 1e-6


def test_head_outputs(golden):
    _, io, feature, logits, logits_no_subject, alpha = golden
    assert maxdiff(feature, io["feature"]) < ATOL
    assert maxdiff(alpha, io["subject_attention_weights"]) < ATOL
    assert maxdiff(torch.sigmoid(logits), io["output"]) < ATOL  # the authors' head ends in a Sigmoid
    assert maxdiff(torch.sigmoid(logits_no_subject), io["output_no_subject"]) < ATOL
    # the two paths really differ, so the subject attention is being tested
    assert maxdiff(io["output"], io["output_no_subject"]) > 1e-3


def test_eval_without_intervention_is_the_authors_test_phase(golden):
    from audet.models.convert.cisnet import convert_cisnet

    _, io, *_ = golden
    m = convert_cisnet(GOLDEN / "final_model.pt", "BP4D", backbone="resnet18", eval_intervention=False)
    with torch.no_grad():
        out = torch.sigmoid(m.forward_head(m.projector(io["input"])))
    assert maxdiff(out, io["output_no_subject"]) < ATOL


TSV = REFERENCE / "cis_resnet34_12au.tsv"


@pytest.mark.skipif(not TSV.is_file(), reason=f"{TSV} not found")
def test_resnet34_layout_matches_the_authors_state_dict():
    """Every row of the authors' ResNet-34 CISNet state_dict (name, shape, order) maps onto ours."""
    from audet.models import create_model
    from audet.models.base import DataInfo
    from audet.models.convert.cisnet import to_authors_checkpoint

    rows = reference_layout(TSV)
    m = create_model("cisnet_r34", aus=[1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24],
                     data=DataInfo(aus=list(range(12)), subjects=[f"S{i}" for i in range(27)]))
    sd = to_authors_checkpoint(m)["model"]
    names = [r[0] for r in rows]
    assert set(names) == set(sd) and len(names) == len(sd)
    # same order, except that the authors declare kmap before qmap (we load by name, not position)
    other = lambda ns: [n for n in ns if not n.startswith("subject_attention.")]  # noqa: E731
    assert other(names) == other(sd)
    assert all(shape == tuple(sd[name].shape) for name, shape, _ in rows)
    n_params = sum(torch.Size(shape).numel() for _, shape, kind in rows if kind == "parameter")
    assert n_params == sum(p.numel() for p in m.parameters()) == 22_368_908
