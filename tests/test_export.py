"""The logits-only path of every registered model exports to ONNX (torch.onnx.export, TorchScript
tracer) and onnxruntime reproduces PyTorch's logits; complexity counts the same path."""
import warnings

import numpy as np
import pytest
import torch

from test_registry import AUS, DATA, small_config

from audet.models import create_model, list_models
from audet.models.base import LogitsOnly

import onnx  # noqa: E402  (the [test] extra installs the [onnx] extra)
import onnxruntime as ort  # noqa: E402



def export_and_run(model, x, path):
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LogitsOnly(model), (x,), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], opset_version=17)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x.numpy()})[0]


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_to_onnx(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_aus=len(AUS), aus=AUS, data=DATA, **small_config(name)).eval()
    size = int(model.preprocess["crop_size"])
    clip = model.preprocess.get("clip")
    lead = (2,) if not clip else (2, len(clip.get("offsets", [])) or int(clip.get("length", 2)))
    x = torch.randn(*lead, 3, size, size)
    with torch.no_grad():
        ref = model.forward_logits(x).numpy()
        # eval: forward_logits == forward(x).logits up to float rounding (it may use fused attention)
        np.testing.assert_allclose(ref, model(x).logits.numpy(), atol=1e-5, rtol=0)
    got = export_and_run(model, x, tmp_path / f"{name}.onnx")
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_ac2d_with_prototypes_exports_the_intervention_path(tmp_path):
    torch.manual_seed(0)
    model = create_model("ac2d", num_aus=len(AUS), aus=AUS, **small_config("ac2d")).eval()
    model.set_prototypes(torch.randn(model.proto_k.shape), 10.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_logits(x).numpy()
        assert not np.allclose(ref, model(x, intervention=False).logits.numpy())  # the intervention acts
    np.testing.assert_allclose(export_and_run(model, x, tmp_path / "ac2d.onnx"), ref, atol=1e-4, rtol=1e-4)
