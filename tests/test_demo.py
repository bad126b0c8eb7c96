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
