"""The package version, in a module of its own so that any module can import it without importing
``audet`` (and its lazy entry points). pyproject.toml reads it from here."""

__version__ = "0.1.0"
