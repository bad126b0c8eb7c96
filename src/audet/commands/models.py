"""``audet models [PATTERN]``: list the registered models."""
from __future__ import annotations

import argparse

HELP = "list the registered models (names usable as model.name)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'ac2d*'")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each model's metadata")


def _counted_params(name: str, num_aus: int = 12) -> str:
    """Parameters of the model as built (not a number copied into its registry entry)."""
    from audet.models import create_model

    try:
        model = create_model(name, num_aus=num_aus)
    except Exception as exc:  # noqa: BLE001 (a model that needs data to be built still gets listed)
        return f"not counted ({' '.join(str(exc).split())[:80]})"
    return f"{sum(p.numel() for p in model.parameters()):,} with {num_aus} AUs (counted from the built model)"


def _catalog() -> dict | None:
    """The registry's names and metadata from audet/models/catalog.json, read WITHOUT importing
    audet.models (and so torch); None when the file is absent (then the registry is imported)."""
    import json
    from pathlib import Path

    import audet

    try:
        return json.loads((Path(audet.__file__).parent / "models" / "catalog.json").read_text())
    except (OSError, ValueError):
        return None


def run(args) -> int:
    import fnmatch

    from audet.commands._common import UsageError

    cat = None if args.verbose else _catalog()
    if cat is not None:
        names = sorted(n for n in cat if fnmatch.fnmatch(n, args.pattern))
        model_info = cat.__getitem__
    else:
        from audet.models import list_models, model_info

        names = list_models(args.pattern)
    if not names:
        raise UsageError(f"no registered model matches {args.pattern!r}; `audet models` lists them all")
    width = max(len(n) for n in names)
    for n in names:
        info = model_info(n)
        desc = info.get("variant") or info.get("description") or ""
        paper = info.get("paper", "")
        if isinstance(paper, str) and len(paper) > 40:
            paper = paper[:37] + "..."
        print(f"{n:<{width}}  {desc}" + (f"  [{paper}]" if paper else ""))
        if args.verbose:
            print(f"{'':<{width}}    parameters: {_counted_params(n)}")
            for k, v in sorted(info.items()):
                if k not in ("variant", "description", "params"):  # params: the published model's, not each variant's
                    print(f"{'':<{width}}    {k}: {v}")
    return 0
