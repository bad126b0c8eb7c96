"""A newcomer's mistakes (issue 12): each gets ONE line naming what is wrong and what to do, exit
status 2, no traceback (unless AUDET_DEBUG is set), and nothing already written is lost."""
import ast
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from audet.cli import main
from helpers import make_prepared

SRC = Path(__file__).resolve().parents[1] / "src" / "audet"
TINY = ["model.args.width=4", "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.progress_bar=false", "trainer.tensorboard=false",
        "trainer.accelerator=cpu", "data.val_fraction=0.25"]


def cli(capsys, *argv):
    """Run ``audet ARGV``; return (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def user_error(capsys, *argv, expect: str) -> str:
    """Assert a one-line user error containing ``expect``; return it."""
    rc, _, err = cli(capsys, *argv)
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and "is deprecated" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"audet {argv[0]}: error: "), lines[0]
    assert expect in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep") / "D", n_subjects=6, frames=4, aus=(1, 2, 4, 6))


@pytest.fixture()
def bad_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "random": rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        "empty": b"",
        "text": b"this is not a checkpoint\n",
    }
    for name, blob in files.items():
        (tmp_path / f"{name}.safetensors").write_bytes(blob)
    return {name: tmp_path / f"{name}.safetensors" for name in files}


# --- 1. corrupt, empty or text checkpoints: evaluate, visualize, complexity, finetune ------------
@pytest.mark.parametrize("kind,why", [("random", "not in the safetensors format"), ("empty", "the file is empty"),
                                      ("text", "text file")])
def test_damaged_checkpoint_is_one_line_in_every_command(kind, why, bad_checkpoints, data, tmp_path, capsys):
    ckpt = bad_checkpoints[kind]
    face = next((data / "images").rglob("*.jpg"))
    for argv in (["evaluate", "-c", ckpt, "--data", data, "--prefix", "SYNTH_part3"],
                 ["visualize", "-c", ckpt, face, "--out", tmp_path / "a.png"],
                 ["complexity", ckpt],
                 ["finetune", "-c", ckpt, "resnet_tiny_synth", f"data.root={data}", "--out", tmp_path / "ft"]):
        line = user_error(capsys, *argv, expect=why)
        assert "not an audet checkpoint" in line and "audet train" in line  # what to give instead
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "ft").exists()


def test_checkpoint_json_without_weights_and_debug_traceback(bad_checkpoints, data, tmp_path, capsys, monkeypatch):
    (tmp_path / "lone.json").write_text("")
    user_error(capsys, "evaluate", "-c", tmp_path / "lone.json", "--data", data, expect="metadata file is empty")
    monkeypatch.setenv("AUDET_DEBUG", "1")
    with pytest.raises(ValueError, match="not an audet checkpoint"):
        main(["complexity", str(bad_checkpoints["text"])])


# --- 2. a missing data folder says so (not "--prefix is required" / "pass --aus") ---------------
def test_missing_data_folder(bad_checkpoints, tmp_path, capsys, data):
    ckpt = bad_checkpoints["text"].with_name("ok.safetensors")
    _tiny_checkpoint(ckpt)
    for extra in ([], ["--prefix", "BP4D_part3"]):
        line = user_error(capsys, "evaluate", "-c", ckpt, "--data", tmp_path / "nonexistent", *extra, expect="does not exist")
        assert "--prefix" not in line.split("error:")[1].split(";")[0] and "--aus" not in line
        assert "audet prepare" in line
    (tmp_path / "empty").mkdir()
    user_error(capsys, "evaluate", "-c", ckpt, "--data", tmp_path / "empty", expect="has no dataset.json")
    line = user_error(capsys, "evaluate", "-c", ckpt, "--data", data, "--prefix", "nope", expect="no nope_path.txt")
    assert "SYNTH_part1" in line  # the prefixes that exist


def _tiny_checkpoint(path):
    from audet.models.checkpoint import save_checkpoint
    from audet.models import create_model

    save_checkpoint(create_model("resnet_tiny", num_aus=4, aus=[1, 2, 4, 6], width=4), path)
    return path


# --- 3-5. config values: whole-config check naming key and source ---------------------------------
@pytest.mark.parametrize("override,expect", [
    ("trainer.max_epochs=1.7", "trainer.max_epochs=1.7 (from command-line override) must be a whole number >= 1"),
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc (from command-line override) must be a whole number"),
    ("optim.lr=fast", "optim.lr=fast (from command-line override) must be a number > 0"),
    ("data.batch_size=-4", "data.batch_size=-4 (from command-line override) must be a whole number >= 1"),
    ("trainer.precision=fp8", "trainer.precision=fp8 (from command-line override) must be one of"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] (from command-line override) must be a list of two numbers"),
])
def test_bad_config_values_name_key_and_source(override, expect, data, tmp_path, capsys):
    out = tmp_path / "run"
    line = user_error(capsys, "train", "resnet_tiny_synth", f"data.root={data}", override, "--out", out, expect=expect)
    assert "fix the override" in line
    assert not out.exists()  # nothing started


def test_bad_value_in_a_file_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("base: resnet_tiny_synth\ntrainer:\n  max_epochs: 2.5\n")
    line = user_error(capsys, "train", cfg, expect="trainer.max_epochs=2.5 (from ")
    assert "mine.yaml" in line and "override it with trainer.max_epochs=VALUE" in line


# --- 6. complexity with 0 AUs ----------------------------------------------------------------------
def test_complexity_rejects_zero_aus(capsys):
    user_error(capsys, "complexity", "ac2d", "--num-aus", "0", expect="--num-aus")
    user_error(capsys, "complexity", "ac2d", "--aus", "1,2", "--num-aus", "3", expect="--aus lists 2 AUs")
    user_error(capsys, "complexity", "nosuch", expect="unknown model 'nosuch'")


# --- 7. models -v counts each variant -----------------------------------------------------------
def test_models_verbose_counts_each_variant(capsys):
    rc, out, _ = cli(capsys, "models", "ac2d_bnet", "-v")
    assert rc == 0 and "2,726,636 with 12 AUs" in out and "3625196" not in out


# --- 8. outputs follow the umask ------------------------------------------------------------------
def test_atomic_writes_follow_the_umask(tmp_path):
    from audet.utils.io import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.md", "x")
        _tiny_checkpoint(tmp_path / "c.safetensors")
        os.umask(0o077)
        write_text_atomic(tmp_path / "b.md", "x")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE((tmp_path / p).stat().st_mode)  # noqa: E731
    assert mode("a.md") == 0o644 and mode("c.safetensors") == 0o644 and mode("c.json") == 0o644
    assert mode("b.md") == 0o600


# --- 9. convert: no torch advice to unpickle ------------------------------------------------------
def test_convert_bad_files(tmp_path, capsys):
    import pickle

    (tmp_path / "text.pth").write_text("hello\n")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"f": print}, f)
    (tmp_path / "rnd.pth").write_bytes(b"\x80\x02" + np.random.default_rng(0).bytes(300))
    user_error(capsys, "convert", "ac2d", tmp_path / "text.pth", "--out", tmp_path / "x", expect="text file")
    for name in ("evil.pth", "rnd.pth"):
        line = user_error(capsys, "convert", "ac2d", tmp_path / name, "--out", tmp_path / "x", expect="weights_only=True")
        assert "weights_only=False" not in line and "never unpickles" in line
    assert not list(tmp_path.glob("x*"))


# --- 10. data.root and CONFIG must be given -------------------------------------------------------
def test_missing_data_root_and_config(tmp_path, capsys):
    line = user_error(capsys, "cv", "ac2d_synth_quick", "--out", tmp_path / "cv", expect="data.root is not set")
    assert "data.root=DIR" in line
    line = user_error(capsys, "train", expect="no CONFIG given")
    assert "ac2d_synth_quick" in line
    user_error(capsys, "cv", "resnet_tiny_synth", f"data.root={tmp_path / 'nowhere'}", expect="(from the command line)")
    assert not (tmp_path / "cv").exists()


# --- 11. a line per epoch without a terminal ------------------------------------------------------
def test_training_prints_a_line_per_epoch_without_progress_bar(data, tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "resnet_tiny_synth", f"data.root={data}", "data.fold=0", *TINY,
                       "--out", tmp_path / "r")
    assert rc == 0, err
    assert "epoch 1/1: loss " in out and "val F1" in out


def test_cv_prints_a_line_per_epoch_without_progress_bar(data, tmp_path, capsys):
    rc, out, err = cli(capsys, "cv", "resnet_tiny_synth", f"data.root={data}", *TINY, "--folds", "0",
                       "--out", tmp_path / "cv")
    assert rc == 0, err
    assert "epoch 1/1: loss " in out


# --- 12. the attention figure shows the ground truth and a colour bar -----------------------------
def test_attention_figure_shows_truth_and_colour_bar(data, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from audet.viz import attention_figure, labels_for_images
    from audet.data.listfile import read_list

    lists = read_list(data, "SYNTH_part1")
    images = [str(lists.image_path(i)) for i in range(2)]
    truth = labels_for_images(images, [6, 1, 99])  # by AU identity; AU99 is not in the data
    np.testing.assert_array_equal(truth[:, 0], lists.labels[:2, 3])
    np.testing.assert_array_equal(truth[:, 1], lists.labels[:2, 0])
    assert (truth[:, 2] == 9).all()
    assert labels_for_images([str(tmp_path / "elsewhere.jpg")], [1]) is None

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    faces = [np.full((40, 40, 3), 128, np.uint8)] * 2
    probs = np.array([[0.9, 0.2, 0.5], [0.5, 0.5, 0.5]])
    attention_figure(faces, np.random.rand(2, 3, 4, 4), [6, 1, 99], tmp_path / "f.png", probs=probs,
                     truth=np.array([[1, 1, 9], [0, 1, 9]]))
    fig = figs[0]
    titles = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes if ax.get_title()]
    assert ("AU6 p=0.90 gt=1", "green") in titles and ("AU1 p=0.20 gt=1", "red") in titles
    assert ("AU99 p=0.50 gt=?", "black") in titles
    assert any("attention" in ax.get_ylabel() for ax in fig.axes)  # the colour bar
    assert "ground truth" in fig._suptitle.get_text()
    # a model that predicts 0.5 everywhere is called out
    figs.clear()
    attention_figure(faces, np.random.rand(2, 3, 4, 4), [6, 1, 99], tmp_path / "g.png", probs=np.full((2, 3), 0.5))
    assert "WARNING" in figs[0]._suptitle.get_text()


# --- 13. README: a CPU-only torch install, two set-up commands ------------------------------------
def test_readme_gives_a_cpu_torch_install():
    text = (SRC.parents[1] / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in first_block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(commands) == 2 and "audet demo" in commands[0] and "pytest" in commands[1]


# --- 14. smaller ones -----------------------------------------------------------------------------
def test_reprepare_with_another_image_format_is_refused(data, capsys):
    line = user_error(capsys, "prepare", "BP4D", "--raw", data, "--out", data, "--image-format", "png",
                      expect="already holds jpg crops")
    assert "--image-format jpg" in line


def test_usage_shows_overrides_as_optional(capsys):
    for cmd in ("cv", "finetune", "train"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        usage = capsys.readouterr().out.split("\n\n")[0]
        assert "[key=value ...]" in usage, usage


def test_missing_image_is_one_line_without_opencv_warning(tmp_path, capfd):
    ckpt = _tiny_checkpoint(tmp_path / "m.safetensors")
    (tmp_path / "att.png").write_bytes(b"earlier figure")
    assert main(["visualize", "-c", str(ckpt), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "att.png")]) == 2
    err = capfd.readouterr().err
    assert err.strip() == f"audet visualize: error: {tmp_path / 'nope.jpg'}: no such image file; give aligned " \
                          "faces as `audet prepare` writes them (OUT/images/...)"
    assert (tmp_path / "att.png").read_bytes() == b"earlier figure"  # nothing already written lost


def test_every_option_has_help_and_description_is_honest():
    import argparse

    from audet.cli import build_parser

    parser = build_parser()
    # the methods it names are registered, none is called "planned" (issue 20)
    from audet.models import list_models

    assert "planned" not in parser.description and "audet models" in parser.description
    for method in ("AC2D", "CISNet", "ESCDA", "AAR", "AUNet"):
        assert method in parser.description and list_models(method.lower() + "*"), method
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help, f"audet {name} {action.option_strings or action.dest} has no help"


def test_one_spelling_per_option_and_old_ones_still_work(data, tmp_path, capsys):
    import argparse

    from audet.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    visible = {s for p in sub.choices.values() for a in p._actions if a.help != argparse.SUPPRESS
               for s in a.option_strings}
    assert not visible & {"--workers", "--batch", "--no-progress", "--root"}
    assert {"--num-workers", "--batch-size", "--quiet", "--aus", "--data", "--raw"} <= visible
    rc, out, err = cli(capsys, "complexity", "resnet_tiny", "--batch", "2", "--aus", "1,2,4", "--json")
    assert rc == 0 and '"num_aus": 3' in out and "--batch is deprecated; use --batch-size" in err
    user_error(capsys, "evaluate", "-c", "x.safetensors", "--data", data, "--aus", "1,x", expect="--aus '1,x'")
    user_error(capsys, "evaluate", "-c", "x.safetensors", "--data", data, "--aus", "1", "2", expect="ONE comma-separated")


def test_commands_import_no_other_command_or_cli():
    for path in sorted((SRC / "commands").glob("*.py")):
        if path.name == "__init__.py":  # the package lists (imports) the command modules: audet.commands.COMMANDS
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                assert n != "audet.cli" and not (n.startswith("audet.commands.") and n != "audet.commands._common"
                                                 and not n.startswith("audet.commands._common.")), (path.name, n)


def test_demo_checks_its_config_before_synthesising(tmp_path, capsys):
    user_error(capsys, "demo", "--out", tmp_path / "demo", "trainer.max_epochs=1.7",
               expect="trainer.max_epochs=1.7 (from command-line override)")
    user_error(capsys, "demo", "--out", tmp_path / "demo", "--preset", "nosuch", expect="unknown preset 'nosuch'")
    assert not (tmp_path / "demo").exists()


def test_a_run_folder_given_as_checkpoint_points_to_the_file_in_it(tmp_path, data, capsys):
    _tiny_checkpoint(tmp_path / "run" / "best.safetensors")
    user_error(capsys, "evaluate", "-c", tmp_path / "run", "--data", data,
               expect=f"is a folder; give a checkpoint file in it, e.g. {tmp_path / 'run' / 'best.safetensors'}")
