"""`audet demo` end to end at test size: synth -> prepare -> train -> evaluate -> figure, resumable."""
import pytest

from audet.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

SMALL = ["model.args.embed_dim=8", "model.args.num_heads=[1,1,1]", "model.args.causal_dim=8",
         "trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.batch_size=8",
         "trainer.progress_bar=false", "trainer.tensorboard=false"]


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "test", "--num-workers", "1", "--config", "ac2d_synth_quick",
                 *SMALL]) == 0
    text = capsys.readouterr().out
    for f in ("raw/synth_meta.json", "prepared/dataset.json", "train/best.safetensors", "f1.md", "f1.csv",
              "attention.png"):
        assert (out / f).is_file(), f
    table = (out / "f1.md").read_text()
    assert "| AU1 |" in table and "| Avg |" in table  # BP4D's 12 AUs through the BP4D preparation path
    assert "done in" in text
    assert "for the all-present prior" in text and "95% paired bootstrap CI" in text
    # a second run skips the finished steps
    assert main(["demo", "--out", str(out), "--preset", "test", "--num-workers", "1", "--config", "ac2d_synth_quick",
                 *SMALL]) == 0
    text = capsys.readouterr().out
    assert "exists; skipped" in text and "results.json exists; skipped" in text


def test_default_demo_trains_a_cnn_and_skips_the_attention_figure(tmp_path, capsys):
    """The default config (resnet_tiny_demo) has no attention maps: step 5 says so, nothing fails."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "test", "--num-workers", "1", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=2", "data.batch_size=8", "trainer.tensorboard=false"]) == 0
    text = capsys.readouterr().out
    assert "resnet_tiny -> prepared/" in (out / "f1.md").read_text()
    assert "skipped: model 'resnet_tiny' has no attention output" in text and "for the all-present prior" in text
    assert not (out / "attention.png").exists()
    # the F1 figure beside the table: a PNG of the model's and the prior's per-AU F1
    assert (out / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # checkpoints record the data: the demo's model was trained on synthetic faces
    from audet.models.checkpoint import read_checkpoint_meta

    assert read_checkpoint_meta(out / "train" / "best.safetensors")["trained_on"]["synthetic"] is True
    # another seed into the same --out: refused in one line before anything is written
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    args = ["demo", "--out", str(out), "--preset", "test", "--num-workers", "1", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "data.batch_size=8", "trainer.tensorboard=false"]
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "options.seed: 0 -> 1" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # and a changed config too
    assert main([*args, "--config", "resnet_tiny_synth"]) == 2
    assert "options.config: resnet_tiny_demo -> resnet_tiny_synth" in capsys.readouterr().err
