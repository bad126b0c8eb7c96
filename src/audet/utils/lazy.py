"""Lazy package attributes: ``__getattr__ = lazy_exports(__name__, {"Name": "module", ...})``
imports ``<package>.<module>`` the first time ``package.Name`` is read, so that importing the
package stays cheap (used by :mod:`audet.data` and :mod:`audet.engine`)."""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` serving ``exports`` (name -> submodule), cached."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
