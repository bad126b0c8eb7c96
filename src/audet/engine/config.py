"""Training configurations as data: defaults, YAML files, named recipes and dotted overrides.

A config is a nested dict with the sections ``model``, ``data``, ``optim``, ``trainer``,
``selection`` and ``output`` plus a few top-level keys (``seed``, ``recipe``, ``recipes``,
``base``, ``name``). Every key a config may set is listed in :data:`DEFAULTS`; anything else is an
error that names the key (``model.args`` is free-form: it holds the model factory's keyword
arguments and is checked against the factory's signature when the model is built).

Resolution order (later wins):

1. :data:`DEFAULTS`;
2. the ``base:`` file(s), recursively (a path relative to the including file, or the name of a
   packaged config such as ``ac2d_bp4d``);
3. the file itself;
4. the selected recipe (``recipe: paper`` by default; ``recipes: {code: {optim.lr: 4e-3, ...}}``
   holds named alternatives as dotted overrides);
5. ``key=value`` overrides from the command line (``optim.lr=1e-3 data.root=/data/bp4d``),
   values parsed as YAML (``1e-3`` -> float, ``[1, 2]`` -> list, ``null`` -> None).

A ``recipe=...`` override selects the recipe before it is applied, so the command-line overrides
still win over the recipe's values.
"""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "load_config",
    "resolve_config",
    "apply_overrides",
    "parse_overrides",
    "validate_config",
    "check_stages",
    "STAGE_KEYS",
    "config_path",
    "packaged_configs",
    "dump_config",
    "get",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Every key a config may set, with its default. ``model.args`` and ``recipes`` are free-form.
DEFAULTS: dict[str, Any] = {
    "name": None,  # run name (defaults to the config file's stem)
    "seed": 0,
    "recipe": "paper",  # which entry of ``recipes`` to apply ("paper" = the file's own values)
    "recipes": {},  # name -> {dotted.key: value}
    "base": None,  # a config (or list of configs) this one extends
    "model": {
        "name": "resnet_tiny",  # a registered name: `audet models`
        "args": {},  # keyword arguments of the model factory (free-form, checked at build time)
        "init_from": None,  # a .safetensors checkpoint; AU branches mapped by AU identity
        "init_strict_trunk": True,  # error if a non-AU tensor of the checkpoint does not fit
    },
    "data": {
        "dataset": None,  # e.g. "BP4D" (informational; the AU list comes from dataset.json)
        "root": None,  # a prepared directory (OUT/dataset.json, OUT/list, OUT/images)
        "fold": None,  # 0-based fold of dataset.json (overrides train_prefix/test_prefix)
        "train_prefix": None,
        "test_prefix": None,
        "test_root": None,  # cross-dataset: test prefix read from another prepared directory
        "aus": None,  # subset of the data's AUs (default: all of them)
        "batch_size": 32,  # per process
        "num_workers": 4,
        "val_fraction": 0.15,  # share of TRAINING subjects held out for model selection
        "clip": None,  # temporal models: e.g. {"offsets": [-10, 0, 10]}
        "eval_batch_size": None,  # default: batch_size
    },
    "stages": None,  # a list of training stages (see STAGE_KEYS, docs/training.md); None = one stage
    "optim": {
        "name": "adamw",  # adamw | adam | sgd
        "momentum": 0.9,  # sgd only
        "nesterov": True,  # sgd only (Nesterov momentum)
        "lr": 2.0e-3,  # base learning rate per 256 samples (paper: 2e-3; published code: 4e-3)
        "scale_lr": True,  # lr = optim.lr * global_batch / 256
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "warmup_epochs": 1.0,  # linear warm-up, per step
        "warmup_start_factor": 0.0,  # lr at step 0 = lr * (factor + (1 - factor) / warmup_steps)
        "min_lr": 0.0,  # floor of the cosine schedule (absolute)
        "schedule": "cosine",  # "cosine" | "constant"
        "no_decay_keywords": ["pos_embed", "position", "cls_token"],
    },
    "trainer": {
        "max_epochs": 20,
        "gradient_clip_val": 3.0,  # paper: 3.0; published code: 1.0
        "gradient_clip_algorithm": "norm",
        "precision": "auto",  # auto: "16-mixed" on CUDA, else "32-true"; "bf16-mixed" opt-in on CPU
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",  # "ddp" for several processes (gloo on CPU, nccl on GPU)
        "find_unused_parameters": False,
        "deterministic": False,
        "log_every_n_steps": 50,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "limit_test_batches": None,
        "accumulate_grad_batches": 1,
        "check_val_every_n_epoch": 1,
        "progress_bar": "auto",  # auto: only when stderr is a terminal and not under CI
        "tensorboard": True,
        "num_sanity_val_steps": 0,
    },
    "selection": {
        "monitor": "f1",  # mean F1-frame over AUs
        "mode": "max",
        "on_test": False,  # True reproduces the published habit (select on the test fold)
        "test_after_fit": True,  # evaluate best and last on the test prefix when training ends
    },
    "output": {
        "dir": None,  # default: runs/<name>
        "resume": "auto",  # auto: resume when <dir>/checkpoints/last.ckpt exists; true; false
    },
}

#: Keys below which anything goes (their content is checked elsewhere: stages by check_stages).
FREE_FORM = {"model.args", "recipes", "data.clip", "stages"}

#: The keys a stage of ``stages`` may set, with their defaults.
STAGE_KEYS: dict[str, Any] = {
    "name": None,  # required, unique; the stage's run subdirectory is stages/<index>_<name>
    "epochs": None,  # required (>= 1)
    "optim": {},  # overrides of the ``optim`` section (name, lr, weight_decay, schedule, ...)
    "trainable": None,  # fnmatch patterns over parameter names; default: every parameter not frozen
    "frozen": [],  # patterns: requires_grad False, sub-modules kept in eval mode, not optimised
    "collect_only": False,  # no training step: only the model's data pass over the training set
    "init": "previous",  # previous (the last weights of the previous stage) | none (as built) | PATH
    "gradient_clip_val": "inherit",  # default: trainer.gradient_clip_val
}


def check_stages(stages: Any, source: str = "config") -> list[dict]:
    """Validate ``stages`` and fill each stage's defaults; raise :class:`ConfigError` naming the problem."""
    if stages is None:
        return []
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list of stage mappings (or absent)")
    out, names = [], set()
    optim_keys = set(DEFAULTS["optim"])
    for i, st in enumerate(stages):
        if not isinstance(st, Mapping):
            raise ConfigError(f"{source}: stage {i} must be a mapping with name, epochs, optim, ...; got {st!r}")
        unknown = sorted(set(st) - set(STAGE_KEYS))
        if unknown:
            raise ConfigError(f"{source}: stage {i} has unknown key(s) {unknown}; a stage may set {', '.join(STAGE_KEYS)}")
        full = {**copy.deepcopy(STAGE_KEYS), **copy.deepcopy(dict(st))}
        name = full["name"]
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{source}: stage {i} needs a name of letters, digits, '-' or '_' (got {name!r})")
        if name in names:
            raise ConfigError(f"{source}: stage name {name!r} is used twice")
        names.add(name)
        if full["epochs"] is None and full["collect_only"]:
            full["epochs"] = 1
        if not isinstance(full["epochs"], int) or full["epochs"] < 1:
            raise ConfigError(f"{source}: stage {name!r} needs epochs >= 1 (got {full['epochs']!r})")
        if not isinstance(full["optim"], Mapping):
            raise ConfigError(f"{source}: stage {name!r}: optim must be a mapping of optim keys")
        bad = sorted(set(full["optim"]) - optim_keys)
        if bad:
            raise ConfigError(f"{source}: stage {name!r}: unknown optim key(s) {bad} (known: {', '.join(sorted(optim_keys))})")
        oname = str(full["optim"].get("name", "adamw")).lower()
        if oname not in ("adamw", "adam", "sgd"):
            raise ConfigError(f"{source}: stage {name!r}: optim.name={oname!r}; choose adamw, adam or sgd")
        for key in ("trainable", "frozen"):
            v = full[key]
            if v is not None and (not isinstance(v, list) or not all(isinstance(p, str) for p in v)):
                raise ConfigError(f"{source}: stage {name!r}: {key} must be a list of fnmatch patterns (e.g. ['vae.*'])")
        if not isinstance(full["collect_only"], bool):
            raise ConfigError(f"{source}: stage {name!r}: collect_only must be true or false")
        if not isinstance(full["init"], str) or not full["init"]:
            raise ConfigError(f"{source}: stage {name!r}: init must be 'previous', 'none' or a checkpoint path")
        if i == 0 and full["init"] == "previous":
            full["init"] = "none"
        out.append(full)
    return out


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


# --------------------------------------------------------------------------------------------
# dotted access
# --------------------------------------------------------------------------------------------
def get(cfg: Mapping, dotted: str, default: Any = None) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _set(cfg: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = cfg
    for i, part in enumerate(parts[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {dotted!r}: {'.'.join(parts[: i + 1])!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "recipes":
            out[k] = _merge(out[k], v)
        elif k == "recipes" and isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **copy.deepcopy(dict(v))}
        else:
            out[k] = copy.deepcopy(v)
    return out


def _flat_keys(d: Mapping, prefix: str = "") -> Iterable[str]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in FREE_FORM:
            yield from _flat_keys(v, key + ".")
        else:
            yield key


_ALL_KEYS = sorted(set(_flat_keys(DEFAULTS)) | {k.rsplit(".", 1)[0] for k in _flat_keys(DEFAULTS) if "." in k})


def _check_key(dotted: str, source: str) -> None:
    """Raise ConfigError if ``dotted`` is not a known key (or below a free-form key)."""
    if any(dotted == f or dotted.startswith(f + ".") for f in FREE_FORM):
        return
    if dotted in _ALL_KEYS:
        return
    parts = dotted.split(".")
    for i in range(1, len(parts)):  # report the outermost unknown part ("modle", not "modle.name")
        head = ".".join(parts[:i])
        if head not in _ALL_KEYS:
            dotted = head
            break
    close = difflib.get_close_matches(dotted, _ALL_KEYS, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    section = dotted.split(".")[0]
    known = sorted(k for k in _ALL_KEYS if k.startswith(section + ".")) if section in DEFAULTS else []
    listing = f" (keys of {section!r}: {', '.join(k.split('.', 1)[1] for k in known)})" if known else ""
    raise ConfigError(f"unknown config key {dotted!r} in {source}{hint}{listing}")


def validate_config(cfg: Mapping, source: str = "config") -> None:
    """Check that every key of ``cfg`` is known; raise :class:`ConfigError` naming the first unknown."""
    for key in _flat_keys(cfg):
        _check_key(key, source)
    for key in ("model", "data", "optim", "trainer", "selection", "output"):
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], Mapping):
            raise ConfigError(f"config section {key!r} in {source} must be a mapping, got {cfg[key]!r}")
    recipes = cfg.get("recipes") or {}
    if not isinstance(recipes, Mapping):
        raise ConfigError(f"'recipes' in {source} must map a recipe name to dotted overrides")
    for rname, body in recipes.items():
        if not isinstance(body, Mapping):
            raise ConfigError(f"recipe {rname!r} in {source} must be a mapping of dotted keys to values")
        for k in body:
            if k in ("recipe", "recipes"):
                raise ConfigError(f"recipe {rname!r} in {source} may not set {k!r}")
            _check_key(str(k), f"{source} (recipe {rname!r})")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def packaged_configs() -> list[str]:
    """Names of the configs shipped in ``audet/configs`` (``audet train NAME`` finds them)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """A config file from a path, a path relative to ``relative_to``, or a packaged config name."""
    p = Path(name)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.insert(0, relative_to / p)
    stem = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    candidates.append(CONFIG_DIR / stem)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"config {str(name)!r} not found (neither a file nor one of the packaged configs: {', '.join(packaged_configs())})"
    )


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return data


def _load_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"config {path} includes itself through 'base'")
    raw = _read_yaml(path)
    validate_config(raw, str(path))
    bases = raw.pop("base", None)
    merged: dict = {}
    for b in [bases] if isinstance(bases, (str, os.PathLike)) else (bases or []):
        merged = _merge(merged, _load_file(config_path(b, path.parent), _seen + (path,)))
    return _merge(merged, raw)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "data.root=/x"]`` -> ``{"optim.lr": 0.001, "data.root": "/x"}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out[key] = _yaml_floats(value)  # YAML 1.1 reads "1e-3" as a string
    return out


def apply_overrides(cfg: dict, overrides: Mapping[str, Any], source: str = "override") -> dict:
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        _check_key(key, source)
        if isinstance(value, Mapping) and isinstance(get(cfg, key), dict) and key not in FREE_FORM:
            for sub in _flat_keys(value, key + "."):
                _check_key(sub, source)
        _set(cfg, key, copy.deepcopy(value))
    return cfg


def _yaml_floats(obj: Any) -> Any:
    """YAML 1.1 reads ``4e-3`` (no dot) as a string; convert such strings back into floats."""
    if isinstance(obj, dict):
        return {k: _yaml_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_yaml_floats(v) for v in obj]
    if isinstance(obj, str):
        s = obj.strip().lower()
        if s and s[0] in "+-.0123456789" and "e" in s:
            try:
                return float(s)
            except ValueError:
                return obj
    return obj


def resolve_config(raw: Mapping, overrides: Mapping[str, Any] | None = None, source: str = "config") -> dict:
    """Defaults + ``raw`` + the selected recipe + ``overrides`` -> a validated config dict."""
    overrides = dict(overrides or {})
    validate_config(raw, source)
    cfg = _merge(DEFAULTS, {k: v for k, v in raw.items() if k != "base"})
    recipe = overrides.get("recipe", cfg.get("recipe") or "paper")
    recipes = cfg.get("recipes") or {}
    if recipe not in recipes and recipe != "paper":
        raise ConfigError(
            f"unknown recipe {recipe!r} in {source}; available: {', '.join(['paper', *recipes]) or 'paper'}"
        )
    cfg["recipe"] = recipe
    cfg = apply_overrides(cfg, recipes.get(recipe, {}) or {}, f"{source} (recipe {recipe!r})")
    cfg = apply_overrides(cfg, overrides, "command-line override")
    cfg = _yaml_floats(cfg)
    _check_values(cfg, source)
    return cfg


def load_config(path_or_name: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None) -> dict:
    """Load a config file (or packaged config name), apply its recipe and overrides, validate.

    ``overrides`` may be a mapping ``{"optim.lr": 1e-3}`` or a list of ``"key=value"`` strings.
    """
    path = config_path(path_or_name)
    raw = _load_file(path)
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    cfg = resolve_config(raw, overrides, str(path))
    if not cfg.get("name"):
        cfg["name"] = path.stem
    return cfg


def _check_values(cfg: Mapping, source: str) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{source}: {msg}")

    need(isinstance(get(cfg, "model.name"), str), "model.name must be a registered model name (see `audet models`)")
    need(isinstance(get(cfg, "model.args"), Mapping), "model.args must be a mapping of keyword arguments")
    need(int(get(cfg, "data.batch_size")) >= 1, "data.batch_size must be >= 1")
    vf = get(cfg, "data.val_fraction")
    need(vf is None or 0 <= float(vf) < 1 or (float(vf) >= 1 and float(vf) == int(vf)),
         "data.val_fraction must be in [0, 1) (or a number of subjects)")
    need(float(get(cfg, "optim.lr")) > 0, "optim.lr must be > 0")
    need(get(cfg, "optim.schedule") in ("cosine", "constant"), "optim.schedule must be 'cosine' or 'constant'")
    need(str(get(cfg, "optim.name")).lower() in ("adamw", "adam", "sgd"), "optim.name must be adamw, adam or sgd")
    check_stages(cfg.get("stages"), source)
    need(get(cfg, "selection.mode") in ("max", "min"), "selection.mode must be 'max' or 'min'")
    need(int(get(cfg, "trainer.max_epochs")) >= 1, "trainer.max_epochs must be >= 1")
    need(str(get(cfg, "output.resume")).lower() in ("auto", "true", "false"), "output.resume must be auto, true or false")


def dump_config(cfg: Mapping) -> str:
    """The config as YAML text (what a run directory's ``config.yaml`` holds)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
