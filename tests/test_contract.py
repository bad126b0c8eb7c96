"""The model contract end to end with a small method kept HERE (registered by this module's fixture,
not by the package) that uses every hook: data-aware construction (needs the global subject
vocabulary), its own loss context and loss terms, clips, a frozen pretrained part read from a file,
training stages (a collect-only data pass, SGD on the head, then Adam on everything not frozen), an
epoch-end data pass (last stage only), evaluation and ONNX export from the checkpoint without the training data.
docs/adding-a-method.md walks through this file."""
import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from helpers import make_prepared

from audet.engine.callbacks import StopTraining
from audet.engine.config import ConfigError, resolve_config
from audet.engine.evaluate import evaluate
from audet.engine.fit import fit
from audet.models import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart, create_model, list_models
from audet.models.base import PretrainedWeightsMissing, load_pretrained_parts
from audet.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from audet.models.registry import register_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CLIP = {"length": 3}
FRAMES = 7  # a 7-frame sequence per subject: 3-frame clips must still score 7 frames


# ------------------------------------------------------------------------------------------------
# the method
class TinyClipNet(AUModel):
    """stem (pretrained, frozen) -> body -> temporal conv over the clip -> per-frame AU logits;
    a subject head (size = the GLOBAL subject vocabulary) gives an auxiliary loss."""

    def __init__(self, aus, *, data=None, stem_weights=None, allow_random_pretrained=False, width=4):
        if data is None or not data.subjects:
            raise ValueError("tiny_clip needs subject ids from the data (DataInfo.subjects); "
                             "build it with create_model(..., data=DataInfo(...))")
        super().__init__(aus, {"crop_size": 32, "resize": 40, "clip": CLIP}, data)
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.temporal = nn.Conv1d(2 * w, 2 * w, 3, padding=1)
        self.head = nn.Linear(2 * w, self.num_aus)
        self.subject_head = nn.Linear(2 * w, data.num_subjects)
        self.register_buffer("subject_mean", torch.zeros(data.num_subjects, 2 * w))
        self.register_buffer("subject_seen", torch.zeros(data.num_subjects))

    def pretrained_parts(self):
        return {"stem": PretrainedPart(module="stem", description="tiny stem (test)",
                                       source="written by tests/test_contract.py", option="stem_weights")}

    def forward_features(self, x):  # (B, T, 3, H, W) -> (B, T, F)
        B, T = x.shape[:2]
        f = self.body(self.stem(x.reshape(B * T, *x.shape[2:]))).reshape(B, T, -1)
        return f + self.temporal(f.transpose(1, 2)).transpose(1, 2)

    def forward_head(self, feats):
        return self.head(feats)

    def forward(self, x):
        f = self.forward_features(x)
        return ModelOutput(self.forward_head(f), {"features": f})

    def loss_context(self, data, labels, mask):
        pos = (labels * mask).sum(0)
        neg = ((1 - labels) * mask).sum(0)
        return LossContext(extra={"pos_weight": torch.as_tensor(neg / np.maximum(pos, 1)).float()})

    def loss_terms(self, output, batch, ctx):
        bce = nn.functional.binary_cross_entropy_with_logits(
            output.logits, batch["labels"], pos_weight=ctx.extra["pos_weight"], reduction="none")
        au = (bce * batch["mask"]).sum() / batch["mask"].sum().clamp_min(1)
        subj = nn.functional.cross_entropy(self.subject_head(output.aux["features"].mean(1)), batch["subject"])
        return {"au": au, "subject": 0.1 * subj}

    def wants_data_pass(self, epoch):
        return self.stage == "all"

    def data_pass_step(self, batch):
        return batch["subject"], self.forward_features(batch["image"]).mean(1)

    def data_pass_end(self, results):
        self.subject_mean.zero_()
        self.subject_seen.zero_()
        for subj, f in results:
            self.subject_mean.index_add_(0, subj, f)
            self.subject_seen.index_add_(0, subj, torch.ones_like(subj, dtype=torch.float))
        self.subject_mean /= self.subject_seen.clamp_min(1)[:, None]


def tiny_clip(aus, data=None, stem_weights=None, allow_random_pretrained=False, width=4):
    return TinyClipNet(aus, data=data, stem_weights=stem_weights, allow_random_pretrained=allow_random_pretrained,
                       width=width)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Registers the small method for this module's tests only: other tests in the same process
    (xdist workers run several modules) must not see it in list_models()."""
    from audet.models import registry

    assert "tiny_contract" not in list_models()
    register_model(tiny_clip, name="tiny_contract")
    yield
    registry._REGISTRY.pop("tiny_contract")
    registry._INFO.pop("tiny_contract", None)
    assert "tiny_contract" not in list_models()


# ------------------------------------------------------------------------------------------------
# data, the pretrained file and the config
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data") / "synth", n_subjects=6, frames=FRAMES, size=40)


@pytest.fixture(scope="module")
def stem_file(tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(123)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    stem[1].running_mean.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("pre") / "stem.safetensors"
    save_file({k: v.contiguous() for k, v in stem.state_dict().items()}, str(path))
    return path


def config(root, out, stem, **over):
    raw = {
        "name": "contract", "seed": 7,
        "model": {"name": "tiny_contract", "args": {"stem_weights": str(stem)}},
        "data": {"root": str(root), "fold": 0, "batch_size": 2, "num_workers": 0, "val_fraction": 0.25},
        "trainer": {"progress_bar": False, "log_every_n_steps": 1, "tensorboard": False, "accelerator": "cpu",
                    "gradient_clip_val": None},
        "stages": [
            {"name": "collect", "collect_only": True},
            {"name": "head", "epochs": 1, "trainable": ["head.*", "temporal.*"],
             "optim": {"name": "sgd", "lr": 2.0, "momentum": 0.9, "nesterov": True, "warmup_epochs": 0}},
            {"name": "all", "epochs": 2, "optim": {"name": "adam", "lr": 0.5, "weight_decay": 0.0,
                                                    "warmup_epochs": 0}},
        ],
        "output": {"dir": str(out)},
    }
    return resolve_config(raw, over, "test_contract")


class CrashInStage(L.Callback):
    def __init__(self, stage, steps):
        self.stage, self.steps = stage, steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.model.stage == self.stage and trainer.global_step >= self.steps:
            raise StopTraining(f"crash in stage {self.stage} at step {trainer.global_step}")


class Watch(L.Callback):
    """Records, per stage, the stem's mode and the optimiser's parameter count."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        m = pl_module.model
        opt = trainer.optimizers[0] if trainer.optimizers else None
        n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"]) if opt else 0
        self.seen.append((m.stage, m.stem.training, m.body.training, n_opt, type(opt).__name__,
                          tuple(batch["subject"].tolist())))


# ------------------------------------------------------------------------------------------------
def test_needs_data_and_its_pretrained_file(stem_file, tmp_path):
    with pytest.raises(ValueError, match="needs subject ids"):
        create_model("tiny_contract", num_aus=4)
    data = DataInfo(aus=[1, 2, 4, 6], subjects=["a", "b"], train_subjects=["a"])
    m = create_model("tiny_contract", num_aus=4, aus=[1, 2, 4, 6], data=data)
    with pytest.raises(PretrainedWeightsMissing, match=r"stem_weights=PATH.*written by tests/test_contract.py"):
        load_pretrained_parts(m)
    missing = tmp_path / "nope.safetensors"
    m = create_model("tiny_contract", num_aus=4, aus=[1, 2, 4, 6], data=data, stem_weights=str(missing))
    with pytest.raises(PretrainedWeightsMissing, match="nope.safetensors"):
        load_pretrained_parts(m)
    # explicit opt-in: random weights, labelled, and then stored in the checkpoint
    m = create_model("tiny_contract", num_aus=4, aus=[1, 2, 4, 6], data=data, allow_random_pretrained=True)
    assert load_pretrained_parts(m) == {"stem": "random tiny stem (test)"}
    save_checkpoint(m, tmp_path / "r.safetensors")
    meta = read_checkpoint_meta(tmp_path / "r.safetensors")
    assert meta["pretrained"]["stem"]["status"].startswith("random") and meta["pretrained"]["stem"]["stored"]
    assert meta["data_info"]["subjects"] == ["a", "b"]
    loaded = load_checkpoint(tmp_path / "r.safetensors")
    assert torch.equal(loaded.stem[0].weight, m.stem[0].weight) and loaded.pretrained_status["stem"].startswith("random")


def test_stage_config_is_validated(prepared, stem_file, tmp_path):
    cfg = config(prepared, tmp_path, stem_file)
    for bad, msg in [({"name": "x", "epochs": 1, "lr": 1}, "unknown key"),
                     ({"name": "x", "epochs": 0}, r"epochs=0 .* must be a whole number >= 1"),
                     ({"name": "x", "epochs": 1, "optim": {"name": "rmsprop"}}, "one of adamw, adam, sgd"),
                     ({"name": "x", "epochs": 1, "frozen": "stem.*"}, r"a list of texts, e\.g\. \['vae\.\*'\]")]:
        with pytest.raises(ConfigError, match=msg):
            resolve_config({**{k: v for k, v in cfg.items() if k != "stages"}, "stages": [bad]}, None, "t")


def test_a_stage_pattern_that_matches_nothing_is_an_error(prepared, stem_file, tmp_path):
    cfg = config(prepared, tmp_path, stem_file)
    cfg["stages"] = [{"name": "x", "epochs": 1, "trainable": ["haed.*"]}]
    with pytest.raises(ValueError, match="trainable pattern 'haed.*' matches no parameter"):
        fit(cfg, verbose=False)


def test_two_stages_frozen_part_resume_evaluate_export(prepared, stem_file, tmp_path):
    from safetensors.torch import load_file

    watch = Watch()
    res = fit(config(prepared, tmp_path / "straight", stem_file), callbacks=[watch], verbose=False)
    run = tmp_path / "straight"
    # -- stages: per-stage directories and results; optimiser and trainable parts per stage
    assert [s["name"] for s in res["stages"]] == ["collect", "head", "all"] and res["stages"][2]["epochs"] == 2
    for i, name in enumerate(["collect", "head", "all"]):
        assert (run / "stages" / f"{i}_{name}" / "last.safetensors").is_file()
    stages = {s: [w for w in watch.seen if w[0] == s] for s in ("collect", "head", "all")}
    # collect_only: no optimiser, no training step (weights untouched), only the data pass (in order)
    assert stages["collect"] and {w[3] for w in stages["collect"]} == {0}
    assert all(not w[2] for w in stages["collect"])  # eval mode during the pass
    order = [s for w in stages["collect"] for s in w[5]]
    assert order == sorted(order)  # the training set in order (subjects are sorted in the lists)
    collected = load_checkpoint(run / "stages/0_collect/last.safetensors")
    assert collected.subject_seen.sum() > 0
    assert {w[4] for w in stages["head"]} == {"SGD"} and {w[4] for w in stages["all"]} == {"Adam"}
    n_head = 8 * 4 + 4 + 8 * 8 * 3 + 8
    assert {w[3] for w in stages["head"]} == {n_head}
    m0 = create_model("tiny_contract", num_aus=4, aus=[1, 2, 4, 6], data=DataInfo(aus=[1, 2, 4, 6], subjects=list("abcdef")))
    n_stem = sum(p.numel() for p in m0.stem.parameters())
    assert {w[3] for w in stages["all"]} == {sum(p.numel() for p in m0.parameters()) - n_stem}
    # -- the frozen part stays in eval mode (BatchNorm statistics untouched) while the rest trains
    assert all(not w[1] and w[2] for w in watch.seen if w[0] != "collect")
    report = (run / "report.md").read_text()
    assert "stage 0 collect: 1 epoch(s), collect only" in report and "stage 2 all: 2 epoch(s), optim adam" in report
    last = load_checkpoint(run / "last.safetensors")
    ref = load_file(str(stem_file))
    assert all(torch.equal(last.stem.state_dict()[k], ref[k]) for k in ref)
    meta = read_checkpoint_meta(run / "last.safetensors")
    assert meta["pretrained"]["stem"]["stored"] is False and meta["stage"] == "all"
    # the registry recorded the factory's arguments (the model wrote no config); the AU list once
    assert meta["model_config"] == {"stem_weights": str(stem_file), "allow_random_pretrained": False, "width": 4}
    assert meta["aus"] == [1, 2, 4, 6] and "aus" not in meta["data_info"]
    assert not any(k.startswith("stem.") for k in load_file(str(run / "last.safetensors")))
    # -- global subject ids: the data pass (stage "all") filled exactly the training subjects
    info = meta["data_info"]
    assert info["subjects"] == [f"S{i:03d}" for i in range(6)] and len(info["train_subjects"]) < 6
    seen = {info["subjects"][i] for i in torch.nonzero(last.subject_seen).flatten().tolist()}
    assert seen == set(info["train_subjects"])
    assert {s for w in watch.seen for s in w[5]} <= {info["subjects"].index(s) for s in info["train_subjects"]}

    # -- a kill in the middle of the second stage resumes to the same result
    with pytest.raises(StopTraining):
        fit(config(prepared, tmp_path / "killed", stem_file), callbacks=[CrashInStage("all", 10)], verbose=False)
    killed = tmp_path / "killed"
    assert json.loads((killed / "stages/1_head/stage.json").read_text())["done"]
    assert read_checkpoint_meta(killed / "stages/2_all/last.json")["epoch"] == 0
    res2 = fit(config(prepared, killed, stem_file), verbose=False)
    a, b = load_checkpoint(run / "last.safetensors"), load_checkpoint(killed / "last.safetensors")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert res2["test"]["last"]["f1"] == res["test"]["last"]["f1"]

    # -- the checkpoint evaluates without the training data: the SAME frames and F1 as the
    #    training-end test (7-frame sequences, 3-frame clips: 7 scored frames per test subject)
    test_prefix = json.loads((prepared / "dataset.json").read_text())["folds"][0]["test"]
    ev = evaluate(run / "last.safetensors", prepared, test_prefix)
    n_test_frames = FRAMES * len(res["test_subjects"])
    assert ev["n"] == res["test"]["last"]["n"] == n_test_frames
    assert ev["f1"] == pytest.approx(res["test"]["last"]["f1"], abs=1e-12)
    # ... and exports to ONNX with the same logits
    import onnxruntime as ort

    class LogitsOnly(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.forward_logits(x)

    x = torch.randn(2, 3, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LogitsOnly(last), (x,), str(tmp_path / "m.onnx"), dynamo=False, input_names=["x"])
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, last.forward_logits(x).numpy(), atol=1e-5)
    # without its pretrained file (not stored) the checkpoint refuses, naming the option
    moved = stem_file.with_name("elsewhere.safetensors")
    stem_file.rename(moved)
    try:
        with pytest.raises(CheckpointError, match="stem_weights"):
            load_checkpoint(run / "last.safetensors")
    finally:
        moved.rename(stem_file)


def test_default_loss_context_is_losses_au_weights():
    """The engine asks the model; the default is audet.losses.au_weights (AC2D Eq. 14) -- also for an
    AU without a positive frame (the one guard, not list-file weights)."""
    from audet.losses import au_weights

    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    mask = np.ones_like(y)
    m = create_model("resnet_tiny", num_aus=3, width=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = m.loss_context(None, y, mask)
        w, v = au_weights(y, mask)
    assert np.allclose(ctx.au_weight.numpy(), w) and np.allclose(ctx.pos_weight.numpy(), v)
    # inverse occurrence rates 4/2 and 4/3; the AU without positives gets the smallest (4/3), v = 1
    assert np.allclose(w, np.array([2, 4 / 3, 4 / 3]) / (14 / 3)) and v[1] == 1.0
