"""The registry's names and metadata as a JSON file, so that `audet models` lists them without
importing PyTorch (start-up in well under a second instead of seconds).

``catalog.json`` beside this module is generated from the live registry::

    python -m audet.models.catalog          # rewrite catalog.json after adding or changing a model

and a test checks that it equals the registry (``tests/test_trust.py``), so it cannot go stale
unnoticed. ``audet models -v`` (parameter counts) still builds the models.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CATALOG", "read_catalog", "build_catalog", "write_catalog"]

CATALOG = Path(__file__).with_name("catalog.json")


def read_catalog() -> dict[str, dict]:
    """``{name: info}`` of every registered model, from ``catalog.json`` (no torch import)."""
    return json.loads(CATALOG.read_text())


def build_catalog() -> dict[str, dict]:
    """``{name: info}`` from the live registry (imports every model module)."""
    from audet.models import list_models, model_info

    return {n: json.loads(json.dumps(model_info(n), default=str)) for n in list_models()}


def write_catalog(path: str | Path = CATALOG) -> Path:
    from audet.utils.io import write_text_atomic

    write_text_atomic(path, json.dumps(build_catalog(), indent=1, sort_keys=True) + "\n")
    return Path(path)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(f"wrote {write_catalog()}\n")
