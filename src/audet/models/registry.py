"""One model registry for every method and ablation variant.

``register_model`` decorates a factory ``fn(aus, data=None, **args) -> AUModel``; the factory's
name (or the ``name=`` given) is the registry key. ``create_model(name, aus=[...],
data=DataInfo|None, **args)`` builds one:

1. the AU list is resolved ONCE (:func:`model_aus`): ``aus`` when given, else the data's
   (``data=DataInfo``), else :func:`audet.facs.default_aus` (BP4D's 12, or the first ``num_aus``
   of them when only a count is given);
2. the arguments are bound to the factory's signature (an unknown one is a ``TypeError`` naming the
   signature), the factory is called, and its bound arguments, defaults included, become
   ``model.config`` (as timm records a model's build arguments): what a checkpoint records and
   :func:`audet.models.checkpoint.load_checkpoint` rebuilds the model from. No model writes its
   ``config`` by hand.

``list_models(pattern)`` lists the names, ``model_info(name)`` the metadata given at
registration, ``model_signature(name)`` the factory's arguments.
"""
from __future__ import annotations

import fnmatch
import inspect
from typing import Any, Callable, Sequence

from audet.facs import default_aus
from audet.utils.io import to_jsonable

__all__ = ["register_model", "variant_factory", "create_model", "list_models", "model_info", "model_signature",
           "model_aus", "factory_config"]

_REGISTRY: dict[str, Callable] = {}
_INFO: dict[str, dict] = {}

#: arguments create_model resolves itself; never part of a model's recorded config
_RESOLVED = ("aus", "num_aus", "data")


def register_model(fn: Callable | None = None, *, name: str | None = None, **info):
    """Register a model factory. ``info`` holds metadata (paper, table, default input size, ``small_config``)."""

    def deco(f: Callable) -> Callable:
        key = name or f.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        try:
            params = inspect.signature(f).parameters
        except (TypeError, ValueError):
            params = {}
        if "num_aus" in params or (params and "aus" not in params
                                   and not any(p.kind is p.VAR_KEYWORD for p in params.values())):
            raise TypeError(f"model factory {key!r} must take the AU list `aus` (create_model resolves it, "
                            f"num_aus is derived from it); it takes {inspect.signature(f)}")
        _REGISTRY[key] = f
        _INFO[key] = dict(info)
        return f

    return deco(fn) if fn is not None else deco


def variant_factory(cls: Callable, defaults: dict) -> Callable:
    """A factory for one ablation variant: ``cls(aus, **{**defaults, **args})``, whose signature is
    ``cls``'s with ``defaults`` as the defaults (so the recorded config names every argument)."""
    sig = inspect.signature(cls)
    params = sig.parameters
    unknown = sorted(set(defaults) - set(params))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"{cls.__name__} has no argument(s) {unknown} (variant defaults {defaults})")

    def make(**args):
        return cls(**{**defaults, **args})

    make.__signature__ = sig.replace(parameters=[p.replace(default=defaults[n]) if n in defaults else p
                                                 for n, p in params.items()])
    make.__doc__ = f"{getattr(cls, '__name__', cls)} with {defaults}"
    return make


def list_models(pattern: str = "*") -> list[str]:
    return sorted(k for k in _REGISTRY if fnmatch.fnmatch(k, pattern))


def model_info(name: str) -> dict:
    if name not in _REGISTRY:
        raise KeyError(_unknown(name))
    return dict(_INFO[name])


def model_signature(name: str) -> inspect.Signature | None:
    """The arguments of model ``name``'s factory (None when Python cannot tell them)."""
    if name not in _REGISTRY:
        raise KeyError(_unknown(name))
    try:
        return inspect.signature(_REGISTRY[name])
    except (TypeError, ValueError):
        return None


def _unknown(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}{hint} (see `audet models` or audet.models.list_models())"


def model_aus(aus: Sequence[int] | None = None, num_aus: int | None = None, data=None) -> list[int]:
    """THE AU list of a model being built: ``aus``; else the data's (``data.aus``); else
    :func:`audet.facs.default_aus` (``num_aus`` of BP4D's AUs, all 12 when no count is given).
    A count that disagrees with the list raises ValueError."""
    if aus is not None:
        out = [int(a) for a in aus]
        given = "aus"
    elif data is not None and getattr(data, "aus", None):
        out = [int(a) for a in data.aus]
        given = "the data's AUs"
    else:
        return default_aus(num_aus)
    if num_aus is not None and int(num_aus) != len(out):
        raise ValueError(f"num_aus={num_aus} but {given} list {len(out)} AUs: {out}")
    return out


def factory_config(fn: Callable, args: dict) -> dict[str, Any]:
    """The bound arguments of ``fn(**args)``, defaults included (``**kwargs`` flattened), without the
    ones :func:`create_model` resolves (``aus``, ``num_aus``, ``data``): a model's config."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {k: v for k, v in args.items() if k not in _RESOLVED}
    bound = sig.bind(**args)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for pname, value in bound.arguments.items():
        kind = sig.parameters[pname].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[pname] = value
    return {k: v for k, v in out.items() if k not in _RESOLVED}


def create_model(name: str, num_aus: int | None = None, *, aus: Sequence[int] | None = None, data=None, **args):
    """Build a registered model (see the module docstring).

    ``data`` (a :class:`audet.models.base.DataInfo` or its dict) is what the training data says;
    it is passed to the factory when it takes it (a model that needs it raises a clear error
    without it). ``num_aus`` is a shorthand for BP4D's first ``num_aus`` AUs when no AU list is
    given.
    """
    from audet.models.base import DataInfo

    if name not in _REGISTRY:
        raise KeyError(_unknown(name))
    fn = _REGISTRY[name]
    if data is not None and not isinstance(data, DataInfo):
        data = DataInfo.from_dict(data)
    kwargs = {"aus": model_aus(aus, num_aus, data), **args}
    if data is not None and _accepts(fn, "data"):
        kwargs["data"] = data
    try:
        config = factory_config(fn, kwargs)
    except TypeError as exc:
        sig = model_signature(name)
        raise TypeError(f"model {name!r}: {exc}" + (f"; it accepts {sig}" if sig is not None else "")) from None
    model = fn(**kwargs)
    model.model_name = name
    model.config = to_jsonable(config)  # JSON values: what a checkpoint records, read back the same
    if data is not None and getattr(model, "data_info", None) is None:
        model.data_info = data
    return model


def _accepts(fn: Callable, arg: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
