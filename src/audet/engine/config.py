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
    "SCHEMA",
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
        "clip": None,  # the model owns its clip; this may add {windows: disjoint} (or repeat the model's)
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
        "schedule": "cosine",  # "cosine" | "constant" | "step"
        "step_epochs": 1.0,  # step schedule: multiply the lr by step_gamma every step_epochs epochs
        "step_gamma": 0.1,
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
        if full["optim"].get("schedule", "cosine") not in ("cosine", "constant", "step"):
            raise ConfigError(f"{source}: stage {name!r}: optim.schedule={full['optim']['schedule']!r}; "
                              f"choose cosine, constant or step")
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


def _load_file(path: Path, _seen: tuple[Path, ...] = (), sources: dict[str, str] | None = None) -> dict:
    """Read ``path`` and its ``base`` files; ``sources`` (if given) receives ``{dotted key: file}``."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"config {path} includes itself through 'base'")
    raw = _read_yaml(path)
    validate_config(raw, str(path))
    bases = raw.pop("base", None)
    merged: dict = {}
    for b in [bases] if isinstance(bases, (str, os.PathLike)) else (bases or []):
        merged = _merge(merged, _load_file(config_path(b, path.parent), _seen + (path,), sources))
    if sources is not None:
        _record(sources, raw, str(path))
    return _merge(merged, raw)


def _record(sources: dict[str, str], values: Mapping, where: str, prefix: str = "") -> None:
    """Remember ``where`` as the source of every (dotted) key of ``values``."""
    for key in _flat_keys(values, prefix):
        sources[key] = where


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


def apply_overrides(cfg: dict, overrides: Mapping[str, Any], source: str = "override",
                    sources: dict[str, str] | None = None) -> dict:
    """``cfg`` with dotted ``overrides`` set; ``sources`` (if given) records ``source`` for each key."""
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        _check_key(key, source)
        if isinstance(value, Mapping) and isinstance(get(cfg, key), dict) and key not in FREE_FORM:
            for sub in _flat_keys(value, key + "."):
                _check_key(sub, source)
            if sources is not None:
                _record(sources, value, source, key + ".")
        if sources is not None:
            sources[key] = source
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


def resolve_config(raw: Mapping, overrides: Mapping[str, Any] | None = None, source: str = "config",
                   sources: Mapping[str, str] | None = None) -> dict:
    """Defaults + ``raw`` + the selected recipe + ``overrides`` -> a validated config dict.

    Every value is checked against its declared type and range (:data:`SCHEMA`); an error names
    the key and where its value came from. ``sources`` maps dotted keys of ``raw`` to the file
    that set them (default: ``source`` for all of them).
    """
    overrides = dict(overrides or {})
    validate_config(raw, source)
    src: dict[str, str] = {}
    _record(src, {k: v for k, v in raw.items() if k != "base"}, source)
    src.update(sources or {})
    cfg = _merge(DEFAULTS, {k: v for k, v in raw.items() if k != "base"})
    recipe = overrides.get("recipe", cfg.get("recipe") or "paper")
    recipes = cfg.get("recipes") or {}
    if recipe not in recipes and recipe != "paper":
        raise ConfigError(
            f"unknown recipe {recipe!r} in {source}; available: {', '.join(['paper', *recipes]) or 'paper'}"
        )
    cfg["recipe"] = recipe
    cfg = apply_overrides(cfg, recipes.get(recipe, {}) or {}, f"{source} (recipe {recipe!r})", src)
    cfg = apply_overrides(cfg, overrides, "command-line override", src)
    cfg = _yaml_floats(cfg)
    _check_values(cfg, source, src)
    return cfg


def load_config(path_or_name: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None) -> dict:
    """Load a config file (or packaged config name), apply its recipe and overrides, validate.

    ``overrides`` may be a mapping ``{"optim.lr": 1e-3}`` or a list of ``"key=value"`` strings.
    """
    path = config_path(path_or_name)
    sources: dict[str, str] = {}
    raw = _load_file(path, sources=sources)
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    cfg = resolve_config(raw, overrides, str(path), sources)
    if not cfg.get("name"):
        cfg["name"] = path.stem
    return cfg


# --------------------------------------------------------------------------------------------
# values: declared types and ranges, checked for the whole config before any work starts
# --------------------------------------------------------------------------------------------
class _Bad(Exception):
    """A value does not fit its declared type or range (message: what it must be)."""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _interval(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi:g}"
    return ""


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return not (hi is not None and (v >= hi if hi_open else v > hi))


def _int(lo=None, hi=None, none=False):
    what = f"a whole number{_interval(lo, hi)}" + (" or null" if none else "")

    def check(v):
        if v is None and none:
            return None
        if _is_num(v) and float(v).is_integer() and _in_range(int(v), lo, hi, False, False):
            return int(v)
        raise _Bad(what)

    return check


def _num(lo=None, hi=None, lo_open=False, hi_open=False, none=False):
    what = f"a number{_interval(lo, hi, lo_open, hi_open)}" + (" or null" if none else "")

    def check(v):
        if v is None and none:
            return None
        if _is_num(v) and v == v and _in_range(float(v), lo, hi, lo_open, hi_open):
            return v
        raise _Bad(what)

    return check


def _bool(none=False):
    def check(v):
        if isinstance(v, bool) or (v is None and none):
            return v
        raise _Bad("true or false" + (" or null" if none else ""))

    return check


def _text(none=True):
    def check(v):
        if v is None and none:
            return None
        if isinstance(v, (str, os.PathLike)) and str(v).strip():
            return v
        raise _Bad("a non-empty text" + (" or null" if none else ""))

    return check


def _choice(*options):
    def check(v):
        for o in options:
            if v == o and type(v) is type(o):  # noqa: E721 (True must not match 1)
                return v
        if isinstance(v, str) and v.lower() in [str(o).lower() for o in options if isinstance(o, str)]:
            return v.lower()
        raise _Bad("one of " + ", ".join(str(o) for o in options))

    return check


def _either(*checks, what: str):
    def check(v):
        for c in checks:
            try:
                return c(v)
            except _Bad:
                pass
        raise _Bad(what)

    return check


def _mapping(none=False):
    def check(v):
        if isinstance(v, Mapping) or (v is None and none):
            return v
        raise _Bad("a mapping (key: value)" + (" or null" if none else ""))

    return check


def _str_list(v):
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return list(v)
    raise _Bad("a list of texts, e.g. [pos_embed, cls_token]")


def _betas(v):
    if (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v)):
        return [float(b) for b in v]
    raise _Bad("a list of two numbers in [0, 1), e.g. [0.9, 0.999]")


def _aus(v):
    """``null``, a list of AU numbers, a comma list ``1,2,4`` or a dataset name (``BP4D``):
    :func:`audet.facs.parse_aus`, the one AU-spec parser."""
    from audet.facs import parse_aus

    try:
        return parse_aus(v)
    except ValueError as exc:
        raise _Bad(f"null, a list of AU numbers like [1, 2, 4], or a dataset name like BP4D ({exc})") from None


_PRECISIONS = ("auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
               "64-true", "64", 32, 16, 64)
_LIMIT = _either(_int(lo=0), _num(lo=0, hi=1), _choice(None),
                 what="null, a number of batches (whole number >= 0) or a fraction in [0, 1]")

#: Declared type and range of every key of :data:`DEFAULTS` (free-form keys: only their kind).
SCHEMA: dict[str, Any] = {
    "name": _text(), "seed": _int(0, 2**32 - 1, none=True), "recipe": _text(none=False),
    "model.name": _text(none=False), "model.args": _mapping(), "model.init_from": _text(),
    "model.init_strict_trunk": _bool(),
    "data.dataset": _text(), "data.root": _text(), "data.fold": _int(lo=0, none=True),
    "data.train_prefix": _text(), "data.test_prefix": _text(), "data.test_root": _text(), "data.aus": _aus,
    "data.batch_size": _int(lo=1), "data.num_workers": _int(lo=0),
    "data.val_fraction": _either(_num(lo=0, hi=1, hi_open=True), _int(lo=1), _choice(None),
                                 what="a fraction in [0, 1) or a whole number of subjects"),
    "data.clip": _mapping(none=True), "data.eval_batch_size": _int(lo=1, none=True),
    "optim.lr": _num(lo=0, lo_open=True), "optim.scale_lr": _bool(), "optim.weight_decay": _num(lo=0),
    "optim.betas": _betas, "optim.eps": _num(lo=0, lo_open=True), "optim.warmup_epochs": _num(lo=0),
    "optim.warmup_start_factor": _num(0, 1), "optim.min_lr": _num(lo=0),
    "optim.schedule": _choice("cosine", "constant", "step"), "optim.name": _choice("adamw", "adam", "sgd"),
    "optim.step_epochs": _num(lo=0, lo_open=True), "optim.step_gamma": _num(lo=0, lo_open=True),
    "optim.momentum": _num(0, 1, hi_open=True), "optim.nesterov": _bool(), "optim.no_decay_keywords": _str_list,
    "trainer.max_epochs": _int(lo=1), "trainer.gradient_clip_val": _num(lo=0, none=True),
    "trainer.gradient_clip_algorithm": _choice("norm", "value"), "trainer.precision": _choice(*_PRECISIONS),
    "trainer.accelerator": _text(none=False),
    "trainer.num_nodes": _int(lo=1), "trainer.strategy": _text(none=False),
    "trainer.find_unused_parameters": _bool(), "trainer.deterministic": _bool(),
    "trainer.log_every_n_steps": _int(lo=1), "trainer.limit_train_batches": _LIMIT,
    "trainer.limit_val_batches": _LIMIT, "trainer.limit_test_batches": _LIMIT,
    "trainer.accumulate_grad_batches": _int(lo=1), "trainer.check_val_every_n_epoch": _int(lo=1),
    "trainer.progress_bar": _choice("auto", True, False), "trainer.tensorboard": _bool(),
    "trainer.num_sanity_val_steps": _int(lo=-1),
    "selection.monitor": _text(none=False), "selection.mode": _choice("max", "min"),
    "selection.on_test": _bool(), "selection.test_after_fit": _bool(),
    "output.dir": _text(), "output.resume": _choice("auto", True, False, "true", "false"),
}


def _stages(v):  # the shape only; check_stages validates each stage and names the problem
    if v is None or (isinstance(v, list) and v):
        return v
    raise _Bad("null or a non-empty list of stages (name, epochs, optim, ...; docs/training.md)")


SCHEMA["stages"] = _stages


def _device_list(v):  # trainer.devices may be a list of ids, e.g. [0, 1]
    if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        return list(v)
    raise _Bad("a list of device ids")


SCHEMA["trainer.devices"] = _either(_int(lo=1), _choice("auto"), _device_list, _text(none=False),
                                    what="a number of devices >= 1, 'auto' or a list of device ids like [0, 1]")


def _source_of(sources: Mapping[str, str], key: str, default: str) -> str:
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        k = ".".join(parts[:i])
        if k in sources:
            return sources[k]
    return default


def _example(key: str, check) -> str:
    default = get(DEFAULTS, key)
    try:
        if default is not None and check(default) is not None:
            return f" (e.g. {key}={_plain_text(default)})"
    except _Bad:
        pass
    return ""


def _plain_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_plain_text(x) for x in v) + "]"
    return str(v)


def _check_values(cfg: dict, source: str, sources: Mapping[str, str] | None = None) -> None:
    """Check every declared key's type and range (normalising e.g. ``2.0`` -> ``2``, ``"1,2"`` -> [1, 2]).

    Raises :class:`ConfigError` naming the key, its value and where the value came from (a config
    file, a recipe, a command-line override or the defaults).
    """
    sources = sources or {}
    for key, check in SCHEMA.items():
        section, _, leaf = key.rpartition(".")
        holder = get(cfg, section) if section else cfg
        if not isinstance(holder, dict) or leaf not in holder:
            continue
        value = holder[leaf]
        try:
            holder[leaf] = check(value)
        except _Bad as bad:
            where = _source_of(sources, key, "the defaults")
            fix = ("fix the override" if "command-line" in where else f"edit it there or override it with {key}=VALUE")
            raise ConfigError(
                f"{key}={_plain_text(value)!s} (from {where}) must be {bad}{_example(key, check)}; {fix}"
            ) from None
    check_stages(cfg.get("stages"), _source_of(sources, "stages", source))


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
