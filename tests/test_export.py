"""AC2D's intervention path (prototypes set) exports to ONNX and onnxruntime reproduces it. The pass
over every registered model is in test_inference_onnx.py (one pass, issue 21)."""
import warnings

import numpy as np
import torch

from test_registry import AUS, small_config

from audet.models import create_model
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


def test_ac2d_with_prototypes_exports_the_intervention_path(tmp_path):
    torch.manual_seed(0)
    model = create_model("ac2d", num_aus=len(AUS), aus=AUS, **small_config("ac2d")).eval()
    model.set_prototypes(torch.randn(model.proto_k.shape), 10.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_logits(x).numpy()
        assert not np.allclose(ref, model(x, intervention=False).logits.numpy())  # the intervention acts
    np.testing.assert_allclose(export_and_run(model, x, tmp_path / "ac2d.onnx"), ref, atol=1e-4, rtol=1e-4)
