"""One model registry for every method and ablation variant.

``register_model`` decorates a factory ``fn(num_aus=..., aus=..., data=None, **cfg) -> AUModel``;
the factory's name (or the ``name=`` given) is the registry key.
``create_model(name, num_aus=A, aus=[...], data=DataInfo|None, **cfg)`` builds one (``data``: what
the training data says, :class:`audet.models.base.DataInfo`), ``list_models(pattern)`` lists the
names.
"""
from __future__ import annotations

import fnmatch
from typing import Callable

_REGISTRY: dict[str, Callable] = {}
_INFO: dict[str, dict] = {}


def register_model(fn: Callable | None = None, *, name: str | None = None, **info):
    """Register a model factory. ``info`` holds metadata (paper, table, default input size)."""

    def deco(f: Callable) -> Callable:
        key = name or f.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = f
        _INFO[key] = dict(info)
        return f

    return deco(fn) if fn is not None else deco


def variant_factory(cls: Callable, defaults: dict) -> Callable:
    """A factory for one ablation variant: ``cls(num_aus=..., **{**defaults, **cfg})``.

    ``num_aus`` defaults to the length of ``aus`` when given, else to the data's AU count
    (``data=DataInfo``), else 12 (BP4D), so ``create_model(name, aus=[...])`` works without
    repeating the count.
    """

    def make(num_aus: int | None = None, **cfg):
        if num_aus is None:
            aus, data = cfg.get("aus"), cfg.get("data")
            num_aus = len(aus) if aus is not None else (data.num_aus if data is not None else 12)
        return cls(num_aus=num_aus, **{**defaults, **cfg})

    make.__doc__ = f"{getattr(cls, '__name__', cls)} with {defaults}"
    return make


def list_models(pattern: str = "*") -> list[str]:
    return sorted(k for k in _REGISTRY if fnmatch.fnmatch(k, pattern))


def model_info(name: str) -> dict:
    if name not in _REGISTRY:
        raise KeyError(_unknown(name))
    return dict(_INFO[name])


def _unknown(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}{hint} (see `audet models` or audet.models.list_models())"


def _accepts(fn: Callable, arg: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def create_model(name: str, num_aus: int | None = None, *, data=None, **cfg):
    """Build a registered model. ``aus`` (AU numbers) may be given instead of ``num_aus``.

    ``data`` (a :class:`audet.models.base.DataInfo` or its dict) is what the training data says;
    it is passed to the factory when given (a model that needs it raises a clear error without it).
    """
    if name not in _REGISTRY:
        raise KeyError(_unknown(name))
    if num_aus is not None:
        cfg["num_aus"] = num_aus
    fn = _REGISTRY[name]
    if data is not None:
        from audet.models.base import DataInfo

        if not isinstance(data, DataInfo):
            data = DataInfo.from_dict(data)
        if _accepts(fn, "data"):
            cfg["data"] = data
    model = fn(**cfg)
    model.model_name = name
    if data is not None and getattr(model, "data_info", None) is None:
        model.data_info = data
    return model
