"""CLI of the engine's commands: --help, `audet models`, clear one-line errors."""
import subprocess
import sys

import pytest

from audet.cli import main

COMMANDS = ["train", "cv", "evaluate", "finetune", "models"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: audet {cmd}")


def test_top_level_help_lists_engine_commands():
    out = subprocess.run([sys.executable, "-m", "audet.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in COMMANDS:
        assert cmd in out


def test_models_lists_registered_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "resnet_tiny" in out and "resnet18" in out
    assert main(["models", "resnet*"]) == 0
    assert "ac2d" not in capsys.readouterr().out


def test_bad_config_key_is_a_one_line_error(capsys):
    assert main(["train", "ac2d_bp4d", "optim.lrr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "audet train: error: unknown config key 'optim.lrr'" in err and "did you mean optim.lr" in err
    assert "Traceback" not in err


def test_print_config_applies_recipe_and_overrides(capsys):
    assert main(["train", "ac2d_bp4d", "recipe=code", "data.root=/data/bp4d", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.004" in out and "root: /data/bp4d" in out and "gradient_clip_val: 1.0" in out


def test_train_without_data_root_says_so(capsys, tmp_path):
    assert main(["train", "resnet_tiny_synth", f"data.root={tmp_path / 'nowhere'}", "--out", str(tmp_path / "r")]) == 2
    assert "data.root" in capsys.readouterr().err


def test_evaluate_rejects_pickles(capsys, tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"")
    (tmp_path / "d").mkdir()
    assert main(["evaluate", "-c", str(tmp_path / "x.ckpt"), "--data", str(tmp_path / "d"), "--prefix", "p"]) == 2
    assert "resuming" in capsys.readouterr().err


def test_print_config_of_ac2d_code_recipe_shows_the_authors_values(capsys):
    from audet.cli import main

    assert main(["train", "ac2d_bp4d", "recipe=code", "--print-config"]) == 0
    out = capsys.readouterr().out
    for line in ("batch_size: 24", "prototype: epoch_stale", "min_lr: 1.0e-06", "warmup_formula: linspace",
                 "val_fraction: 0", "on_test: true", "lr = 0.004 x 24 / 256 = 0.000375", "TEST-SET SELECTION"):
        assert line in out, line
