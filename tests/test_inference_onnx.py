"""ONNX export (`audet export --onnx`) with a dynamic batch, numerically checked against PyTorch for
every registered model, and onnxruntime as a backend of audet.Detector / `audet predict`."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from inference_helpers import AUS, astronaut, make_checkpoint
from test_registry import AUS as REG_AUS, DATA, small_config

import audet
from audet.cli import main
from audet.inference.onnx_export import ExportError, check_onnx, export_onnx
from audet.models import create_model, list_models


def build(name):
    """Each registered model at its small test configuration, with data info for those that need it."""
    return create_model(name, num_aus=len(REG_AUS), aus=REG_AUS, data=DATA, **small_config(name))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_and_matches_pytorch(name, tmp_path):
    """The one export pass over every registered model (was two: here and test_export.py)."""
    import onnx

    from audet.inference.onnx_export import example_input

    torch.manual_seed(0)
    model = build(name).eval()
    reason = getattr(model, "onnx_unsupported", None)
    if reason:
        pytest.skip(f"{name} declares it cannot be exported: {reason}")
    with torch.no_grad():  # eval: forward_logits == forward(x).logits up to float rounding (fused attention)
        x = example_input(model, 2)
        np.testing.assert_allclose(model.forward_logits(x).numpy(), model(x).logits.numpy(), atol=1e-5, rtol=0)
    rep = export_onnx(model, tmp_path / f"{name}.onnx", exporter="torchscript", check=False)
    onnx.checker.check_model(onnx.load(rep["path"]))
    # a dynamic batch: batches of 1 and 3 against PyTorch
    parity = check_onnx(model, rep["path"], batches=(1, 3), atol=1e-4)
    assert parity["max_abs_diff"] < 1e-4


def test_dynamo_exporter_gives_a_dynamic_batch_too(tmp_path):
    model = create_model("resnet_tiny", num_aus=3, aus=AUS, width=4).eval()
    rep = export_onnx(model, tmp_path / "m.onnx", exporter="dynamo")
    assert rep["exporter"] == "dynamo" and rep["max_abs_diff"] < 1e-4


def test_a_file_that_disagrees_with_pytorch_is_caught(tmp_path):
    model = create_model("resnet_tiny", num_aus=3, aus=AUS, width=4).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, exporter="torchscript")
    with torch.no_grad():
        model.fc.bias += 0.01
    with pytest.raises(ExportError, match="differ by up to"):
        check_onnx(model, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_export_command_and_onnxruntime_backend_match_torch(ckpt, tmp_path, capsys):
    import onnx

    out = tmp_path / "tiny.onnx"
    assert main(["export", "-c", str(ckpt), "--out", str(out)]) == 0
    assert "onnxruntime vs PyTorch max |diff|" in capsys.readouterr().out
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["audet"])
    assert meta["aus"] == AUS and meta["model"] == "resnet_tiny" and meta["preprocess"]["crop_size"] == 176
    img = astronaut()
    two = np.concatenate([img, img], axis=1)
    ref = audet.Detector(checkpoint=ckpt).detect_image(two)
    got = audet.Detector(checkpoint=out, backend="onnxruntime").detect_image(two)
    cols = [f"AU{a:02d}_p" for a in AUS]
    np.testing.assert_allclose(got[cols].to_numpy(), ref[cols].to_numpy(), atol=1e-5)
    # `audet predict --backend onnxruntime` with the .safetensors exports <checkpoint>.onnx beside it
    imgp = tmp_path / "two.png"
    import cv2

    cv2.imwrite(str(imgp), cv2.cvtColor(two, cv2.COLOR_RGB2BGR))
    assert main(["predict", str(imgp), "--checkpoint", str(ckpt), "--backend", "onnxruntime", "--out",
                 str(tmp_path / "o"), "--quiet"]) == 0
    assert ckpt.with_suffix(".onnx").is_file()
    table = pd.read_csv(tmp_path / "o" / "two.csv")
    np.testing.assert_allclose(table[cols].to_numpy(), ref[cols].to_numpy(), atol=2e-5)


def test_export_needs_a_checkpoint_and_no_format_flag(tmp_path, capsys):
    assert main(["export"]) == 2
    assert "--checkpoint CKPT is required" in capsys.readouterr().err
    assert main(["export", "-c", str(tmp_path / "none.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
