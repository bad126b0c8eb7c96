"""Loading training configs: YAML files, ``base`` files, named recipes and dotted overrides.

A config is a nested dict with the sections ``model``, ``data``, ``optim``, ``trainer``,
``selection`` and ``output`` plus ``stages`` and a few top-level keys (``seed``, ``recipe``,
``recipes``, ``base``, ``name``). The keys, their defaults and their checks are declared once, in
:mod:`audet.engine.schema`; anything else is an error that names the key (``model.args`` is
free-form: it holds the model factory's keyword arguments and is checked against the factory's
signature when the model is built). The engine reads a resolved config as typed sections
(:class:`audet.engine.schema.Config`, ``Config.from_dict(load_config(...))``).

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

from audet.engine.schema import DEFAULTS, FREE_FORM, SCHEMA, STAGE_KEYS, Config, ConfigError, as_config, check_stages

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
    "Config",
    "as_config",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


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

    Every value is checked against its declared type and range (the schema,
    :mod:`audet.engine.schema`; stage optimiser values included); an error names the key and where
    its value came from. The engine reads the result through ``Config.from_dict`` (typed sections). ``sources`` maps dotted keys of ``raw`` to the file
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
    return Config.from_dict(cfg, source, src).to_dict()


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
