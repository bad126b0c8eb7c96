"""Console output of library loggers for the ``audet`` commands.

Library code logs to ``logging.getLogger(__name__)`` (never ``print``); a command that wants the
user to see progress and notes wraps its work in :func:`console_logging`.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

__all__ = ["console_logging"]


class _StdoutHandler(logging.StreamHandler):
    """A handler writing to the *current* ``sys.stdout`` (pytest's capture replaces it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it; the current stdout wins
        pass


@contextlib.contextmanager
def console_logging(name: str = "audet", level: int = logging.INFO) -> Iterator[logging.Handler]:
    """Show records of logger ``name`` (and its children) at ``level`` or above on stdout, as bare
    messages, while the block runs; the handler is removed afterwards."""
    logger = logging.getLogger(name)
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
