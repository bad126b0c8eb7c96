"""FAN pretraining on landmarks (issue 17, item 2): heatmap targets, decoding, NME, and the
`audet pretrain-fan` file that AUNet's fan_weights option reads."""
import numpy as np
import pytest
import torch

from audet.facs import KEEP_68_TO_49
from audet.models.fan_pretrain import decode_heatmaps, heatmap_targets, nme


def test_heatmap_targets_peak_at_the_landmark_and_other_channels_are_zero():
    lm = torch.tensor([[[4 * 5 + 1.5, 4 * 9 + 1.5]] * 49], dtype=torch.float32)  # heatmap pixel (5, 9)
    lm[0, 3] = torch.tensor([1.5, 61.5])  # heatmap pixel (0, 15)
    t = heatmap_targets(lm, 64, sigma=1.0)
    assert t.shape == (1, 68, 16, 16)
    ch = int(KEEP_68_TO_49[0])
    assert t[0, ch, 9, 5] == pytest.approx(1.0) and t[0, ch, 9, 6] == pytest.approx(np.exp(-0.5))
    assert t[0, int(KEEP_68_TO_49[3]), 15, 0] == pytest.approx(1.0)
    jaw = [i for i in range(68) if i not in set(KEEP_68_TO_49.tolist())]
    assert len(jaw) == 19 and not t[0, jaw].any()


def test_decode_inverts_the_targets_to_a_quarter_heatmap_pixel():
    g = torch.Generator().manual_seed(0)
    lm = 4 + 56 * torch.rand(2, 49, 2, generator=g)
    back = decode_heatmaps(heatmap_targets(lm, 64, sigma=1.0))
    assert back.shape == (2, 49, 2)
    err = (back - lm).abs()
    assert err.max() <= 4 * 0.75 + 1e-4  # arg-max within half a heatmap pixel, shift a quarter
    assert err.mean() < 1.5  # the quarter-pixel shift towards the larger neighbour helps on average


def test_nme_hand_computed():
    true = np.zeros((1, 49, 2))
    true[0, 19] = [0, 0]
    true[0, 28] = [10, 0]  # inter-ocular distance 10
    pred = true.copy()
    pred[0, 0] += [3, 4]  # one point off by 5 px
    assert nme(pred, true)[0] == pytest.approx(5 / 49 / 10)
    assert nme(true, true)[0] == 0.0


def test_pretrain_fan_cli_writes_weights_aunet_loads(tmp_path, capsys):
    from audet.cli import main
    from audet.data.toy import make_toy_prepared
    from audet.models import create_model
    from audet.models.base import load_pretrained_parts

    root = tmp_path / "data"
    make_toy_prepared(root)
    out = tmp_path / "fan.safetensors"
    rc = main(["pretrain-fan", "--data", str(root), "--steps", "2", "--batch-size", "2", "--num-workers", "0",
               "--eval-frames", "4", "--out", str(out)])
    assert rc == 0 and out.is_file() and out.with_suffix(".json").is_file()
    assert "NME" in capsys.readouterr().out
    m = create_model("aunet_fan", num_aus=4, img_size=64, fan_weights=str(out))
    assert load_pretrained_parts(m)["fan"].startswith("file ")
    from safetensors.torch import load_file

    torch.testing.assert_close(m.fan.conv1.weight, load_file(str(out))["conv1.weight"])
    # an existing output is not overwritten without --force
    assert main(["pretrain-fan", "--data", str(root), "--steps", "1", "--out", str(out)]) != 0


def test_fan_training_keeps_its_own_colour_jitter_where_aunet_has_none(tmp_path):
    """The FAN's pretraining augments brightness and contrast (0.5 each, as the reported FAN was
    trained); AUNet's detector training does not (section V-C), so the two transforms differ there."""
    from audet.data.toy import make_toy_prepared
    from audet.data.transforms import TrainTransform
    from audet.models.fan_pretrain import _dataset, fan_preprocess

    root = tmp_path / "data"
    make_toy_prepared(root)  # dataset SYNTH, lists SYNTH_part1..3
    tf = _dataset(root, "SYNTH_part1", 64, train=True).transform
    assert (tf.brightness, tf.contrast) == (0.5, 0.5)
    aunet_tf = TrainTransform.from_preprocess(fan_preprocess(64))
    assert (aunet_tf.brightness, aunet_tf.contrast) == (0.0, 0.0)
    assert (tf.crop, tf.resize, tf.flip_p) == (aunet_tf.crop, aunet_tf.resize, aunet_tf.flip_p)
