"""One spelling per option in every subcommand; the old spellings stay accepted, hidden, for one
release (issue 21). Parsing only: nothing is trained or loaded."""
import pytest

from audet.cli import build_parser, main
from audet.commands._common import UsageError, config_from_args, finish_args


def parse(*argv):
    return finish_args(build_parser().parse_args([str(a) for a in argv]))


def test_checkpoint_is_one_option_everywhere():
    for cmd, rest in (("evaluate", ["--data", "D"]), ("export", []), ("visualize", ["img.jpg"]),
                      ("finetune", ["cfg"]), ("predict", ["img.jpg"])):
        for flag in ("--checkpoint", "-c"):
            assert parse(cmd, flag, "m.safetensors", *rest).checkpoint == "m.safetensors", (cmd, flag)
    args = parse("visualize", "-c", "m.safetensors", "a.jpg", "b.jpg")
    assert args.images == ["a.jpg", "b.jpg"]
    args = parse("finetune", "-c", "m.safetensors", "cfg", "data.root=D")
    assert (args.config, args.overrides) == ("cfg", ["data.root=D"])


def test_the_old_positional_checkpoint_is_a_hidden_alias(capsys):
    assert parse("evaluate", "m.safetensors", "--data", "D").checkpoint == "m.safetensors"
    assert "positional CHECKPOINT is deprecated; use --checkpoint m.safetensors" in capsys.readouterr().err
    assert parse("export", "m.safetensors").checkpoint == "m.safetensors"
    args = parse("visualize", "m.safetensors", "a.jpg", "b.jpg")
    assert (args.checkpoint, args.images) == ("m.safetensors", ["a.jpg", "b.jpg"])
    args = parse("finetune", "m.safetensors", "cfg", "data.root=D")
    assert (args.checkpoint, args.config, args.overrides) == ("m.safetensors", "cfg", ["data.root=D"])
    with pytest.raises(UsageError, match="IMAGES missing"):
        parse("visualize", "m.safetensors")
    with pytest.raises(UsageError, match="two checkpoints"):
        parse("evaluate", "a.safetensors", "-c", "b.safetensors", "--data", "D")
    with pytest.raises(UsageError, match="--checkpoint CKPT is required"):
        parse("evaluate", "--data", "D")
    for cmd in ("evaluate", "export", "visualize", "finetune"):  # hidden: the help shows only --checkpoint
        text = build_parser()._subparsers._group_actions[0].choices[cmd].format_help()
        assert "--checkpoint CKPT" in text and "CHECKPOINT" not in text.split("\n\n")[0], cmd


def test_export_needs_no_format_flag_and_onnx_stays_an_alias():
    assert parse("export", "-c", "m.safetensors").out is None  # default: the checkpoint's path with .onnx
    assert parse("export", "-c", "m.safetensors", "--onnx").out is None
    assert parse("export", "-c", "m.safetensors", "--onnx", "x.onnx").out == "x.onnx"
    assert parse("export", "-c", "m.safetensors", "--out", "y.onnx", "--onnx").out == "y.onnx"


def test_batch_size_is_a_positive_whole_number_everywhere(capsys):
    for cmd, rest in (("predict", ["img.jpg"]), ("evaluate", ["-c", "m", "--data", "D"]), ("complexity", ["resnet_tiny"])):
        assert parse(cmd, *rest, "--batch-size", "3").batch_size == 3
        assert main([cmd, *rest, "--batch-size", "0"]) == 2, cmd
        assert "--batch-size: 0 is too small" in capsys.readouterr().err


def test_precision_where_it_applies(tmp_path):
    assert parse("evaluate", "-c", "m", "--data", "D", "--precision", "bf16").precision == "bf16"
    assert parse("predict", "img.jpg", "--precision", "bf16").precision == "bf16"
    for cmd, rest in (("train", ["resnet_tiny_synth"]), ("cv", ["resnet_tiny_synth"]),
                      ("finetune", ["-c", "m", "resnet_tiny_synth"])):
        args = parse(cmd, *rest, "--precision", "bf16")
        assert config_from_args(args)["trainer"]["precision"] == "bf16-mixed", cmd
        assert config_from_args(parse(cmd, *rest))["trainer"]["precision"] == "auto", cmd  # not given: the config's


def test_prepare_parts_landmarker_and_their_old_spellings(capsys):
    base = ("prepare", "Aff-Wild2", "--raw", "R", "--out", "O")
    args = parse(*base, "--parts", "auto", "--landmarker", "dlib", "--landmarker-arg", "upsample=1")
    assert (args.folds, args.detector, args.detector_arg) == ("auto", "dlib", ["upsample=1"])
    old = parse(*base, "--folds", "auto", "--detector", "fake", "--detector-arg", "k=1")
    assert (old.folds, old.detector, old.detector_arg) == ("auto", "fake", "k=1")
    err = capsys.readouterr().err
    assert "--folds is deprecated; use --parts" in err and "--detector is deprecated; use --landmarker" in err
    assert "--folds" not in build_parser()._subparsers._group_actions[0].choices["prepare"].format_help()


def test_synth_quiet_is_the_common_flag_and_complexity_takes_aus(capsys):
    assert parse("synth", "--out", "o", "--quiet").quiet is True
    assert parse("synth", "--out", "o", "--no-progress").quiet is True
    assert parse("complexity", "resnet_tiny", "--num-aus", "5").num_aus == 5
    assert "deprecated; use --aus" in capsys.readouterr().err
    assert "--num-aus" not in build_parser()._subparsers._group_actions[0].choices["complexity"].format_help()
    assert main(["complexity", "resnet_tiny", "--num-aus", "3", "--json"]) == 0
    assert '"num_aus": 3' in capsys.readouterr().out
