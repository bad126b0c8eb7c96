"""Converters from the authors' original checkpoints to audet models.

``CONVERTERS[name](src, aus=..., **options) -> model`` (eval mode, with ``conversion_report``);
write it with :func:`audet.models.convert.ac2d.save_converted` (:mod:`audet.models.checkpoint`). The CLI is ``audet convert NAME SRC --out DST``.
"""
from __future__ import annotations


def _ac2d(src, aus=None, **kw):
    from audet.models.convert.ac2d import convert_ac2d

    return convert_ac2d(src, aus, **kw)


def _cisnet(src, aus=None, *, confounder_scale=None, prototype=None, **kw):
    # confounder_scale / prototype are AC2D options the CLI passes to every converter
    from audet.models.convert.cisnet import convert_cisnet

    return convert_cisnet(src, aus, **kw)


#: converter name -> function(src, aus=None, **options) -> model
CONVERTERS = {"ac2d": _ac2d, "cisnet": _cisnet}

__all__ = ["CONVERTERS"]
