"""Reduced-precision evaluation: inference_precision (fp32 / bf16 autocast / fp16 on CUDA) and
run_evaluator under it (fp32 logits reach the evaluator; bf16 stays close to fp32)."""
import pytest
import torch

from audet.engine.evaluate import inference_precision, run_evaluator
from audet.engine.scoring import AUEvaluator
from audet.models import create_model


def test_precisions_and_errors():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with inference_precision("32"):
        assert lin(x).dtype == torch.float32
    for name in ("bf16", "bf16-mixed"):
        with inference_precision(name):
            assert lin(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        inference_precision("16", "cpu")
    with pytest.raises(ValueError, match="choose one of"):
        inference_precision("8")


def test_run_evaluator_bf16_close_to_fp32():
    torch.manual_seed(0)
    model = create_model("ac2d", num_aus=2, img_size=64, depths=(1, 1, 1), embed_dim=16, causal_dim=32,
                         drop_path_rate=0.0)
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(4, 3, 64, 64, generator=g), "labels": (torch.rand(4, 2, generator=g) > 0.5).float(),
                "mask": torch.ones(4, 2), "index": torch.arange(4) + 4 * i} for i in range(2)]
    p32 = run_evaluator(model, batches, AUEvaluator([1, 2]), precision="32").arrays()[0]
    p16 = run_evaluator(model, batches, AUEvaluator([1, 2]), precision="bf16").arrays()[0]
    assert p16.dtype == p32.dtype and p16.shape == (8, 2)
    diff = abs(p16 - p32).max()
    assert 0 < diff < 0.02, diff  # bf16 really ran, and stays close


def test_the_torch_backend_of_predict_runs_at_the_asked_precision():
    """`audet predict --precision bf16` / Detector(precision=...): the same autocast as evaluation."""
    from audet.inference.backends import TorchBackend
    from audet.inference.loading import load_backend

    torch.manual_seed(0)
    model = create_model("ac2d", num_aus=2, img_size=64, depths=(1, 1, 1), embed_dim=16, causal_dim=32,
                         drop_path_rate=0.0)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    p32 = TorchBackend(model, "cpu", "32")(x)
    p16 = load_backend(model, "torch", "cpu", precision="bf16")(x)
    assert p16.dtype == p32.dtype and 0 < abs(p16 - p32).max() < 0.02
    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend(model, "cpu", "16")  # refused when built, not at the first frame
    with pytest.raises(ValueError, match="needs the torch backend"):
        load_backend(model, "onnxruntime", precision="bf16")
