"""benchmarks/memorise.py (issue 17, item 3): a model that can learn fits a few fixed training
frames; the script says so per model and fails when one stays below the target."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("memorise", BENCH / "memorise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("memorise")


def test_memorise_quick_resnet_tiny_passes_and_an_unreachable_target_fails(work, capsys):
    mem = _load()
    rc = mem.main(["--models", "resnet_tiny", "--frames", "16", "--steps", "60", "--lr", "1e-2",
                   "--keep", str(work)])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("resnet_tiny"))
    assert rc == 0, out
    assert line.split()[-2] == "steps" and int(line.split()[-1]) >= 60
    assert float(line.split("train F1")[1].split()[0]) >= 95.0
    # the same run against a target no model can reach: exit status 1, the model named
    rc = mem.main(["--models", "resnet_tiny", "--frames", "16", "--steps", "4", "--target", "101",
                   "--keep", str(work)])
    out = capsys.readouterr().out
    assert rc == 1 and "below 101.0: resnet_tiny" in out


def test_memorise_prefix_takes_equal_runs_of_every_sequence(work):
    from audet.data.listfile import read_list

    mem = _load()
    prep = mem.make_release(work / "data", 16)
    lf = read_list(prep, mem.PREFIX)
    seqs = [(i.subject, i.sequence) for i in lf.info]
    assert len(lf) == 16 and len(set(seqs)) == 8  # 4 subjects x 2 sequences, 2 consecutive frames each
    frames = np.asarray([i.frame for i in lf.info]).reshape(8, 2)
    assert (np.diff(frames, axis=1) == 1).all()


def test_memorise_unknown_pattern_is_a_clear_error():
    mem = _load()
    with pytest.raises(SystemExit, match="no registered model matches"):
        mem.main(["--models", "no_such_model*"])


def test_memorise_drops_a_family_stage_structure_the_variant_has_no_part_for():
    """AUNet's family config trains a `vae` stage then the detector; aunet_fan has no VAE, so its
    patterns match nothing and it trains in one stage; aunet (with a VAE) keeps both stages."""
    from audet.engine.config import load_config

    mem = _load()
    stages = load_config(mem.family_config("aunet"))["stages"]
    assert [s["name"] for s in stages] == ["vae", "detector"]
    args, _ = mem.model_args("aunet_fan")
    assert mem._stages_for(stages, "aunet_fan", args) is None
    args, _ = mem.model_args("aunet")
    assert mem._stages_for(stages, "aunet", args) == stages


def test_memorise_resizes_an_ensembles_members_to_their_crop():
    """Every model sees the whole face shrunk to its input (no random crop); an ensemble takes no
    `preprocess` itself, so its members get the resize (without it they trained on random 176 px
    crops of the 200 px face and scored the centre crop: ensemble 88.4 where its members pass)."""
    mem = _load()
    args, pre = mem.model_args("ensemble")
    assert pre["resize"] == pre["crop_size"]
    assert all(m["args"]["preprocess"]["resize"] == pre["crop_size"] for m in args["members"])


def test_evaluate_scores_a_clip_model_in_the_asked_windows(tmp_path):
    """``evaluate(clip=...)`` (memorise.py ``--eval-clip``): T^avg gives every frame of a window the
    window's mean probability; in windows of one frame each frame keeps its own prediction."""
    import pandas as pd
    import torch

    from audet.data.toy import make_toy_prepared
    from audet.engine.evaluate import evaluate
    from audet.models import create_model
    from audet.models.checkpoint import save_checkpoint

    prep = tmp_path / "prep"
    make_toy_prepared(prep, aus=(1, 2), n_subjects=3, n_sequences=1, n_frames=6, missing_rate=0.0, image_size=48)
    torch.manual_seed(0)
    model = create_model("aar_aa_gsp_tavg", num_aus=2, aus=[1, 2], img_size=32, unit_dim=1, pool_dim=2,
                         clip_length=3)
    with torch.no_grad():  # a random model's outputs hardly vary across frames: set its BatchNorm
        for _ in range(30):  # statistics from data and widen its classifier
            model.train()(torch.randn(2, 3, 3, 32, 32))
        for name, p in model.classifier.named_parameters():
            p.mul_(100.0) if name == "weight" else p.zero_()
    ck, _ = save_checkpoint(model, tmp_path / "m.safetensors")
    tables = {}
    for name, clip in (("own", None), ("single", {"length": 1})):
        evaluate(ck, prep, "SYNTH_part1", clip=clip, save_predictions=tmp_path / f"{name}.csv")
        tables[name] = pd.read_csv(tmp_path / f"{name}.csv")
    own, single = tables["own"], tables["single"]
    col = "AU01_p"
    assert len(own) == len(single) == 6
    # own clip (3 frames, disjoint windows): two windows, each constant and the mean of its frames
    p1, p3 = single[col].to_numpy(), own[col].to_numpy()
    for w in (slice(0, 3), slice(3, 6)):
        np.testing.assert_allclose(p3[w], p1[w].mean(), atol=1e-5)
    assert np.ptp(p1[:3]) > 1e-2  # frames of one window differ when scored alone: the windows above are a real test
