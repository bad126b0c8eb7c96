"""Value checks of the config schema: each ``check(value)`` returns the (normalised) value or raises
:class:`Bad` with what the value must be (the caller adds the key and where the value came from).

Used by :mod:`audet.engine.schema` (one check per key); nothing here knows a key name.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

__all__ = ["Bad", "Check", "integer", "number", "boolean", "text", "choice", "either", "mapping", "text_list",
           "betas", "aus", "plain_text"]

Check = Callable[[Any], Any]


class Bad(Exception):
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


def _kind(test, what: str, none: bool, convert=None) -> Check:
    """A value passing ``test`` (or None when ``none``), returned as it is or ``convert``-ed."""

    def check(v):
        if v is None and none:
            return None
        if v is not None and test(v):
            return convert(v) if convert else v
        raise Bad(what + (" or null" if none else ""))

    return check


def integer(lo=None, hi=None, none=False) -> Check:
    """A whole number (``2.0`` is normalised to ``2``) in ``[lo, hi]``."""
    return _kind(lambda v: _is_num(v) and float(v).is_integer() and _in_range(int(v), lo, hi, False, False),
                 f"a whole number{_interval(lo, hi)}", none, int)


def number(lo=None, hi=None, lo_open=False, hi_open=False, none=False) -> Check:
    return _kind(lambda v: _is_num(v) and v == v and _in_range(float(v), lo, hi, lo_open, hi_open),
                 f"a number{_interval(lo, hi, lo_open, hi_open)}", none)


def boolean(none=False) -> Check:
    return _kind(lambda v: isinstance(v, bool), "true or false", none)


def text(none=True) -> Check:
    return _kind(lambda v: isinstance(v, (str, os.PathLike)) and bool(str(v).strip()), "a non-empty text", none)


def choice(*options) -> Check:
    def check(v):
        for o in options:
            if v == o and type(v) is type(o):  # True must not match 1
                return v
        if isinstance(v, str) and v.lower() in [str(o).lower() for o in options if isinstance(o, str)]:
            return v.lower()
        raise Bad("one of " + ", ".join(str(o) for o in options))

    return check


def either(*checks: Check, what: str) -> Check:
    def check(v):
        for c in checks:
            try:
                return c(v)
            except Bad:
                pass
        raise Bad(what)

    return check


def mapping(none=False) -> Check:
    return _kind(lambda v: isinstance(v, Mapping), "a mapping (key: value)", none)


def text_list(example: str = "[pos_embed, cls_token]", none=False) -> Check:
    def check(v):
        if v is None and none:
            return None
        if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            return list(v)
        raise Bad(f"a list of texts, e.g. {example}" + (" or null" if none else ""))

    return check


def betas(v):
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v):
        return [float(b) for b in v]
    raise Bad("a list of two numbers in [0, 1), e.g. [0.9, 0.999]")


def device_list(v):
    """``trainer.devices`` may be a list of ids, e.g. ``[0, 1]``."""
    if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        return list(v)
    raise Bad("a list of device ids")


def aus(v):
    """``null``, a list of AU numbers, a comma list ``1,2,4`` or a dataset name (``BP4D``):
    :func:`audet.facs.parse_aus`, the one AU-spec parser."""
    from audet.facs import parse_aus

    try:
        return parse_aus(v)
    except ValueError as exc:
        raise Bad(f"null, a list of AU numbers like [1, 2, 4], or a dataset name like BP4D ({exc})") from None


def plain_text(v: Any) -> str:
    """A value as the user would write it (``true``, ``[1, 2]``)."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(plain_text(x) for x in v) + "]"
    return str(v)
