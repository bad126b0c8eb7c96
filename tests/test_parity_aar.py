"""Parity of AAR's region layers with JAA-Net's (shared/reference/golden/jaanet_region_layers).

The golden files come from the authors' ``HMRegionLearning(3, 8)`` with seeded random weights; its
checkpoint ``region_learning_12.pth`` loads into :class:`audet.models.layers.region.RegionLearning`
as is, and into AAR's ``region_learning`` with the key prefix added. Outputs compared with atol
1e-5. Skipped when ../shared is not beside the repo.
"""
from __future__ import annotations

import pytest
import torch

from helpers import GOLDEN as GOLDEN_ROOT, REFERENCE, golden_io, one_thread, parity_marks, reference_layout

GOLDEN = GOLDEN_ROOT / "jaanet_region_layers"
TSV = REFERENCE / "jaanet_region_layers.tsv"
ATOL = 1e-5

pytestmark = parity_marks(GOLDEN / "region_learning_12.pth")


@pytest.fixture(scope="module")
def golden():
    io = golden_io(GOLDEN)
    state = torch.load(GOLDEN / "region_learning_12.pth", map_location="cpu", weights_only=True)
    return io, state


def test_state_dict_names_and_shapes_match_the_reference_table():
    from audet.models.layers.region import RegionLearning

    ref = [(name, shape) for name, shape, _ in reference_layout(TSV)]
    ours = [(k, tuple(v.shape)) for k, v in RegionLearning(3, 8).state_dict().items()]
    assert ours == ref  # same names, shapes AND order


def test_region_layers_reproduce_golden(golden):
    from audet.models.layers.region import RegionLearning

    io, state = golden
    model = RegionLearning(3, 8)
    model.load_state_dict(state, strict=True)
    model.eval()
    with one_thread(), torch.no_grad():
        layer1 = model.multiscale_feat[1](model.multiscale_feat[0](io["input"]))
        out = model(io["input"])
    assert (layer1 - io["layer1_pooled"]).abs().max().item() < ATOL
    assert out.shape == io["output"].shape == (2, 64, 44, 44)
    assert (out - io["output"]).abs().max().item() < ATOL


def test_region_weights_load_into_aar(golden):
    from audet.models import create_model

    io, state = golden
    model = create_model("aar", num_aus=12).eval()
    missing, unexpected = model.load_state_dict({f"region_learning.{k}": v for k, v in state.items()}, strict=False)
    assert not unexpected and all(not k.startswith("region_learning.") for k in missing)
    with torch.no_grad():
        out = model.region_learning(io["input"])
    assert (out - io["output"]).abs().max().item() < ATOL
