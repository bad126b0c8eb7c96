"""Config loading: packaged configs, recipes, dotted overrides, clear errors for unknown keys."""
import pytest

from audet.engine.config import ConfigError, load_config, packaged_configs, parse_overrides, resolve_config
from audet.engine.schema import Config

REQUIRED = ["ac2d_bp4d", "ac2d_disfa", "ac2d_gft", "ac2d_bp4dplus", "ac2d_affwild2", "ac2d_synth_quick"]


def test_packaged_configs_load_and_build_their_model():
    """Every packaged config builds its model (building, not training): a misspelt model.args key fails."""
    from audet.engine.task import build_model
    from audet.models.base import AUModel, DataInfo

    names = packaged_configs()
    assert set(REQUIRED) <= set(names)
    for n in names:
        cfg = load_config(n)
        assert cfg["name"] == n
        assert cfg["selection"]["on_test"] is False
        assert cfg["recipe"] == "paper"
        aus = cfg["data"]["aus"] or [1, 2, 4, 6]
        info = DataInfo(aus=aus, subjects=["a", "b", "c"], train_subjects=["a", "b"],
                        label_stats={"n_frames": 4, "pos": [1] * len(aus), "valid": [4] * len(aus),
                                     "train_frames_per_subject": {"a": 2, "b": 2}}, dataset=cfg["data"]["dataset"])
        model = build_model(Config.from_dict(cfg), aus, data=info)
        assert isinstance(model, AUModel) and model.model_name, n
        assert [int(a) for a in model.aus] == list(aus), n


def test_a_misspelt_model_arg_of_a_packaged_config_fails_to_build():
    from audet.engine.task import build_model

    cfg = load_config("ac2d_synth_quick", ["model.args.widht=3"])
    with pytest.raises(ValueError, match="widht"):
        build_model(cfg, [1, 2, 4])


def test_paper_is_default_and_code_recipe_differs():
    paper = load_config("ac2d_bp4d")
    code = load_config("ac2d_bp4d", ["recipe=code"])
    assert (paper["optim"]["lr"], paper["trainer"]["gradient_clip_val"]) == (2e-3, 3.0)
    assert (code["optim"]["lr"], code["trainer"]["gradient_clip_val"], code["seed"]) == (4e-3, 1.0, 4)
    assert code["model"]["args"]["confounder_scale"] == "code"
    assert code["recipe"] == "code"
    # a command-line value beats the recipe's
    assert load_config("ac2d_bp4d", ["recipe=code", "optim.lr=1e-3"])["optim"]["lr"] == 1e-3


def test_disfa_extends_bp4d_and_inits_from_a_bp4d_model():
    cfg = load_config("ac2d_disfa")
    assert cfg["data"]["dataset"] == "DISFA" and cfg["model"]["init_from"]
    assert cfg["optim"]["weight_decay"] == 0.05 and "code" in cfg["recipes"]


def test_dotted_overrides_are_parsed_as_yaml():
    o = parse_overrides(["optim.lr=1e-3", "data.root=/x/y", "trainer.devices=2", "data.aus=[1, 2]",
                         "model.init_from=null", "selection.on_test=true"])
    assert o == {"optim.lr": 1e-3, "data.root": "/x/y", "trainer.devices": 2, "data.aus": [1, 2],
                 "model.init_from": None, "selection.on_test": True}
    cfg = load_config("ac2d_bp4d", o)
    assert cfg["optim"]["lr"] == 1e-3 and cfg["trainer"]["devices"] == 2 and cfg["data"]["aus"] == [1, 2]


def test_unknown_key_error_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*did you mean optim\.lr"):
        load_config("ac2d_bp4d", ["optim.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: resnet_tiny\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer\.max_epoch'.*bad\.yaml.*max_epochs"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        resolve_config({"modle": {"name": "x"}})
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        load_config("ac2d_bp4d", ["recipe=fast"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])


def test_model_args_are_free_form_but_checked_when_built():
    from audet.engine.task import build_model

    cfg = resolve_config({"model": {"name": "resnet_tiny", "args": {"widht": 4}}})
    with pytest.raises(ValueError, match="widht"):
        build_model(cfg, [1, 2])


def test_base_file_and_cli_config_file(tmp_path):
    (tmp_path / "child.yaml").write_text("base: ac2d_gft\nname: child\noptim:\n  lr: 1.0e-4\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg["data"]["train_prefix"] == "GFT_train" and cfg["optim"]["lr"] == 1e-4 and cfg["name"] == "child"


def test_every_default_passes_its_own_check_and_the_typed_view_round_trips():
    from audet.engine.config import DEFAULTS, SCHEMA, get

    for key, check in SCHEMA.items():  # one table: each key's default and check side by side
        assert check(get(DEFAULTS, key)) == get(DEFAULTS, key), key
    for n in packaged_configs():  # every packaged config passes the check; dict -> typed -> dict is exact
        d = load_config(n)
        typed = Config.from_dict(d)
        assert typed.to_dict() == d and Config.from_dict(typed.to_dict()) == typed
    raw = load_config("aunet_bp4d")
    cfg = Config.from_dict(raw)
    vae, detector = cfg.stages
    assert (vae.optim.name, vae.optim.lr, detector.optim.name) == ("adam", 1e-3, "adamw")
    for stage, d in zip(cfg.stages, raw["stages"]):  # a stage's optim = the top-level one + its overrides
        merged = {**raw["optim"], **d["optim"]}
        assert all(getattr(stage.optim, k) == v for k, v in merged.items())
    assert vae.init == "none" and detector.init == "previous"


def test_stage_optimiser_values_are_checked_like_the_top_level_ones(tmp_path):
    (tmp_path / "staged.yaml").write_text(
        "base: resnet_tiny_synth\nstages:\n  - name: a\n    epochs: 1\n    optim: {lr: -1, weight_decay: lots}\n")
    with pytest.raises(ConfigError, match=r"stage 'a': stages\[0\]\.optim\.lr=-1 \(from .*staged\.yaml\) "
                                          r"must be a number > 0"):
        load_config(tmp_path / "staged.yaml")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.optim\.weight_decay=lots .* must be a number >= 0"):
        load_config(tmp_path / "staged.yaml", ["stages=[{name: a, epochs: 1, optim: {weight_decay: lots}}]"])
    with pytest.raises(ConfigError, match=r"optim\.schedule=linear .* must be one of cosine, constant, step"):
        load_config(tmp_path / "staged.yaml", ["stages=[{name: a, epochs: 1, optim: {schedule: linear}}]"])
    with pytest.raises(ConfigError, match=r"optim\.lr=-1 \(from command-line override\) must be a number > 0"):
        load_config("resnet_tiny_synth", ["optim.lr=-1"])
    # a collect-only stage may leave epochs out (or null): one pass; a training stage may not
    both = ["stages=[{name: c, collect_only: true, epochs: null}, {name: t, epochs: null}]"]
    with pytest.raises(ConfigError, match="stage 't' needs epochs >= 1"):
        load_config("resnet_tiny_synth", both)
    one = Config.from_dict(load_config("resnet_tiny_synth", ["stages=[{name: c, collect_only: true, epochs: null}]"]))
    assert one.stages[0].epochs == 1
    # a value error is one line
    try:
        load_config(tmp_path / "staged.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_values_are_checked_and_normalised():
    cfg = load_config("ac2d_bp4d", ["trainer.max_epochs=3.0", "data.aus=1,2,4", "trainer.devices=[0, 1]",
                                    "trainer.limit_train_batches=0.25", "output.resume=true"])
    assert cfg["trainer"]["max_epochs"] == 3 and isinstance(cfg["trainer"]["max_epochs"], int)
    assert cfg["data"]["aus"] == [1, 2, 4] and cfg["trainer"]["devices"] == [0, 1]
    assert load_config("ac2d_bp4d", ["data.aus=DISFA"])["data"]["aus"] == [1, 2, 4, 6, 9, 12, 25, 26]
    for bad, msg in [("trainer.max_epochs=1.7", r"trainer\.max_epochs=1\.7 \(from command-line override\) "
                                                r"must be a whole number >= 1 \(e\.g\. trainer\.max_epochs=20\)"),
                     ("optim.lr=0", r"optim\.lr=0 .* must be a number > 0"),
                     ("selection.on_test=maybe", r"selection\.on_test=maybe .* must be true or false"),
                     ("data.val_fraction=1.5", r"must be a fraction in \[0, 1\) or a whole number of subjects"),
                     ("trainer.limit_val_batches=2.5", r"trainer\.limit_val_batches=2\.5"),
                     ("data.aus=[0, 1]", r"data\.aus=\[0, 1\]"),
                     ("model.args=3", r"model\.args=3 .* must be a mapping")]:
        with pytest.raises(ConfigError, match=msg):
            load_config("ac2d_bp4d", [bad])


def test_value_errors_name_the_file_or_recipe_that_set_them(tmp_path):
    (tmp_path / "base.yaml").write_text("base: resnet_tiny_synth\ndata:\n  batch_size: 0\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nrecipes:\n  bad: {optim.lr: -1}\n")
    with pytest.raises(ConfigError, match=r"data\.batch_size=0 \(from .*base\.yaml\)"):
        load_config(tmp_path / "child.yaml")
    with pytest.raises(ConfigError, match=r"optim\.lr=-1 \(from .*child\.yaml \(recipe 'bad'\)\)"):
        load_config(tmp_path / "child.yaml", ["recipe=bad", "data.batch_size=2"])
    # the command line wins and is named
    with pytest.raises(ConfigError, match=r"data\.batch_size=-4 \(from command-line override\)"):
        load_config(tmp_path / "child.yaml", ["data.batch_size=-4"])
