"""Converter findings of issue 17: AU-FAN files (83 entries), CISNet bare epoch files from the CLI
(--subjects), unsupported CISNet backbones, per-converter summaries, --as-published. Golden-style
random weights (helpers.randomize), files saved as the authors' scripts save them."""
import json
from collections import OrderedDict

import pytest
import torch
from helpers import randomize

from audet.cli import main
from audet.models import create_model
from audet.models.base import DataInfo

AUS = [1, 2, 4, 6]


@pytest.fixture(scope="module")
def aufan_file(tmp_path_factory):
    """An AU-FAN predictor saved as the authors' script saves it (a plain state dict, 83 entries)."""
    m = create_model("aunet_fan", num_aus=4, aus=AUS, allow_random_pretrained=True, img_size=64)
    randomize(m.predictor, seed=3)
    sd = OrderedDict((k, v.clone()) for k, v in m.predictor.state_dict().items())
    assert len(sd) == 83
    path = tmp_path_factory.mktemp("aufan") / "fc_12.pth"
    torch.save(sd, path)
    return m, path


def test_aufan_file_of_83_entries_converts(aufan_file):
    from audet.models.convert.aunet import convert_aunet

    m, path = aufan_file
    c = convert_aunet(path, AUS, img_size=64)
    assert c.model_name == "aunet_fan" and c.conversion_report["tensors"] == 83 and not c.predictor.temporal
    for k, v in m.predictor.state_dict().items():
        assert torch.equal(v, c.predictor.state_dict()[k]), k
    f = torch.randn(2, 768, 16, 16)
    with torch.no_grad():
        assert torch.equal(m.predictor.eval()(f), c.predictor(f))


def test_cli_aunet_prints_its_own_summary_and_as_published_sets_flip_tta(aufan_file, tmp_path, capsys):
    _, path = aufan_file
    assert main(["convert", "aunet", str(path), "--out", str(tmp_path / "paper"), "--aus", "1,2,4,6"]) == 0
    text = capsys.readouterr().out
    assert "prototype" not in text and "AU-FAN predictor: 83 entries" in text and "as the paper" in text
    assert json.loads((tmp_path / "paper.json").read_text())["model_config"]["flip_tta"] is False
    assert main(["convert", "aunet", str(path), "--out", str(tmp_path / "pub"), "--aus", "1,2,4,6",
                 "--as-published"]) == 0
    assert "test.py (flip averaging)" in capsys.readouterr().out
    assert json.loads((tmp_path / "pub.json").read_text())["model_config"]["flip_tta"] is True


@pytest.fixture(scope="module")
def cis_files(tmp_path_factory):
    """A random cisnet_r18 with a dictionary: final_model.pt and the bare epoch5_model.pt."""
    from audet.models.convert.cisnet import to_authors_checkpoint

    subs = ["F001", "F002", "M001"]
    m = randomize(create_model("cisnet_r18", aus=AUS, data=DataInfo(aus=AUS, subjects=subs)), seed=4,
                  skip=("cis.dict",))
    n = torch.tensor([4.0, 2, 6])
    m.cis.set_dictionary(torch.rand(3, 512, generator=torch.Generator().manual_seed(5)), n / n.sum(), counts=n)
    d = tmp_path_factory.mktemp("cis")
    ck = to_authors_checkpoint(m)
    torch.save(ck, d / "final_model.pt")
    torch.save(ck["model"], d / "epoch5_model.pt")
    return m.eval(), d, subs


def test_cli_bare_cisnet_epoch_file_with_subjects_file_or_list(cis_files, tmp_path, capsys):
    _m, d, subs = cis_files
    bare = str(d / "epoch5_model.pt")
    # without the subject list: a one-line usage error that names the option
    assert main(["convert", "cisnet", bare, "--out", str(tmp_path / "x"), "--aus", "1,2,4,6"]) == 2
    assert "--subjects" in capsys.readouterr().err
    lst = tmp_path / "subjects.txt"
    lst.write_text("# training subjects\nM001\nF001\n\nF002\n")
    for value, out in ((str(lst), "a"), ("F002,M001,F001", "b")):
        assert main(["convert", "cisnet", bare, "--out", str(tmp_path / out), "--aus", "1,2,4,6",
                     "--subjects", value]) == 0
        assert "bare epoch file; 3 training subjects" in capsys.readouterr().out
        info = json.loads((tmp_path / f"{out}.json").read_text())
        assert info["data_info"]["subjects"] == sorted(subs) and info["model"] == "cisnet_r18"
    assert main(["convert", "cisnet", bare, "--out", str(tmp_path / "c"), "--subjects", "F001,F001"]) == 2
    assert main(["convert", "ac2d", bare, "--out", str(tmp_path / "c"), "--subjects", "F001"]) == 2
    assert "option of `audet convert cisnet`" in capsys.readouterr().err


def test_cisnet_as_published_evaluates_without_the_dictionary(cis_files):
    from audet.models.convert.cisnet import convert_cisnet

    _m, d, subs = cis_files
    paper = convert_cisnet(d / "final_model.pt", AUS, subjects=subs)
    pub = convert_cisnet(d / "final_model.pt", AUS, subjects=subs, as_published=True)
    assert paper.eval_intervention and not pub.eval_intervention and pub.conversion_report["as_published"]
    assert "without the subject dictionary" in pub.conversion_report["summary"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(pub.forward_logits(x), paper.forward_head(paper.forward_features(x), intervention=False))
        assert not torch.allclose(pub.forward_logits(x), paper.forward_logits(x))


@pytest.mark.parametrize("arch,kernel", [("AlexNet", 11), ("VGG-16", 3)])
def test_unsupported_cisnet_backbone_is_refused_naming_the_supported_ones(cis_files, tmp_path, arch, kernel):
    from audet.models.convert.cisnet import ConversionError, convert_cisnet

    _m, d, subs = cis_files
    sd = {k: v for k, v in torch.load(d / "epoch5_model.pt", weights_only=True).items() if not k.startswith("encoder.")}
    sd = {"encoder.0.0.weight": torch.zeros(64, 3, kernel, kernel), "encoder.0.0.bias": torch.zeros(64), **sd}
    with pytest.raises(ConversionError, match=f"{arch}.*resnet18, resnet34, resnet50"):
        convert_cisnet(sd, AUS, subjects=subs)
