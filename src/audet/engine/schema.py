"""The config schema: every key a training config may set, its default and its check, in ONE table.

The table is the set of frozen dataclasses below: each field is one key (``key(default, check,
doc)``) or a section (``section(Cls)``). From it come

- the typed view the engine reads (``cfg = Config.from_dict(d)``; ``cfg.optim.lr``,
  ``cfg.stages[0].optim.weight_decay``): built once per run, every value checked;
- :data:`DEFAULTS` (the nested dict of defaults) and :data:`SCHEMA` (dotted key -> check) for the
  loading and merging code of :mod:`audet.engine.config`.

A stage (:class:`Stage`) may override any ``optim`` key; its values pass the same checks as the
top-level ones, and ``stage.optim`` is the merged :class:`Optim` the stage trains with. Optimiser
and schedule names are listed once (:data:`OPTIMIZERS`, :data:`SCHEDULES`).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from audet.engine.checks import (Bad, aus, betas, boolean, choice, device_list, either, integer, mapping, number,
                                 plain_text, text, text_list)

__all__ = ["Config", "Model", "Data", "Optim", "Trainer", "Selection", "Output", "Stage", "ConfigError",
           "DEFAULTS", "SCHEMA", "STAGE_KEYS", "FREE_FORM", "OPTIMIZERS", "SCHEDULES", "WARMUP_FORMULAS", "DECAY_SCOPES",
           "PRECISIONS",
           "check_stages", "as_config", "section_from_dict"]

#: the optimisers ``optim.name`` may name (built by :func:`audet.engine.optim.build_optimizer`)
OPTIMIZERS = ("adamw", "adam", "sgd")
#: the learning-rate schedules of ``optim.schedule`` (:class:`audet.engine.optim.WarmupCosine`)
SCHEDULES = ("cosine", "constant", "step")
#: the warm-up formulas of ``optim.warmup_formula`` (:class:`audet.engine.optim.WarmupCosine`)
WARMUP_FORMULAS = ("linear", "linspace")
#: the parameters ``optim.weight_decay_scope`` decays (:func:`audet.engine.optim.param_groups`)
DECAY_SCOPES = ("weights", "all")
#: the values ``trainer.precision`` accepts (Lightning's, plus ``auto``)
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "64-true", "64", 32, 16, 64)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


def key(default: Any, check, doc: str = "", *, free: bool = False):
    """A config key: its default, its check (``audet.engine.checks``) and what it means.
    ``free``: anything below it goes (its content is checked elsewhere)."""
    return field(default_factory=lambda: copy.deepcopy(default),
                 metadata={"check": check, "doc": doc, "free": free})


def section(cls, doc: str = ""):
    return field(default_factory=cls, metadata={"section": cls, "doc": doc})


_LIMIT = either(integer(lo=0), number(lo=0, hi=1), choice(None),
                what="null, a number of batches (whole number >= 0) or a fraction in [0, 1]")


@dataclass(frozen=True)
class Model:
    name: str = key("resnet_tiny", text(none=False), "a registered name: `audet models`")
    args: dict = key({}, mapping(), "keyword arguments of the model factory (checked when the model is built)",
                     free=True)
    init_from: str | None = key(None, text(), "a .safetensors checkpoint; AU branches mapped by AU identity")
    init_strict_trunk: bool = key(True, boolean(), "error if a non-AU tensor of the checkpoint does not fit")


@dataclass(frozen=True)
class Data:
    dataset: str | None = key(None, text(), 'e.g. "BP4D" (informational; the AU list comes from dataset.json)')
    root: str | None = key(None, text(), "a prepared directory (OUT/dataset.json, OUT/list, OUT/images)")
    fold: int | None = key(None, integer(lo=0, none=True), "0-based fold of dataset.json (overrides the prefixes)")
    train_prefix: str | None = key(None, text())
    test_prefix: str | None = key(None, text())
    test_root: str | None = key(None, text(), "cross-dataset: test prefix read from another prepared directory")
    aus: list | None = key(None, aus, "subset of the data's AUs (default: all of them)")
    batch_size: int = key(32, integer(lo=1), "per process")
    num_workers: int = key(4, integer(lo=0))
    val_fraction: float | int | None = key(0.15, either(number(lo=0, hi=1, hi_open=True), integer(lo=1), choice(None),
                                                        what="a fraction in [0, 1) or a whole number of subjects"),
                                           "share of TRAINING subjects held out for model selection")
    clip: dict | None = key(None, mapping(none=True), "the model owns its clip; this may add {windows: disjoint} (or repeat the model's)", free=True)
    eval_batch_size: int | None = key(None, integer(lo=1, none=True), "default: batch_size")


@dataclass(frozen=True)
class Optim:
    name: str = key("adamw", choice(*OPTIMIZERS), " | ".join(OPTIMIZERS))
    momentum: float = key(0.9, number(0, 1, hi_open=True), "sgd only")
    nesterov: bool = key(True, boolean(), "sgd only (Nesterov momentum)")
    lr: float = key(2.0e-3, number(lo=0, lo_open=True),
                    "base learning rate per 256 samples (paper: 2e-3; published code: 4e-3)")
    scale_lr: bool = key(True, boolean(), "lr = optim.lr * global_batch / 256")
    weight_decay: float = key(0.05, number(lo=0))
    betas: list = key([0.9, 0.999], betas)
    eps: float = key(1.0e-8, number(lo=0, lo_open=True))
    warmup_epochs: float = key(1.0, number(lo=0), "linear warm-up, per step")
    warmup_start_factor: float = key(0.0, number(0, 1),
                                     "lr at step 0 = lr * (factor + (1 - factor) / warmup_steps)")
    warmup_formula: str = key("linear", choice(*WARMUP_FORMULAS),
                              "linear: lr (s + 1) / W; linspace: lr s / (W - 1), step 0 at lr 0")
    min_lr: float = key(0.0, number(lo=0), "floor of the cosine schedule (absolute)")
    schedule: str = key("cosine", choice(*SCHEDULES), " | ".join(SCHEDULES))
    step_epochs: float = key(1.0, number(lo=0, lo_open=True), "step schedule: lr *= step_gamma every step_epochs")
    step_gamma: float = key(0.1, number(lo=0, lo_open=True))
    no_decay_keywords: list = key(["pos_embed", "position", "cls_token"], text_list())
    weight_decay_scope: str = key("weights", choice(*DECAY_SCOPES),
                                  "weights: not norms/biases/1-d/no_decay_keywords; all: every parameter (plain torch)")


@dataclass(frozen=True)
class Trainer:
    max_epochs: int = key(20, integer(lo=1))
    gradient_clip_val: float | None = key(3.0, number(lo=0, none=True), "paper: 3.0; published code: 1.0")
    gradient_clip_algorithm: str = key("norm", choice("norm", "value"))
    precision: Any = key("auto", choice(*PRECISIONS),
                         'auto: "16-mixed" on CUDA, else "32-true"; "bf16-mixed" opt-in on CPU')
    accelerator: str = key("auto", text(none=False))
    devices: Any = key(1, either(integer(lo=1), choice("auto"), device_list, text(none=False),
                                 what="a number of devices >= 1, 'auto' or a list of device ids like [0, 1]"))
    num_nodes: int = key(1, integer(lo=1))
    strategy: str = key("auto", text(none=False), '"ddp" for several processes (gloo on CPU, nccl on GPU)')
    find_unused_parameters: bool = key(False, boolean())
    deterministic: bool = key(False, boolean())
    log_every_n_steps: int = key(50, integer(lo=1))
    limit_train_batches: Any = key(None, _LIMIT)
    limit_val_batches: Any = key(None, _LIMIT)
    limit_test_batches: Any = key(None, _LIMIT)
    accumulate_grad_batches: int = key(1, integer(lo=1))
    check_val_every_n_epoch: int = key(1, integer(lo=1))
    progress_bar: Any = key("auto", choice("auto", True, False), "auto: only when stderr is a terminal and not CI")
    tensorboard: Any = key("auto", choice("auto", True, False),
                           "auto: when installed (the tensorboard extra: pip install 'audet[tensorboard]'); true: "
                           "warn when it is not")
    num_sanity_val_steps: int = key(0, integer(lo=-1))


@dataclass(frozen=True)
class Selection:
    monitor: str = key("f1", text(none=False), "mean F1-frame over AUs")
    mode: str = key("max", choice("max", "min"))
    on_test: bool = key(False, boolean(), "True reproduces the published habit (select on the test fold)")
    test_after_fit: bool = key(True, boolean(), "evaluate best and last on the test prefix when training ends")
    f1_convention: str = key("paper", lambda v: _f1_convention(v),
                             "F1 edge cases of the training-time scores: a convention of audet.metrics")


@dataclass(frozen=True)
class Output:
    dir: str | None = key(None, text(), "default: runs/<name>")
    resume: Any = key("auto", choice("auto", True, False, "true", "false"),
                      "auto: resume when <dir>/checkpoints/last.ckpt exists; true; false")


def _f1_convention(v):
    """One of audet.metrics' F1 conventions (imported when checked: the metrics pull in pandas)."""
    from audet.metrics import _CONVENTIONS

    return choice(*_CONVENTIONS)(v)


def _stage_name(v):
    if isinstance(v, str) and v and v.replace("_", "").replace("-", "").isalnum():
        return v
    raise Bad("a name of letters, digits, '-' or '_'")


def _optim_overrides(v):  # the shape; each value is checked by Optim's own check (check_stages)
    if isinstance(v, Mapping):
        return dict(v)
    raise Bad("a mapping of optim keys (overrides of the optim section)")


def _init(v):
    if isinstance(v, str) and v:
        return v
    raise Bad("'previous', 'none' or a checkpoint path")


@dataclass(frozen=True)
class Stage:
    """One training stage; ``optim`` is the top-level :class:`Optim` with the stage's overrides."""

    name: str = key(None, _stage_name, "required, unique; trains in stages/<index>_<name>")
    epochs: int = key(None, integer(lo=1, none=True), "required (>= 1; default 1 for collect_only)")
    optim: Optim = key({}, _optim_overrides, "overrides of the optim section (checked like it)")
    trainable: list | None = key(None, text_list("['vae.*'] (fnmatch patterns)", none=True),
                                 "fnmatch patterns over parameter names; default: every parameter not frozen")
    frozen: list = key([], text_list("['vae.*'] (fnmatch patterns)"),
                       "patterns: requires_grad False, kept in eval mode, not optimised")
    collect_only: bool = key(False, boolean(), "no training step: only the model's data pass")
    labels_only: bool = key(False, boolean(), "batches of labels only (model.batch_keys(stage); no image read, no "
                            "forward), no validation, the last epoch kept")
    frames: bool = key(False, boolean(), "train on single frames, data.batch_size x the clip length of them "
                       "a step, instead of the model's clips (validation keeps the clips)")
    init: str = key("previous", _init, "previous | none (as built) | PATH")
    gradient_clip_val: Any = key("inherit", either(choice("inherit"), number(lo=0, none=True),
                                                   what="'inherit', null or a number >= 0"),
                                 "default: trainer.gradient_clip_val")
    #: the optim keys the stage itself set (not a config key: what ``to_dict`` writes back)
    optim_overrides: dict = field(default_factory=dict, compare=False, repr=False, metadata={"internal": True})


def _stages_shape(v):
    if v is None or (isinstance(v, list) and v):
        return v
    raise Bad("null or a non-empty list of stages (name, epochs, optim, ...; docs/training.md)")


@dataclass(frozen=True)
class Config:
    """A resolved training config, read by the engine as attributes (``cfg.data.batch_size``)."""

    name: str | None = key(None, text(), "run name (defaults to the config file's stem)")
    seed: int | None = key(0, integer(0, 2**32 - 1, none=True))
    recipe: str = key("paper", text(none=False), 'which entry of recipes to apply ("paper" = the file\'s own values)')
    recipes: dict = key({}, mapping(), "name -> {dotted.key: value}", free=True)
    base: Any = key(None, lambda v: v, "a config (or list of configs) this one extends")
    model: Model = section(Model)
    data: Data = section(Data)
    stages: tuple = key(None, _stages_shape, "a list of training stages (Stage); None = one stage", free=True)
    optim: Optim = section(Optim)
    trainer: Trainer = section(Trainer)
    selection: Selection = section(Selection)
    output: Output = section(Output)

    @classmethod
    def from_dict(cls, cfg: Mapping, source: str = "config", sources: Mapping[str, str] | None = None) -> "Config":
        """Check every value of the config dict ``cfg`` (defaults for what it lacks) and build the
        typed config. A bad value raises :class:`ConfigError` naming the key, the value and where it
        came from (``sources``: dotted key -> file / recipe / override)."""
        return _build(cls, cfg, "", source, dict(sources or {}))

    def to_dict(self) -> dict:
        """The plain nested dict (what ``config.yaml`` and a checkpoint's metadata hold)."""
        return _to_dict(self, self)

    def replace(self, **changes) -> "Config":
        """A copy with dotted keys changed and checked: ``cfg.replace(**{"data.fold": 1})``."""
        d = self.to_dict()
        for dotted, value in changes.items():
            holder = d
            *head, leaf = dotted.split(".")
            for part in head:
                holder = holder[part]
            holder[leaf] = value
        return Config.from_dict(d, "replace")

    def stage_list(self) -> tuple[Stage, ...]:
        """The stages to run: ``stages``, or one implicit stage from ``optim`` and ``trainer``."""
        if self.stages:
            return self.stages
        return (Stage(name="", epochs=self.trainer.max_epochs, optim=self.optim, init="none"),)


def section_from_dict(cls, values: Mapping, prefix: str, source: str = "config"):
    """One section (e.g. :class:`Optim`) from a mapping: defaults for what it lacks, every value checked."""
    return _build(cls, values, prefix.rstrip(".") + ".", source, {})


def as_config(cfg: "Config | Mapping") -> Config:
    """``cfg`` as a :class:`Config` (a resolved config dict is checked and converted once)."""
    return cfg if isinstance(cfg, Config) else Config.from_dict(cfg)


# --------------------------------------------------------------------------------------------
# the table's derived forms
# --------------------------------------------------------------------------------------------
def _fields(cls) -> list[dataclasses.Field]:
    """The config keys of a section (internal bookkeeping fields left out)."""
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def _defaults(cls) -> dict:
    out = {}
    for f in _fields(cls):
        out[f.name] = _defaults(f.metadata["section"]) if "section" in f.metadata else f.default_factory()
    return out


def _checks(cls, prefix: str = "") -> dict:
    out = {}
    for f in _fields(cls):
        if "section" in f.metadata:
            out.update(_checks(f.metadata["section"], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f.metadata["check"]
    return out


def _free(cls, prefix: str = "") -> set:
    out = set()
    for f in _fields(cls):
        if "section" in f.metadata:
            out |= _free(f.metadata["section"], f"{prefix}{f.name}.")
        elif f.metadata.get("free"):
            out.add(prefix + f.name)
    return out


#: every key a config may set, with its default (nested, as a config file)
DEFAULTS: dict[str, Any] = _defaults(Config)
#: dotted key -> check (``base`` and the free-form keys check only their kind)
SCHEMA: dict[str, Any] = {k: v for k, v in _checks(Config).items() if k != "base"}
#: keys below which anything goes (``model.args``: the factory's signature checks it when built)
FREE_FORM: set[str] = _free(Config)
#: the keys a stage may set, with their defaults
STAGE_KEYS: dict[str, Any] = _defaults(Stage)


# --------------------------------------------------------------------------------------------
# building the typed view
# --------------------------------------------------------------------------------------------
def _source_of(sources: Mapping[str, str], dotted: str, default: str) -> str:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        k = ".".join(parts[:i])
        if k in sources:
            return sources[k]
    return default


def _example(dotted: str, default: Any, check) -> str:
    try:
        if default is not None and check(default) is not None:
            return f" (e.g. {dotted}={plain_text(default)})"
    except Bad:
        pass
    return ""


def _checked(dotted: str, value: Any, f: dataclasses.Field, where: str, context: str = "") -> Any:
    try:
        return f.metadata["check"](value)
    except Bad as bad:
        fix = ("fix the override" if "command-line" in where else f"edit it there or override it with {dotted}=VALUE")
        if context and "command-line" not in where:
            fix = "edit it there"
        raise ConfigError(f"{context}{dotted}={plain_text(value)!s} (from {where}) must be {bad}"
                          f"{_example(dotted, f.default_factory(), f.metadata['check'])}; {fix}") from None


def _build(cls, values: Mapping, prefix: str, source: str, sources: dict) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section {prefix.rstrip('.')!r} in {_source_of(sources, prefix.rstrip('.'), source)} "
                          f"must be a mapping, got {values!r}")
    known = {f.name for f in _fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r} in {source} "
                          f"(keys of {prefix.rstrip('.') or 'a config'}: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for f in _fields(cls):
        dotted = prefix + f.name
        if "section" in f.metadata:
            kwargs[f.name] = _build(f.metadata["section"], values.get(f.name), dotted + ".", source, sources)
        elif f.name in values:
            kwargs[f.name] = _checked(dotted, copy.deepcopy(values[f.name]), f,
                                      _source_of(sources, dotted, "the defaults"))
    if cls is Config:
        kwargs["stages"] = check_stages(kwargs.get("stages"), _source_of(sources, "stages", source),
                                        optim=kwargs["optim"])
    return cls(**kwargs)


def check_stages(stages: Any, source: str = "config", *, optim: Optim | Mapping | None = None) -> tuple[Stage, ...]:
    """Check ``stages`` (a list of stage mappings, or None) and build them; ``optim`` is the
    top-level optim section each stage's ``optim`` overrides. Raises :class:`ConfigError` naming
    the stage, the key and the value."""
    if stages is None:
        return ()
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list of stage mappings (or absent)")
    top = optim if isinstance(optim, Optim) else _build(Optim, optim or {}, "optim.", source, {})
    optim_fields = {f.name: f for f in fields(Optim)}
    stage_fields = {f.name: f for f in _fields(Stage)}
    out, names = [], set()
    for i, st in enumerate(stages):
        if isinstance(st, Stage):
            st = _stage_dict(st, top)
        if not isinstance(st, Mapping):
            raise ConfigError(f"{source}: stage {i} must be a mapping with name, epochs, optim, ...; got {st!r}")
        unknown = sorted(set(st) - set(stage_fields))
        if unknown:
            raise ConfigError(f"{source}: stage {i} has unknown key(s) {unknown}; a stage may set "
                              f"{', '.join(stage_fields)}")
        label = f"stage {st.get('name')!r}" if isinstance(st.get("name"), str) else f"stage {i}"
        if "name" not in st:
            raise ConfigError(f"{source}: stage {i} needs a name of letters, digits, '-' or '_'")
        vals = {k: _checked(f"stages[{i}].{k}", copy.deepcopy(v), stage_fields[k], source, f"{label}: ")
                for k, v in st.items()}
        if vals["name"] in names:
            raise ConfigError(f"{source}: stage name {vals['name']!r} is used twice")
        names.add(vals["name"])
        if vals.get("labels_only") and vals.get("collect_only"):
            raise ConfigError(f"{source}: {label}: collect_only and labels_only exclude each other")
        if vals.get("frames") and (vals.get("labels_only") or vals.get("collect_only")):
            raise ConfigError(f"{source}: {label}: frames trains on images; it excludes collect_only and labels_only")
        if vals.get("epochs") is None:
            if not vals.get("collect_only"):
                raise ConfigError(f"{source}: {label} needs epochs >= 1 (got {st.get('epochs')!r})")
            vals["epochs"] = 1
        over = vals.get("optim", {})
        bad = sorted(set(over) - set(optim_fields))
        if bad:
            raise ConfigError(f"{source}: {label}: unknown optim key(s) {bad} (known: {', '.join(sorted(optim_fields))})")
        checked = {k: _checked(f"stages[{i}].optim.{k}", v, optim_fields[k], source, f"{label}: ")
                   for k, v in over.items()}
        vals["optim"] = dataclasses.replace(top, **checked)
        vals["optim_overrides"] = checked
        if i == 0 and vals.get("init", "previous") == "previous":
            vals["init"] = "none"
        out.append(Stage(**vals))
    return tuple(out)


def _stage_dict(stage: Stage, top: Optim) -> dict:
    d = {f.name: copy.deepcopy(getattr(stage, f.name)) for f in _fields(Stage)}
    d["optim"] = copy.deepcopy(stage.optim_overrides)
    return d


def _to_dict(obj: Any, root: Config) -> Any:
    if isinstance(obj, Config):
        d = {}
        for f in fields(obj):
            v = getattr(obj, f.name)
            if f.name == "stages":
                d[f.name] = [_stage_dict(s, obj.optim) for s in v] if v else None
            else:
                d[f.name] = _to_dict(v, root)
        return d
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name), root) for f in fields(obj)}
    return copy.deepcopy(obj)
